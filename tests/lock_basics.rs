//! LockService basics through the generated client: grants and clamps,
//! owner-only release, late release after expiry, reentrancy, fencing
//! tokens (also across a Redis restart that loses all data), TTLs on every
//! key, validation errors, and Redis-down behaviour.

mod support;

use std::time::{Duration, Instant};

use coord::pb::{
    AcquireRequest, AcquireStatus, DescribeRequest, GrantRequest, ListRequest, PageRequest, ReleaseRequest,
    ReleaseStatus, lock_service_client::LockServiceClient,
};
use support::{redis::RedisServer, serving};
use tonic::{Code, transport::Channel};

type Client = LockServiceClient<Channel>;

async fn acquire_ttl(client: &mut Client, name: &str, ttl_ms: i64, owner: &str) -> coord::pb::AcquireResponse {
    client
        .acquire(AcquireRequest { name: name.into(), ttl_ms, owner: owner.into(), ..Default::default() })
        .await
        .expect("acquire")
        .into_inner()
}

async fn acquire_lease(client: &mut Client, name: &str, lease: &str) -> coord::pb::AcquireResponse {
    client
        .acquire(AcquireRequest { name: name.into(), lease_id: lease.into(), ..Default::default() })
        .await
        .expect("acquire")
        .into_inner()
}

async fn release(client: &mut Client, name: &str, lease: &str) -> coord::pb::ReleaseResponse {
    client
        .release(ReleaseRequest { name: name.into(), lease_id: lease.into(), ..Default::default() })
        .await
        .expect("release")
        .into_inner()
}

fn acquired(r: &coord::pb::AcquireResponse) -> bool {
    r.status == AcquireStatus::Acquired as i32
}

#[tokio::test]
async fn grant_clamps_ttl_and_returns_it() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let small = c.grant(GrantRequest { ttl_ms: 10, owner: "t".into() }).await.unwrap().into_inner();
    assert_eq!(small.ttl_ms, 100, "raised to the test config's min_ttl");
    assert!(small.lease_id.len() >= 33, "{}", small.lease_id);
    let big = c.grant(GrantRequest { ttl_ms: 10 * 3600 * 1000, owner: String::new() }).await.unwrap().into_inner();
    assert_eq!(big.ttl_ms, 3600 * 1000, "lowered to max_ttl");
    assert_ne!(small.lease_id, big.lease_id);
    for ttl in [0, -5] {
        let err = c.grant(GrantRequest { ttl_ms: ttl, owner: String::new() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with("ttl_ms:"), "{}", err.message());
    }
}

