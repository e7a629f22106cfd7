//! Recoverable channels: the recovery table (empty history, in range,
//! trimmed, future, epoch change), publishes racing the replay, 100
//! reconnect cycles under continuous publishing with nothing lost or
//! duplicated, and coord's Redis subscription dropped or Redis restarted
//! mid-stream.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use coord::pb::{PublishRequest, subscribe_response::Event};
use support::{
    redis::RedisServer,
    serving_with,
    subscriber::{Sub, channel, config, publish},
};

#[tokio::test]
async fn the_recovery_table() {
    let redis = RedisServer::start();
    let mut cfg = config(&redis.url());
    cfg.pubsub.history_size = 10;
    let coord = serving_with(cfg).await;
    let mut c = coord.pubsub();

    // Empty history, from the very start: nothing was missed.
    let mut empty = Sub::open(&mut c, vec![channel("r.empty", Some((0, "")))], vec![]).await;
    let r = empty.recovery().await;
    assert!(r.recovered, "{r:?}");

    // In range: exactly the missed messages, in order, then live ones.
    let mut epoch = String::new();
    for i in 1..=10 {
        epoch = publish(&mut c, "r.t", &format!("m{i}")).await.epoch;
    }
    let mut sub = Sub::open(&mut c, vec![channel("r.t", Some((3, &epoch)))], vec![]).await;
    let r = sub.recovery().await;
    assert!(r.recovered && r.reason.is_empty(), "{r:?}");
    for i in 4..=10 {
        let m = sub.message().await;
        assert_eq!((m.offset, &m.payload[..]), (i, format!("m{i}").as_bytes()));
    }
    publish(&mut c, "r.t", "m11").await;
    assert_eq!(sub.message().await.offset, 11, "then live, no duplicate");

    // Same position as the top: recovered, nothing to replay.
    let mut top = Sub::open(&mut c, vec![channel("r.t", Some((11, &epoch)))], vec![]).await;
    assert!(top.recovery().await.recovered);
    publish(&mut c, "r.t", "m12").await;
    assert_eq!(top.message().await.offset, 12);

    // A position in the future, another epoch: not recoverable; the stream
    // continues from the top.
    let mut future = Sub::open(&mut c, vec![channel("r.t", Some((99, &epoch)))], vec![]).await;
    let r = future.recovery().await;
    assert!(!r.recovered && r.reason.contains("future"), "{r:?}");
    assert_eq!(r.position.as_ref().map(|p| p.offset), Some(12));
    // However far in the future, up to the largest offset there is (these
    // once reached Redis as invalid stream ids: INTERNAL).
    for far in [99_999_999_999_999, 99_999_999_999_999_897, u64::MAX - 1, u64::MAX] {
        let mut future = Sub::open(&mut c, vec![channel("r.t", Some((far, &epoch)))], vec![]).await;
        let r = future.recovery().await;
        assert!(!r.recovered && r.reason.contains("future"), "{far}: {r:?}");
    }
    let mut other = Sub::open(&mut c, vec![channel("r.t", Some((5, "not-the-epoch")))], vec![]).await;
    let r = other.recovery().await;
    assert!(!r.recovered && r.reason.contains("epoch"), "{r:?}");

    // Trimmed: history keeps about 10 (Redis trims whole stream nodes).
    for i in 13..=1000 {
        publish(&mut c, "r.t", &format!("m{i}")).await;
    }
    let mut trimmed = Sub::open(&mut c, vec![channel("r.t", Some((2, &epoch)))], vec![]).await;
    let r = trimmed.recovery().await;
    assert!(!r.recovered && r.reason.contains("trimmed"), "{r:?}");
    publish(&mut c, "r.t", "m1001").await;
    assert_eq!(trimmed.message().await.offset, 1001, "continues live from the top");

    // The history is lost (evicted, expired): a new epoch, never paired with
    // the old offsets.
    redis.cli(&["DEL", "coord:default:ps:{r.t}:meta", "coord:default:ps:{r.t}:hist"]);
    let fresh = publish(&mut c, "r.t", "new").await;
    assert_ne!(fresh.epoch, epoch);
    assert_eq!(fresh.offset, 1);
    let m = trimmed.event(Duration::from_secs(10)).await.unwrap();
    let Event::Recovery(r) = m else { panic!("{m:?}") };
    assert!(!r.recovered && r.reason.contains("epoch"), "a live subscriber sees the epoch change: {r:?}");
    // ...and gets the new epoch from its start, not from its end.
    assert_eq!(r.position.as_ref().map(|p| (p.offset, p.epoch.as_str())), Some((0, fresh.epoch.as_str())), "{r:?}");
    let m = trimmed.message().await;
    assert_eq!((m.offset, &m.payload[..], m.epoch.as_str()), (1, &b"new"[..], fresh.epoch.as_str()));
    let mut late = Sub::open(&mut c, vec![channel("r.t", Some((1000, &epoch)))], vec![]).await;
    assert!(!late.recovery().await.recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_racing_the_replay_leave_no_gap_and_no_duplicate() {
    let redis = RedisServer::start();
    let coord = serving_with(config(&redis.url())).await;
    let mut c = coord.pubsub();
    let epoch = publish(&mut c, "r.race", "1").await.epoch;
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(1));
    let publisher = {
        let (mut c, stop, published) = (coord.pubsub(), stop.clone(), published.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = publish(&mut c, "r.race", "x").await;
                published.store(r.offset, Ordering::Relaxed);
            }
        })
    };
    // Subscribers join at random points of the stream, each from a
    // position behind the top, while publishes keep landing.
    for round in 0..20u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let since = published.load(Ordering::Relaxed).saturating_sub(round % 7);
        let mut sub = Sub::open(&mut c, vec![channel("r.race", Some((since, &epoch)))], vec![]).await;
        assert!(sub.recovery().await.recovered);
        for expected in since + 1..since + 50 {
            let m = sub.message().await;
            assert_eq!(m.offset, expected, "round {round}: contiguous from {since}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reconnect_cycles_under_continuous_publishing_lose_and_duplicate_nothing() {
    let redis = RedisServer::start();
    let coord = serving_with(config(&redis.url())).await;
    let mut c = coord.pubsub();
    let epoch = publish(&mut c, "r.cycles", "0").await.epoch;
    let stop = Arc::new(AtomicBool::new(false));
    let last_published = Arc::new(AtomicU64::new(1));
    let publisher = {
        let (mut c, stop, last) = (coord.pubsub(), stop.clone(), last_published.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = publish(&mut c, "r.cycles", "x").await;
                last.store(r.offset, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        })
    };
    let mut position = 1; // offset 1 was read above, as "0"
    let mut seen = 0u64;
    for cycle in 0..100u64 {
        let mut sub = Sub::open(&mut c, vec![channel("r.cycles", Some((position, &epoch)))], vec![]).await;
        let r = sub.recovery().await;
        assert!(r.recovered, "cycle {cycle}: {r:?}");
        for _ in 0..(cycle % 13 + 1) {
            let m = sub.message().await;
            assert_eq!(m.offset, position + 1, "cycle {cycle}: no gap, no duplicate");
            position = m.offset;
            seen += 1;
        }
        drop(sub); // the client goes away mid-stream
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    // Catch up with everything published: exactly once each.
    let last = last_published.load(Ordering::Relaxed);
    let mut sub = Sub::open(&mut c, vec![channel("r.cycles", Some((position, &epoch)))], vec![]).await;
    assert!(sub.recovery().await.recovered);
    while position < last {
        let m = sub.message().await;
        assert_eq!(m.offset, position + 1);
        position = m.offset;
        seen += 1;
    }
    assert_eq!(seen, last - 1, "every message after the first exactly once");
    assert!(last > 300, "publishing ran throughout ({last} messages)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_redis_subscription_is_restored_and_recoverable_channels_replay_the_gap() {
    let redis = RedisServer::start();
    let coord = serving_with(config(&redis.url())).await;
    let mut c = coord.pubsub();
    let mut sub = Sub::open(&mut c, vec![channel("r.live", None), channel("eph", None)], vec![]).await;
    publish(&mut c, "r.live", "before").await;
    assert_eq!(sub.message().await.offset, 1);

    // Redis drops coord's pub/sub connection; publishes continue meanwhile.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for i in 2..=20 {
        publish(&mut c, "r.live", &i.to_string()).await;
    }
    let mut offsets = Vec::new();
    let mut recoveries = Vec::new();
    let mut after = false;
    loop {
        match sub.event(Duration::from_secs(10)).await.unwrap() {
            Event::Message(m) if m.channel == "eph" => {
                assert_eq!(m.payload, b"after".to_vec(), "ephemeral channels resume too");
                break;
            }
            Event::Message(m) => offsets.push(m.offset),
            Event::Recovery(r) => recoveries.push(r),
            other => panic!("{other:?}"),
        }
        if offsets.last() == Some(&20) && !after {
            publish(&mut c, "eph", "after").await;
            after = true;
        }
    }
    assert_eq!(offsets, (2..=20).collect::<Vec<_>>(), "the gap replayed once, in order");
    // Both channels report the reconnect; the recoverable one recovered.
    let live = recoveries.iter().find(|r| r.channel == "r.live").expect("r.live reported");
    assert!(live.recovered, "{live:?}");
    let eph = recoveries.iter().find(|r| r.channel == "eph").expect("eph reported");
    assert!(!eph.recovered && eph.reason.contains("ephemeral"), "{eph:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_survive_a_redis_restart_and_learn_the_history_is_gone() {
    let redis = RedisServer::start();
    let coord = serving_with(config(&redis.url())).await;
    let mut c = coord.pubsub();
    let mut sub = Sub::open(&mut c, vec![channel("r.restart", None)], vec![]).await;
    publish(&mut c, "r.restart", "before").await;
    assert_eq!(sub.message().await.offset, 1);

    redis.restart(); // no persistence: history and epoch are gone
    coord
        .wait_health("", tonic_health::pb::health_check_response::ServingStatus::Serving, Duration::from_secs(15))
        .await;
    let mut reply = None;
    for _ in 0..50 {
        match c.publish(PublishRequest { channel: "r.restart".into(), ..Default::default() }).await {
            Ok(r) => {
                reply = Some(r.into_inner());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let reply = reply.expect("publishing works again");
    assert_eq!(reply.offset, 1, "a new epoch starts at 1");
    let mut told = false;
    loop {
        match sub.event(Duration::from_secs(10)).await.unwrap() {
            Event::Recovery(r) => {
                assert!(!r.recovered, "the old history is gone: {r:?}");
                // Said as what it is: the epoch it knew is gone.
                assert!(r.reason.starts_with("epoch changed"), "{r:?}");
                told = true;
            }
            Event::Message(m) => {
                assert_eq!((m.offset, m.epoch.as_str()), (1, reply.epoch.as_str()));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(told, "the subscriber was told it may have missed messages");
}
