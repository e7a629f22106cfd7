//! PubSubService: ephemeral fan-out in order, patterns, 1000 subscribers
//! over two coord instances, a stalled subscriber cut off without delaying
//! the others, heartbeats, idempotent and batch publishes, validation, and
//! a Redis Cluster with sharded and with classic pub/sub.

mod support;

use std::time::{Duration, Instant};

use coord::pb::{ChannelMode, PublishBatchRequest, PublishRequest, SubscribeRequest, subscribe_response::Event};
use support::{
    redis::{RedisCluster, RedisServer},
    serving_with,
    subscriber::{Sub, channel, config, publish},
};
use tonic::Code;

#[tokio::test]
async fn ephemeral_messages_reach_every_subscriber_in_order_with_headers() {
    let redis = RedisServer::start();
    let coord = serving_with(config(&redis.url())).await;
    let mut c = coord.pubsub();
    let mut a = Sub::open(&mut c, vec![channel("news", None)], vec![]).await;
    let mut b = Sub::open(&mut c, vec![channel("news", None), channel("other", None)], vec![]).await;
    assert_eq!(a.subscribed.channels[0].mode, ChannelMode::Ephemeral as i32);

    let mut req = PublishRequest { channel: "news".into(), payload: b"first".to_vec().into(), ..Default::default() };
    req.headers.insert("content-type".into(), "text/plain".into());
    let r = c.publish(req).await.unwrap().into_inner();
    assert_eq!((r.mode, r.offset, r.receivers), (ChannelMode::Ephemeral as i32, 0, 1), "one instance subscribed");
    for i in 0..100 {
        publish(&mut c, "news", &format!("m{i}")).await;
    }
    for sub in [&mut a, &mut b] {
        let first = sub.message().await;
        assert_eq!((first.channel.as_str(), &first.payload[..]), ("news", &b"first"[..]));
        assert_eq!(first.headers["content-type"], "text/plain");
        assert!(first.published_at_ms > 0);
        for i in 0..100 {
            assert_eq!(sub.message().await.payload, format!("m{i}").into_bytes(), "in publish order");
        }
    }
    // Nobody listens to "quiet": at most once means dropped, and Redis says so.
    assert_eq!(publish(&mut c, "quiet", "x").await.receivers, 0);
}

