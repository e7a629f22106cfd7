//! Redis Cluster failover (3 masters, 1 replica each): a master is killed
//! with SIGKILL while coord runs.
//! - coord reconnects by itself: health goes NOT_SERVING and back to SERVING
//!   (its event subscription moves to another seed), and every lock is
//!   reachable again once the replica is promoted;
//! - with `lock.min_replicas = 1`, no grant acknowledged by a replica is
//!   lost: each lock is still held, by the same lease, with the same token;
//! - fencing tokens keep increasing after the failover;
//! - while the promoted replica has no replica, grants in its slots are
//!   refused (UNAVAILABLE, saying so), never given unprotected;
//! - once the killed node is back as its replica, a release wakes a waiter;
//! - GetBackendStatus lists every shard with its nodes, roles and slots,
//!   reports the killed node unreachable, then back as a replica.

mod support;

use std::time::{Duration, Instant};

use coord::pb::{
    AcquireRequest, AcquireStatus, DescribeRequest, GetBackendStatusRequest, GrantRequest, ReleaseRequest,
    lock_service_client::LockServiceClient,
};
use support::{redis::RedisCluster, serving_with};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

async fn acquire(c: &mut LockServiceClient<Channel>, name: &str, lease: &str, wait_ms: i64) -> (bool, u64) {
    let req = AcquireRequest { name: name.into(), lease_id: lease.into(), wait_ms, ..Default::default() };
    let got = c.acquire(req).await.unwrap().into_inner();
    (got.status == AcquireStatus::Acquired as i32, got.fencing_token)
}

