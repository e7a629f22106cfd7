//! Locks beyond one plain node: the lock scripts on a local Redis Cluster
//! (keys of one lease spread over slots), listing, and replica
//! acknowledgement (WAIT) with a primary and a replica.

mod support;

use std::time::{Duration, Instant};

use coord::pb::{
    AcquireRequest, AcquireStatus, DescribeRequest, ForceReleaseRequest, GrantRequest, KeepAliveRequest, ListRequest,
    PageRequest, ReleaseRequest, ReleaseStatus, keep_alive_response::Event,
};
use support::{
    redis::{RedisCluster, RedisServer},
    serving, serving_with,
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::Code;

#[tokio::test]
async fn lock_scripts_run_on_a_local_cluster() {
    let cluster = RedisCluster::start(0);
    let mut config = support::config("");
    config.redis.cluster = cluster.urls();
    let coord = serving_with(config).await;
    let mut c = coord.locks();

    // One lease, locks in many slots.
    let lease = c.grant(GrantRequest { ttl_ms: 800, owner: "c".into() }).await.unwrap().into_inner().lease_id;
    let names: Vec<String> = (0..12).map(|i| format!("shard-{i}")).collect();
    let mut tokens = Vec::new();
    for name in &names {
        let got = c
            .acquire(AcquireRequest { name: name.clone(), lease_id: lease.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.status, AcquireStatus::Acquired as i32, "{name}");
        tokens.push(got.fencing_token);
    }
    let slots: std::collections::HashSet<String> = names
        .iter()
        .map(|n| cluster.nodes()[0].cli(&["CLUSTER", "KEYSLOT", &format!("coord:default:lock:{{{n}}}")]))
        .collect();
    assert!(slots.len() > 6, "names spread over slots: {slots:?}");

    // Renewal keeps every one of them past several TTLs.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut stream = c.keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(2), stream.next()).await.unwrap().unwrap().unwrap().event {
            Some(Event::Renewed(r)) => assert_eq!(r.ttl_ms, 800),
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for name in &names {
        let info = c
            .describe(DescribeRequest { name: name.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .lock
            .unwrap();
        assert!(info.held && info.lease_id == lease, "{name}: {info:?}");
    }

    // Force release reaches the stream; release, re-acquire, fencing.
    c.force_release(ForceReleaseRequest { name: names[0].clone(), ..Default::default() }).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(3), stream.next()).await.unwrap().unwrap().unwrap();
        if let Some(Event::LockLost(lost)) = msg.event {
            assert_eq!(lost.name, names[0]);
            break;
        }
    }
    let rel = c
        .release(ReleaseRequest { name: names[1].clone(), lease_id: lease.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rel.status, ReleaseStatus::Released as i32);
    let again = c
        .acquire(AcquireRequest { name: names[1].clone(), ttl_ms: 1_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(again.fencing_token > tokens[1]);

    // List walks every master.
    let listed = list_all(&mut c, "shard-", 5).await;
    assert_eq!(listed.len(), names.len() - 1, "all but the force-released one: {listed:?}");
}

async fn list_all(
    c: &mut coord::pb::lock_service_client::LockServiceClient<tonic::transport::Channel>,
    prefix: &str,
    limit: u32,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let page = c
            .list(ListRequest { prefix: prefix.into(), page: Some(PageRequest { limit, cursor: cursor.clone() }) })
            .await
            .unwrap()
            .into_inner();
        assert!(page.locks.iter().all(|l| l.held && l.name.starts_with(prefix)), "{page:?}");
        names.extend(page.locks.into_iter().map(|l| l.name));
        cursor = page.page.unwrap_or_default().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn list_pages_through_held_locks_by_prefix() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let mut want = Vec::new();
    for i in 0..25 {
        let name = format!("batch/{i:02}");
        c.acquire(AcquireRequest { name: name.clone(), ttl_ms: 30_000, ..Default::default() }).await.unwrap();
        want.push(name);
    }
    // Not listed: other prefixes, glob characters taken literally, and
    // released locks (their tombstones).
    for name in ["other/1", "batch*x", "batcH/1"] {
        c.acquire(AcquireRequest { name: name.into(), ttl_ms: 30_000, ..Default::default() }).await.unwrap();
    }
    let gone = c
        .acquire(AcquireRequest { name: "batch/zz".into(), ttl_ms: 30_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    c.release(ReleaseRequest { name: "batch/zz".into(), lease_id: gone.lease_id, ..Default::default() }).await.unwrap();

    assert_eq!(list_all(&mut c, "batch/", 4).await, want);
    assert_eq!(list_all(&mut c, "batch*", 10).await, ["batch*x"]);
    assert_eq!(list_all(&mut c, "", 1000).await.len(), 28);
}

#[tokio::test]
async fn grants_wait_for_replicas_and_are_undone_without_them() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let start = Instant::now();
    while !primary.cli(&["INFO", "replication"]).contains("state=online") {
        assert!(start.elapsed() < Duration::from_secs(10), "replica did not attach");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut config = support::config(&primary.url());
    config.lock.min_replicas = 1;
    // Generous: a freshly attached replica on a loaded machine took more
    // than 300 ms to acknowledge the first grant (a CI flake).
    config.redis.command_timeout = Duration::from_secs(3);
    config.lock.replica_ack_timeout = Duration::from_secs(1);
    let coord = serving_with(config).await;
    let mut c = coord.locks();

    let got = c
        .acquire(AcquireRequest { name: "durable".into(), ttl_ms: 5_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, AcquireStatus::Acquired as i32);
    assert_eq!(replica.cli(&["HGET", "coord:default:lock:{durable}", "state"]), "held", "replicated");

    // The replica stops acknowledging: a grant would not survive a
    // failover, so it is undone and the caller told UNAVAILABLE.
    replica.stop();
    let err =
        c.acquire(AcquireRequest { name: "fragile".into(), ttl_ms: 5_000, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("replicas"), "{}", err.message());
    let info = c
        .describe(DescribeRequest { name: "fragile".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert!(!info.held, "undone: {info:?}");
    replica.cont();
}

/// Semaphores, read/write locks and elections on a local Redis Cluster,
/// held under one shared lease whose keys sit in other slots: grants in
/// many slots, renewed together past several TTLs, all ended by Revoke
/// (each reported on the stream with its kind); a waiting candidate is
/// elected by notification and an observer sees every change.
#[tokio::test]
async fn counted_locks_and_elections_run_on_a_local_cluster() {
    use coord::pb::{
        CampaignStatus, ElectionServiceCampaignRequest, ElectionServiceObserveRequest, HoldKind, LockMode,
        RevokeRequest, SemaphoreAcquireStatus, SemaphoreServiceAcquireRequest, SemaphoreServiceDescribeRequest,
    };
    let cluster = RedisCluster::start(0);
    let mut config = support::config("");
    config.redis.cluster = cluster.urls();
    let coord = serving_with(config).await;
    let (mut c, mut sems, mut elections) = (coord.locks(), coord.semaphores(), coord.elections());
    let lease = c.grant(GrantRequest { ttl_ms: 800, owner: "c".into() }).await.unwrap().into_inner().lease_id;
    let mut held = Vec::new();
    for i in 0..6 {
        let got = sems
            .acquire(SemaphoreServiceAcquireRequest {
                name: format!("pool-{i}"),
                permits: 2,
                size: 3,
                lease_id: lease.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32, "pool-{i}");
        held.push((HoldKind::Semaphore as i32, format!("pool-{i}")));
        let got = c
            .acquire(AcquireRequest {
                name: format!("doc-{i}"),
                lease_id: lease.clone(),
                mode: LockMode::Shared as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.status, AcquireStatus::Acquired as i32, "doc-{i}");
        held.push((HoldKind::ReadWriteLock as i32, format!("doc-{i}")));
    }
    let slots: std::collections::HashSet<String> = (0..6)
        .map(|i| cluster.nodes()[0].cli(&["CLUSTER", "KEYSLOT", &format!("coord:default:sem:{{pool-{i}}}")]))
        .collect();
    assert!(slots.len() > 3, "semaphores spread over slots: {slots:?}");

    let mut states =
        elections.observe(ElectionServiceObserveRequest { election: "leader".into() }).await.unwrap().into_inner();
    // The observer's first state is read once its subscription is up:
    // wait for it, or it may already be "a".
    let first = tokio::time::timeout(Duration::from_secs(3), stream_next(&mut states)).await.unwrap();
    assert!(!first.has_leader, "{first:?}");
    let leads = elections
        .campaign(ElectionServiceCampaignRequest {
            election: "leader".into(),
            lease_id: lease.clone(),
            value: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leads.status, CampaignStatus::Elected as i32);
    held.push((HoldKind::Leadership as i32, "leader".to_owned()));
    let mut candidate = coord.elections();
    let next = tokio::spawn(async move {
        candidate
            .campaign(ElectionServiceCampaignRequest {
                election: "leader".into(),
                ttl_ms: 5_000,
                value: b"b".to_vec(),
                wait_ms: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    });

    // Renewed together past several TTLs.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut stream = c.keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(2), stream.next()).await.unwrap().unwrap().unwrap().event {
            Some(Event::Renewed(r)) => assert_eq!(r.ttl_ms, 800),
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let used = sems
        .describe(SemaphoreServiceDescribeRequest { name: "pool-5".into(), limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .used;
    assert_eq!(used, 2, "still held after 2 s of an 800 ms TTL");

    // Revoke ends every grant: each reported with its kind; the candidate leads.
    let start = Instant::now();
    c.revoke(RevokeRequest { lease_id: lease }).await.unwrap();
    let mut lost = Vec::new();
    while lost.len() < held.len() {
        let msg = tokio::time::timeout(Duration::from_secs(3), stream.next()).await.unwrap().unwrap().unwrap();
        if let Some(Event::LockLost(l)) = msg.event {
            lost.push((l.kind, l.name));
        }
    }
    lost.sort();
    held.sort();
    assert_eq!(lost, held);
    let next = tokio::time::timeout(Duration::from_secs(2), next).await.expect("elected").unwrap();
    assert_eq!(next.status, CampaignStatus::Elected as i32);
    assert!(start.elapsed() < Duration::from_secs(1), "by notification: {:?}", start.elapsed());
    let mut seen = vec!["none".to_owned()];
    while seen.len() < 4 {
        let s = tokio::time::timeout(Duration::from_secs(3), stream_next(&mut states)).await.unwrap();
        seen.push(if s.has_leader { String::from_utf8_lossy(&s.value).into_owned() } else { "none".into() });
    }
    assert_eq!(seen, ["none", "a", "none", "b"]);
}

async fn stream_next(
    states: &mut tonic::Streaming<coord::pb::ElectionServiceObserveResponse>,
) -> coord::pb::ElectionState {
    states.next().await.unwrap().unwrap().state.unwrap()
}