#[tokio::test]
async fn patterns_receive_matching_channels_of_their_namespace_only() {
    let redis = RedisServer::start();
    let coord = serving_with(config(&redis.url())).await;
    let mut c = coord.pubsub();
    let mut p = Sub::open(&mut c, vec![], vec!["orders.*"]).await;
    publish(&mut c, "users.1", "no").await;
    publish(&mut c, "orders:eu", "no").await; // ':' is not '.'
    publish(&mut c, "orders.eu", "yes").await;
    let mut other_ns = tonic::Request::new(PublishRequest {
        channel: "orders.us".into(),
        payload: b"other tenant".to_vec().into(),
        ..Default::default()
    });
    other_ns.metadata_mut().insert("coord-namespace", "tenant-b".parse().unwrap());
    c.publish(other_ns).await.unwrap();
    publish(&mut c, "r.orders", "no").await;
    publish(&mut c, "orders.{x}", "braces").await;
    let m = p.message().await;
    assert_eq!((m.channel.as_str(), m.pattern.as_str(), &m.payload[..]), ("orders.eu", "orders.*", &b"yes"[..]));
    let m = p.message().await;
    assert_eq!((m.channel.as_str(), &m.payload[..]), ("orders.{x}", &b"braces"[..]));
    let nothing = tokio::time::timeout(Duration::from_millis(300), p.stream.message()).await;
    assert!(nothing.is_err(), "nothing else matches: {nothing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_1000_subscribers_across_two_instances() {
    let redis = RedisServer::start();
    let one = serving_with(config(&redis.url())).await;
    let two = serving_with(config(&redis.url())).await;
    let mut subs = Vec::new();
    for i in 0..1000 {
        let mut c = if i % 2 == 0 { one.pubsub() } else { two.pubsub() };
        subs.push(Sub::open(&mut c, vec![channel("fan", None)], vec![]).await);
    }
    let mut c = one.pubsub();
    for i in 0..20 {
        let r = publish(&mut c, "fan", &i.to_string()).await;
        assert_eq!(r.receivers, 2, "one Redis subscription per coord instance");
    }
    let mut handles = Vec::new();
    for mut sub in subs {
        handles.push(tokio::spawn(async move {
            for i in 0..20 {
                assert_eq!(sub.message().await.payload, i.to_string().into_bytes());
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_cut_off_without_delaying_the_others() {
    let redis = RedisServer::start();
    stalled_subscriber_is_cut_off(config(&redis.url())).await;
}

/// On a cluster, messages are handed to the queues by the sharded
/// connection's push handler; the cut-off is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_cut_off_on_a_sharded_cluster_too() {
    let cluster = RedisCluster::start(0);
    let mut cfg = config("");
    cfg.redis.cluster = cluster.urls();
    stalled_subscriber_is_cut_off(cfg).await;
}

async fn stalled_subscriber_is_cut_off(mut cfg: coord::config::Config) {
    cfg.pubsub.subscriber_buffer_messages = 200;
    cfg.pubsub.subscriber_buffer_bytes = 256 * 1024;
    let coord = serving_with(cfg).await;
    // Separate connections: HTTP/2 flow control of the stalled stream must
    // not hold back the healthy one.
    let stalled_coord = support::Coord::client_only(&format!("http://{}", coord.addr));
    let mut stalled = Sub::open(&mut stalled_coord.pubsub(), vec![channel("firehose", None)], vec![]).await;
    let mut healthy = Sub::open(&mut coord.pubsub(), vec![channel("firehose", None)], vec![]).await;

    let payload = "x".repeat(4096);
    let mut c = coord.pubsub();
    let reader = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..2000 {
            let m = healthy.message().await;
            assert_eq!(&m.payload[..4], payload_prefix(i).as_bytes());
        }
        started.elapsed()
    });
    for i in 0..2000 {
        let body = format!("{}{}", payload_prefix(i), &payload[4..]);
        publish(&mut c, "firehose", &body).await;
    }
    let took = reader.await.unwrap();
    assert!(took < Duration::from_secs(30), "the healthy subscriber got all 2000 in {took:?}");

    // The stalled one: whatever fit in its buffers, then RESOURCE_EXHAUSTED.
    let mut received = 0;
    let status = loop {
        match stalled.event(Duration::from_secs(10)).await {
            Ok(Event::Message(_)) => received += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(received < 2000, "it was cut off, not buffered without bound ({received} delivered)");
    assert!(status.message().contains("resubscribe"), "{}", status.message());
}

fn payload_prefix(i: usize) -> String {
    format!("{:04}", i % 10_000)
}

#[tokio::test]
async fn idle_streams_get_heartbeats() {
    let redis = RedisServer::start();
    let mut cfg = config(&redis.url());
    cfg.pubsub.heartbeat_interval = Duration::from_millis(100);
    let coord = serving_with(cfg).await;
    let mut sub = Sub::open(&mut coord.pubsub(), vec![channel("idle", None)], vec![]).await;
    let next = tokio::time::timeout(Duration::from_secs(5), sub.stream.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(next.event, Some(Event::Heartbeat(_))), "{next:?}");
}

#[tokio::test]
async fn idempotent_publishes_and_batches() {
    let redis = RedisServer::start();
    let coord = serving_with(config(&redis.url())).await;
    let mut c = coord.pubsub();
    let keyed = |payload: &str| PublishRequest {
        channel: "r.orders".into(),
        payload: payload.as_bytes().to_vec().into(),
        idempotency_key: "order-17".into(),
        ..Default::default()
    };
    let first = c.publish(keyed("a")).await.unwrap().into_inner();
    assert_eq!((first.mode, first.offset, first.replayed), (ChannelMode::Recoverable as i32, 1, false));
    assert!(!first.epoch.is_empty());
    let again = c.publish(keyed("a")).await.unwrap().into_inner();
    assert_eq!((again.offset, again.epoch.as_str(), again.replayed), (1, first.epoch.as_str(), true));
    assert_eq!(publish(&mut c, "r.orders", "b").await.offset, 2, "the replay took no offset");

    let batch = c
        .publish_batch(PublishBatchRequest {
            messages: vec![
                PublishRequest { channel: "r.orders".into(), ..Default::default() },
                PublishRequest { channel: String::new(), ..Default::default() },
                PublishRequest { channel: "r.orders".into(), ..Default::default() },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results[0].response.as_ref().unwrap().offset, 3);
    assert_eq!(batch.results[1].error_code, Code::InvalidArgument as i32);
    assert!(batch.results[1].error_message.starts_with("messages[1].channel:"), "{:?}", batch.results[1]);
    assert_eq!(batch.results[2].response.as_ref().unwrap().offset, 4, "a failed entry does not stop the rest");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let redis = RedisServer::start();
    let mut cfg = config(&redis.url());
    cfg.pubsub.max_payload = 1000;
    let coord = serving_with(cfg).await;
    let mut c = coord.pubsub();
    let invalid = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "want {field}: got {}", status.message());
    };
    let p = |channel: &str, size: usize| PublishRequest {
        channel: channel.into(),
        payload: vec![0; size].into(),
        ..Default::default()
    };
    invalid(c.publish(p("", 1)).await.unwrap_err(), "channel");
    invalid(c.publish(p(&"c".repeat(257), 1)).await.unwrap_err(), "channel");
    let err = c.publish(p("c", 1001)).await.unwrap_err();
    invalid(err.clone(), "payload");
    assert!(err.message().contains("1000"), "{}", err.message());
    let mut many = p("c", 1);
    many.headers = (0..65).map(|i| (i.to_string(), String::new())).collect();
    invalid(c.publish(many).await.unwrap_err(), "headers");
    invalid(c.publish_batch(PublishBatchRequest { messages: vec![] }).await.unwrap_err(), "messages");

    let sub = |channels, patterns: Vec<String>| SubscribeRequest { channels, patterns };
    invalid(c.subscribe(sub(vec![], vec![])).await.unwrap_err(), "channels");
    invalid(c.subscribe(sub(vec![channel("", None)], vec![])).await.unwrap_err(), "channels[0].channel");
    invalid(c.subscribe(sub(vec![channel("eph", Some((1, "e")))], vec![])).await.unwrap_err(), "channels[0].since");
    invalid(
        c.subscribe(sub(vec![channel("a", None), channel("a", None)], vec![])).await.unwrap_err(),
        "channels[1].channel",
    );
    invalid(c.subscribe(sub(vec![], vec![String::new()])).await.unwrap_err(), "patterns[0]");
    let lots = (0..129).map(|i| channel(&i.to_string(), None)).collect();
    invalid(c.subscribe(sub(lots, vec![])).await.unwrap_err(), "channels");
}

#[tokio::test]
async fn sharded_pubsub_serves_each_channel_from_its_own_shard_and_refuses_patterns() {
    let cluster = RedisCluster::start(0);
    let mut cfg = config("");
    cfg.redis.cluster = cluster.urls();
    let coord = serving_with(cfg).await;
    let mut c = coord.pubsub();
    let names = ["r.a", "r.b", "r.c", "r.d", "e.a", "e.b", "e.c", "e.d"];
    let mut sub = Sub::open(&mut c, names.iter().map(|n| channel(n, None)).collect(), vec![]).await;
    for n in names {
        let r = publish(&mut c, n, n).await;
        assert_eq!(r.receivers, 1, "{n}: SPUBLISH reached this instance's shard subscription");
        if n.starts_with("r.") {
            assert_eq!(r.offset, 1, "{n}");
        }
    }
    let mut got: Vec<String> = Vec::new();
    for _ in 0..names.len() {
        let m = sub.message().await;
        assert_eq!(m.payload, m.channel.as_bytes(), "{m:?}");
        got.push(m.channel);
    }
    got.sort();
    assert_eq!(got, {
        let mut n = names.map(String::from).to_vec();
        n.sort();
        n
    });

    // The subscriptions are shard channels, spread over more than one
    // master, and nothing is subscribed classically.
    let mut shards_used = 0;
    for port in cluster.masters() {
        let node = cluster.node_by_port(port);
        let shard_channels = node.cli(&["PUBSUB", "SHARDCHANNELS", "coord:*"]);
        let classic = node.cli(&["PUBSUB", "CHANNELS", "*"]);
        assert_eq!(classic, "", "no classic subscriptions on {port}");
        if names.iter().any(|n| shard_channels.contains(&format!("ps:{{{n}}}"))) {
            shards_used += 1;
        }
    }
    assert!(shards_used >= 2, "8 channels land on at least two of three shards");

    // Patterns have no sharded form: refused, naming the setting that allows them.
    let refused = c.subscribe(SubscribeRequest { channels: vec![], patterns: vec!["e.*".into()] }).await;
    let refused = match refused {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.expect_err("a pattern subscription is refused"),
    };
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("redis.sharded_pubsub"), "{}", refused.message());
}

#[tokio::test]
async fn classic_pubsub_on_a_cluster_serves_channels_and_patterns() {
    let cluster = RedisCluster::start(0);
    let mut cfg = config("");
    cfg.redis.cluster = cluster.urls();
    cfg.redis.sharded_pubsub = false;
    let coord = serving_with(cfg).await;
    let mut c = coord.pubsub();
    let names = ["r.a", "r.b", "r.c", "r.d", "e.a", "e.b"];
    let mut sub = Sub::open(&mut c, names.iter().map(|n| channel(n, None)).collect(), vec!["e.*"]).await;
    for n in names {
        let r = publish(&mut c, n, n).await;
        if n.starts_with("r.") {
            assert_eq!(r.offset, 1, "{n}");
        }
    }
    let mut got = Vec::new();
    // Six channel messages and two pattern messages.
    for _ in 0..8 {
        let m = sub.message().await;
        got.push((m.channel, m.pattern));
    }
    got.sort();
    assert_eq!(got.iter().filter(|(_, p)| p == "e.*").count(), 2, "{got:?}");
    // Recovery reads history from whichever shard holds the channel.
    for n in ["r.a", "r.b", "r.c", "r.d"] {
        publish(&mut c, n, "second").await;
        let epoch = publish(&mut c, n, "third").await.epoch;
        let mut again = Sub::open(&mut c, vec![channel(n, Some((1, &epoch)))], vec![]).await;
        let r = again.recovery().await;
        assert!(r.recovered, "{n}: {r:?}");
        assert_eq!(again.message().await.payload, b"second".to_vec());
        assert_eq!(again.message().await.offset, 3);
    }
}