#[tokio::test]
async fn private_lease_acquire_describe_release() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let got = acquire_ttl(&mut c, "orders", 5_000, "worker-1").await;
    assert!(acquired(&got), "{got:?}");
    assert!(got.lease_id.starts_with('p'), "{got:?}");
    assert_eq!(got.hold_count, 1);
    assert_eq!(got.ttl_ms, 5_000);
    assert!(got.fencing_token > 0);

    let info = c
        .describe(DescribeRequest { name: "orders".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert!(info.held);
    assert_eq!(info.owner, "worker-1");
    assert_eq!(info.lease_id, got.lease_id);
    assert_eq!(info.fencing_token, got.fencing_token);
    assert!(info.ttl_ms > 4_000 && info.ttl_ms <= 5_000, "{info:?}");

    // Someone else is refused at once, and told who holds it.
    let other = acquire_ttl(&mut c, "orders", 5_000, "worker-2").await;
    assert_eq!(other.status, AcquireStatus::NotAcquired as i32);
    assert_eq!(other.holder_owner, "worker-1");
    assert!(other.ttl_ms > 0);

    let rel = release(&mut c, "orders", &got.lease_id).await;
    assert_eq!(rel.status, ReleaseStatus::Released as i32);
    assert_eq!(rel.remaining_holds, 0);
    let info = c
        .describe(DescribeRequest { name: "orders".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert!(!info.held);
    // Idempotent.
    assert_eq!(release(&mut c, "orders", &got.lease_id).await.status, ReleaseStatus::NotHeld as i32);
}

#[tokio::test]
async fn only_the_holder_can_release() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let a = acquire_ttl(&mut c, "res", 5_000, "a").await;
    let b = c.grant(GrantRequest { ttl_ms: 5_000, owner: "b".into() }).await.unwrap().into_inner();
    assert_eq!(release(&mut c, "res", &b.lease_id).await.status, ReleaseStatus::HeldByOther as i32);
    let info = c
        .describe(DescribeRequest { name: "res".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert!(info.held && info.lease_id == a.lease_id, "untouched: {info:?}");
}

#[tokio::test]
async fn late_release_after_expiry_leaves_the_new_holder_intact() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let a = acquire_ttl(&mut c, "job", 200, "a").await;
    assert!(acquired(&a));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = acquire_ttl(&mut c, "job", 5_000, "b").await;
    assert!(acquired(&b), "expired lock is free: {b:?}");
    assert!(b.fencing_token > a.fencing_token);
    assert_eq!(release(&mut c, "job", &a.lease_id).await.status, ReleaseStatus::HeldByOther as i32);
    let info = c
        .describe(DescribeRequest { name: "job".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert!(info.held && info.lease_id == b.lease_id, "{info:?}");
}

#[tokio::test]
async fn reentrant_acquires_count_holds() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let lease = c.grant(GrantRequest { ttl_ms: 5_000, owner: "r".into() }).await.unwrap().into_inner().lease_id;
    let first = acquire_lease(&mut c, "deep", &lease).await;
    for depth in 2..=3 {
        let again = acquire_lease(&mut c, "deep", &lease).await;
        assert!(acquired(&again));
        assert_eq!(again.hold_count, depth);
        assert_eq!(again.fencing_token, first.fencing_token, "re-entry keeps the grant's token");
    }
    for remaining in [2, 1, 0] {
        let rel = release(&mut c, "deep", &lease).await;
        assert_eq!((rel.status, rel.remaining_holds), (ReleaseStatus::Released as i32, remaining));
    }
    let other = acquire_ttl(&mut c, "deep", 1_000, "o").await;
    assert!(acquired(&other), "free after the last release");

    // A private lease re-enters its own lock, and only that one.
    let again = acquire_lease(&mut c, "deep", &other.lease_id).await;
    assert_eq!(again.hold_count, 2);
    let err = c
        .acquire(AcquireRequest { name: "elsewhere".into(), lease_id: other.lease_id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("lease_id:"), "{}", err.message());
}

#[tokio::test]
async fn fencing_tokens_increase_even_after_redis_loses_everything() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let mut last = 0;
    for _ in 0..20 {
        let got = acquire_ttl(&mut c, "fenced", 5_000, "").await;
        assert!(got.fencing_token > last, "{} after {last}", got.fencing_token);
        last = got.fencing_token;
        release(&mut c, "fenced", &got.lease_id).await;
    }
    // No persistence: the restart forgets the counter and the lock.
    redis.kill();
    redis.restart();
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
    let start = Instant::now();
    let got = loop {
        match c.acquire(AcquireRequest { name: "fenced".into(), ttl_ms: 5_000, ..Default::default() }).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(start.elapsed() < Duration::from_secs(10), "redis did not come back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(got.fencing_token > last, "token {} after restart, last before {last}", got.fencing_token);
}

#[tokio::test]
async fn every_key_written_has_a_ttl() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let lease = c.grant(GrantRequest { ttl_ms: 5_000, owner: "k".into() }).await.unwrap().into_inner().lease_id;
    acquire_lease(&mut c, "a", &lease).await;
    acquire_lease(&mut c, "b", &lease).await;
    let p = acquire_ttl(&mut c, "c", 5_000, "").await;
    release(&mut c, "c", &p.lease_id).await;
    // A waiter that gives up.
    let waited = c
        .acquire(AcquireRequest { name: "a".into(), ttl_ms: 1_000, wait_ms: 200, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waited.status, AcquireStatus::NotAcquired as i32);

    let keys = redis.cli(&["--scan"]);
    assert!(keys.lines().count() >= 6, "{keys}");
    for key in keys.lines() {
        let ttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let cases: Vec<(AcquireRequest, Code, &str)> = vec![
        (AcquireRequest { name: String::new(), ttl_ms: 1_000, ..Default::default() }, Code::InvalidArgument, "name:"),
        (AcquireRequest { name: "x".repeat(513), ttl_ms: 1_000, ..Default::default() }, Code::InvalidArgument, "name:"),
        (AcquireRequest { name: "n".into(), ..Default::default() }, Code::InvalidArgument, "lease_id:"),
        (
            AcquireRequest { name: "n".into(), ttl_ms: 1_000, lease_id: "l".into(), ..Default::default() },
            Code::InvalidArgument,
            "ttl_ms:",
        ),
        (
            AcquireRequest { name: "n".into(), lease_id: "bogus".into(), ..Default::default() },
            Code::InvalidArgument,
            "lease_id:",
        ),
        (AcquireRequest { name: "n".into(), ttl_ms: -1, ..Default::default() }, Code::InvalidArgument, "ttl_ms:"),
        (
            AcquireRequest { name: "n".into(), ttl_ms: 1_000, wait_ms: -1, ..Default::default() },
            Code::InvalidArgument,
            "wait_ms:",
        ),
        (
            AcquireRequest { name: "n".into(), ttl_ms: 1_000, wait_ms: 301_000, ..Default::default() },
            Code::InvalidArgument,
            "wait_ms:",
        ),
        (
            AcquireRequest { name: "n".into(), ttl_ms: 1_000, owner: "o".repeat(257), ..Default::default() },
            Code::InvalidArgument,
            "owner:",
        ),
        (
            AcquireRequest { name: "n".into(), lease_id: format!("l{}", "0".repeat(32)), ..Default::default() },
            Code::NotFound,
            "lease_id",
        ),
    ];
    for (req, code, prefix) in cases {
        let err = c.acquire(req.clone()).await.expect_err("invalid");
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
        assert!(err.message().starts_with(prefix), "{req:?}: {}", err.message());
    }
    let err = c
        .list(ListRequest { prefix: String::new(), page: Some(PageRequest { limit: 1001, cursor: String::new() }) })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("page.limit:"), "{}", err.message());
    let err = c
        .list(ListRequest { prefix: String::new(), page: Some(PageRequest { limit: 10, cursor: "zz".into() }) })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("page.cursor:"), "{}", err.message());
    // A bad namespace header is rejected by name too.
    let mut req = tonic::Request::new(DescribeRequest { name: "n".into(), ..Default::default() });
    req.metadata_mut().insert("coord-namespace", "".parse().unwrap());
    let err = c.describe(req).await.unwrap_err();
    assert!(err.message().starts_with("coord-namespace:"), "{}", err.message());
}

#[tokio::test]
async fn namespaces_do_not_see_each_others_locks() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let mut req = tonic::Request::new(AcquireRequest { name: "shared".into(), ttl_ms: 5_000, ..Default::default() });
    req.metadata_mut().insert("coord-namespace", "team-a".parse().unwrap());
    assert!(acquired(&c.acquire(req).await.unwrap().into_inner()));
    let mut req = tonic::Request::new(AcquireRequest { name: "shared".into(), ttl_ms: 5_000, ..Default::default() });
    req.metadata_mut().insert("coord-namespace", "team-b".parse().unwrap());
    assert!(acquired(&c.acquire(req).await.unwrap().into_inner()), "same name, other namespace");
}

#[tokio::test]
async fn redis_down_gives_unavailable_well_before_the_deadline() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    redis.stop();
    let start = Instant::now();
    let mut req =
        tonic::Request::new(AcquireRequest { name: "n".into(), ttl_ms: 1_000, wait_ms: 20_000, ..Default::default() });
    req.set_timeout(Duration::from_secs(30));
    let err = c.acquire(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    redis.cont();
}

#[tokio::test]
async fn retried_request_id_returns_the_original_grant() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let request =
        AcquireRequest { name: "idem".into(), ttl_ms: 5_000, request_id: "req-1".into(), ..Default::default() };
    let first = c.acquire(request.clone()).await.unwrap().into_inner();
    // The answer was "lost"; the client retries the same request.
    let retry = c.acquire(request).await.unwrap().into_inner();
    assert!(acquired(&retry));
    assert_eq!(
        (retry.lease_id.as_str(), retry.fencing_token, retry.hold_count),
        (first.lease_id.as_str(), first.fencing_token, 1)
    );

    // Under a shared lease: no second hold.
    let lease = c.grant(GrantRequest { ttl_ms: 5_000, owner: String::new() }).await.unwrap().into_inner().lease_id;
    let request = AcquireRequest {
        name: "idem2".into(),
        lease_id: lease.clone(),
        request_id: "req-2".into(),
        ..Default::default()
    };
    c.acquire(request.clone()).await.unwrap();
    let retry = c.acquire(request).await.unwrap().into_inner();
    assert_eq!(retry.hold_count, 1);
    assert_eq!(release(&mut c, "idem2", &lease).await.remaining_holds, 0);
}

#[tokio::test]
async fn a_forged_lease_renews_nothing() {
    use coord::pb::{KeepAliveRequest, keep_alive_response::Event};
    use tokio_stream::StreamExt as _;
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let real = acquire_ttl(&mut c, "mine", 1_000, "").await;
    // Same lock name, other random part: a guess at the private lease id.
    let forged = format!("p{}.mine", "ab".repeat(16));
    assert_ne!(forged, real.lease_id);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = c.keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(KeepAliveRequest { lease_id: forged.clone() }).await.unwrap();
    match stream.next().await.unwrap().unwrap().event {
        Some(Event::Renewed(r)) => assert_eq!((r.lease_id, r.ttl_ms), (forged.clone(), 0)),
        other => panic!("{other:?}"),
    }
    let info = c
        .describe(DescribeRequest { name: "mine".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert!(info.ttl_ms <= 500, "TTL not extended by the forged lease: {info:?}");
    // Nor can it release the lock.
    assert_eq!(release(&mut c, "mine", &forged).await.status, ReleaseStatus::HeldByOther as i32);
}

#[tokio::test]
async fn a_lock_under_a_granted_lease_shows_the_lease_owner() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let lease = c.grant(GrantRequest { ttl_ms: 30_000, owner: "billing-7f9c".into() }).await.unwrap().into_inner();
    assert!(acquired(&acquire_lease(&mut c, "owned", &lease.lease_id).await));

    let info = c
        .describe(DescribeRequest { name: "owned".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert_eq!(info.owner, "billing-7f9c", "{info:?}");
    let other = c
        .acquire(AcquireRequest { name: "owned".into(), ttl_ms: 1_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.status, AcquireStatus::NotAcquired as i32);
    assert_eq!(other.holder_owner, "billing-7f9c", "{other:?}");
    let forced = c
        .force_release(coord::pb::ForceReleaseRequest { name: "owned".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forced.owner, "billing-7f9c", "{forced:?}");

    // An owner on the Acquire itself wins over the lease's.
    let got = c
        .acquire(AcquireRequest {
            name: "named".into(),
            lease_id: lease.lease_id.clone(),
            owner: "job-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(acquired(&got));
    let info = c
        .describe(DescribeRequest { name: "named".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert_eq!(info.owner, "job-1");
}

/// The Redis commands coord sent (not those its scripts ran) since the
/// slow log was reset, that mention `needle`: one per round trip.
async fn round_trips(redis: &RedisServer, needle: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").arg(1000).query_async(&mut conn).await.unwrap();
    let mut commands = Vec::new();
    for entry in entries {
        let redis::Value::Array(fields) = entry else { continue };
        let Some(redis::Value::Array(args)) = fields.get(3) else { continue };
        // A script's own commands are logged too, from client "?:0".
        if matches!(fields.get(4), Some(redis::Value::BulkString(addr)) if addr.as_slice() == b"?:0") {
            continue;
        }
        let words: Vec<String> = args
            .iter()
            .map(|a| match a {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        if words.iter().any(|w| w.contains(needle)) {
            commands.push(words[0].to_uppercase());
        }
    }
    commands
}

/// Under a shared lease, Acquire and Release each take one Redis round
/// trip on a single node: the script reads the lease, grants the lock with
/// the lease's TTL and records it in the lease's index (Release removes it),
/// instead of separate calls before and after.
#[tokio::test]
async fn shared_lease_acquire_and_release_are_one_round_trip_each() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let lease = c.grant(GrantRequest { ttl_ms: 10_000, owner: "etl".into() }).await.unwrap().into_inner().lease_id;
    // The slow log keeps every command, with the client that sent it.
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    redis.cli(&["CONFIG", "SET", "slowlog-max-len", "1000"]);

    redis.cli(&["SLOWLOG", "RESET"]);
    let got = acquire_lease(&mut c, "one-trip", &lease).await;
    assert!(acquired(&got));
    assert_eq!(round_trips(&redis, "one-trip").await, ["EVALSHA"], "acquire");
    let index = format!("coord:default:lease:{{{lease}}}:locks");
    assert_eq!(redis.cli(&["SMEMBERS", &index]), "one-trip");
    let info = c
        .describe(DescribeRequest { name: "one-trip".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert_eq!(info.owner, "etl", "the lease's owner label");
    assert!(info.ttl_ms > 9_000 && info.ttl_ms <= 10_000, "the lease's TTL: {info:?}");

    redis.cli(&["SLOWLOG", "RESET"]);
    assert_eq!(release(&mut c, "one-trip", &lease).await.status, ReleaseStatus::Released as i32);
    assert_eq!(round_trips(&redis, "one-trip").await, ["EVALSHA"], "release");
    assert_eq!(redis.cli(&["SCARD", &index]), "0", "the index forgets a released lock");

    // A lease that is gone is NOT_FOUND, in the same one call.
    c.revoke(coord::pb::RevokeRequest { lease_id: lease.clone() }).await.unwrap();
    redis.cli(&["SLOWLOG", "RESET"]);
    let err =
        c.acquire(AcquireRequest { name: "one-trip".into(), lease_id: lease, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(round_trips(&redis, "one-trip").await, ["EVALSHA"], "acquire under a gone lease");
}

/// A grant's end is published only when someone listens for it: a release
/// nobody waits for publishes nothing (no event for every instance to
/// read), while one a caller queued for still wakes it, here on another
/// instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_published_only_when_a_waiter_or_stream_listens() {
    let redis = RedisServer::start();
    let a = serving(&redis.url()).await;
    let b = serving(&redis.url()).await;
    let mut c = a.locks();
    let publishes = || {
        let stats = redis.cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .and_then(|v| v.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };

    for i in 0..5 {
        let got = acquire_ttl(&mut c, &format!("quiet{i}"), 5_000, "").await;
        assert_eq!(release(&mut c, &format!("quiet{i}"), &got.lease_id).await.status, ReleaseStatus::Released as i32);
    }
    assert_eq!(publishes(), 0, "nobody listened");

    let held = acquire_ttl(&mut c, "busy", 30_000, "").await;
    let waiter = {
        let mut wc = b.locks();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = wc
                .acquire(AcquireRequest { name: "busy".into(), ttl_ms: 5_000, wait_ms: 20_000, ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            (got, started.elapsed())
        })
    };
    // Until the waiter is queued in Redis.
    let waiters = || async {
        c.clone()
            .describe(DescribeRequest { name: "busy".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .lock
            .unwrap()
            .waiters
    };
    let until = Instant::now() + Duration::from_secs(10);
    while waiters().await == 0 {
        assert!(Instant::now() < until, "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release(&mut c, "busy", &held.lease_id).await;
    let (got, waited) = waiter.await.unwrap();
    assert!(acquired(&got));
    assert!(waited < Duration::from_secs(15), "woken by the event, not the holder's TTL: {waited:?}");
    assert_eq!(publishes(), 1, "one event, for the waiter");
}