/// `to` waits for `name` while `from` releases it: (acquired, token, waited).
async fn hand_over(c: &mut LockServiceClient<Channel>, name: &str, from: &str, to: &str) -> (bool, u64, Duration) {
    let waiter = {
        let (mut c, name, to) = (c.clone(), name.to_owned(), to.to_owned());
        tokio::spawn(async move {
            let started = Instant::now();
            let (ok, token) = acquire(&mut c, &name, &to, 20_000).await;
            (ok, token, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = ReleaseRequest { name: name.into(), lease_id: from.into(), ..Default::default() };
    c.release(req).await.unwrap();
    waiter.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_without_losing_acknowledged_locks() {
    let cluster = RedisCluster::start(1);
    let mut config = support::config("");
    config.redis.cluster = cluster.urls();
    config.lock.min_replicas = 1;
    config.lock.replica_ack_timeout = Duration::from_millis(500);
    config.redis.command_timeout = Duration::from_secs(2);
    let coord = serving_with(config).await;
    let mut c = coord.locks();
    let mut admin = coord.admin();

    // Replicas report "loading" until their first sync is done.
    let synced = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = admin.get_backend_status(GetBackendStatusRequest {}).await.unwrap().into_inner();
        let all_online = status.shards.iter().flat_map(|s| &s.nodes).all(|n| n.health == "online");
        if all_online || Instant::now() > synced {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.shards.len(), 3, "{status:?}");
    let slots: u32 = status.shards.iter().flat_map(|s| &s.slots).map(|r| r.end - r.start + 1).sum();
    assert_eq!(slots, 16384, "{status:?}");
    for shard in &status.shards {
        let roles: Vec<&str> = shard.nodes.iter().map(|n| n.role.as_str()).collect();
        assert!(roles.contains(&"master") && roles.contains(&"replica"), "{shard:?}");
        assert!(shard.nodes.iter().all(|n| n.reachable && n.health == "online"), "{shard:?}");
    }

    // Locks in every shard under one long lease; each grant acknowledged by a replica.
    let lease = c.grant(GrantRequest { ttl_ms: 60_000, owner: "f".into() }).await.unwrap().into_inner().lease_id;
    let names: Vec<String> = (0..12).map(|i| format!("failover-{i}")).collect();
    let mut tokens = Vec::new();
    for name in &names {
        let (ok, token) = acquire(&mut c, name, &lease, 0).await;
        assert!(ok, "{name}");
        tokens.push(token);
    }

    // SIGKILL the master that holds the first seed's slots' data: the
    // node coord's pub/sub connection starts on.
    let victim = cluster.nodes()[0].port();
    assert!(cluster.masters().contains(&victim), "the first node starts as a master");
    let killed_at = Instant::now();
    cluster.node_by_port(victim).kill();
    // Health reports the degraded period (the probe's slot or the event
    // subscription is down), then recovers by itself: the event
    // subscription moves to another seed.
    let degraded = coord.wait_health("", ServingStatus::NotServing, Duration::from_secs(10)).await;
    let healthy_again = coord.wait_health("", ServingStatus::Serving, Duration::from_secs(30)).await;

    // coord finds the promoted replica by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, token) in names.iter().zip(&tokens) {
        loop {
            match c.describe(DescribeRequest { name: name.clone(), ..Default::default() }).await {
                Ok(r) => {
                    let lock = r.into_inner().lock.unwrap_or_default();
                    assert!(lock.held, "{name}: acknowledged by a replica, so kept");
                    assert_eq!((lock.lease_id.as_str(), lock.fencing_token), (lease.as_str(), *token), "{name}");
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "{name} unreachable 30 s after the kill: {e:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let recovered = killed_at.elapsed();
    assert!(!cluster.masters().contains(&victim));

    let during = admin.get_backend_status(GetBackendStatusRequest {}).await.unwrap().into_inner();
    let dead = during.shards.iter().flat_map(|s| &s.nodes).find(|n| n.address == format!("127.0.0.1:{victim}"));
    if let Some(dead) = dead {
        assert!(!dead.reachable && !dead.error.is_empty(), "{dead:?}");
    }
    let masters = during.shards.iter().flat_map(|s| &s.nodes).filter(|n| n.role == "master" && n.reachable).count();
    assert_eq!(masters, 3, "a replica took the killed master's place: {during:?}");

    // The promoted replica has no replica of its own: grants there cannot
    // be acknowledged, so they are refused, saying why (never granted
    // unprotected).
    let victim_slots: Vec<(u32, u32)> = status
        .shards
        .iter()
        .filter(|s| s.nodes.iter().any(|n| n.address == format!("127.0.0.1:{victim}")))
        .flat_map(|s| s.slots.iter().map(|r| (r.start, r.end)))
        .collect();
    let live = cluster.masters()[0];
    let in_victim_shard = |name: &str| {
        let slot: u32 = cluster
            .node_by_port(live)
            .cli(&["CLUSTER", "KEYSLOT", &format!("coord:default:lock:{{{name}}}")])
            .parse()
            .unwrap();
        victim_slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    };
    let orphaned = (0..).map(|i| format!("orphan-{i}")).find(|n| in_victim_shard(n)).unwrap();
    let req = AcquireRequest { name: orphaned.clone(), lease_id: lease.clone(), ..Default::default() };
    let err = c.acquire(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("replicas acknowledged"), "{err:?}");
    assert!(names.iter().any(|n| in_victim_shard(n)), "some of the held locks were on the killed master");

    // Lock events still arrive although the first seed (where coord's
    // pub/sub connection was) is dead: a release wakes a waiter at once,
    // where without the notification it would sleep until the 60 s TTL.
    let other = c.grant(GrantRequest { ttl_ms: 60_000, owner: "g".into() }).await.unwrap().into_inner().lease_id;
    let healthy = names.iter().position(|n| !in_victim_shard(n)).unwrap();
    let (ok, token, waited) = hand_over(&mut c, &names[healthy], &lease, &other).await;
    assert!(ok && token > tokens[healthy], "{}: {token} after {}", names[healthy], tokens[healthy]);
    assert!(waited < Duration::from_secs(5), "woken by notification, not the TTL: {waited:?}");

    // The killed node comes back (empty) as the new master's replica.
    cluster.node_by_port(victim).restart();
    let synced = Instant::now() + Duration::from_secs(30);
    loop {
        let status = admin.get_backend_status(GetBackendStatusRequest {}).await.unwrap().into_inner();
        let back = status.shards.iter().flat_map(|s| &s.nodes).find(|n| n.address == format!("127.0.0.1:{victim}"));
        if back.is_some_and(|n| n.role == "replica" && n.health == "online" && n.reachable) {
            break;
        }
        assert!(Instant::now() < synced, "the old master did not rejoin as a replica: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Tokens keep increasing; a release wakes a waiter, in every shard.
    for (i, (name, token)) in names.iter().zip(&tokens).enumerate().filter(|(i, _)| *i != healthy) {
        let (ok, new_token, waited) = hand_over(&mut c, name, &lease, &other).await;
        assert!(ok, "{name} (#{i}): the waiter got the lock after {waited:?}");
        assert!(new_token > *token, "{name}: token {new_token} after {token}");
        assert!(waited < Duration::from_secs(5), "{name}: waited {waited:?}");
    }

    let status = admin.get_backend_status(GetBackendStatusRequest {}).await.unwrap().into_inner();
    let masters = status.shards.iter().flat_map(|s| &s.nodes).filter(|n| n.role == "master" && n.reachable).count();
    assert_eq!(masters, 3, "{status:?}");
    eprintln!(
        "NOT_SERVING {degraded:?} after the kill, SERVING again {healthy_again:?} later; locks reachable {recovered:?} after the kill"
    );
}
