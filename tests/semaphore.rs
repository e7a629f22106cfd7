//! SemaphoreService on real Redis, as clients use it: permits all or
//! nothing and never more than the size under 16 concurrent clients; FIFO
//! fairness (a large request is served while small ones keep arriving);
//! waiters woken by notification; permits of crashed holders come back
//! within one TTL; leases renew permits on the KeepAlive stream, which
//! reports their loss (force-release, revocation) with kind SEMAPHORE;
//! cancelled waits leave nothing behind; bad input is INVALID_ARGUMENT.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use coord::pb::{
    GrantRequest, HoldKind, LockLostReason, RevokeRequest, SemaphoreAcquireStatus, SemaphoreReleaseStatus,
    SemaphoreServiceAcquireRequest, SemaphoreServiceAcquireResponse, SemaphoreServiceDescribeRequest,
    SemaphoreServiceDescribeResponse, SemaphoreServiceForceReleaseRequest, SemaphoreServiceReleaseRequest,
    SemaphoreServiceResizeRequest, keep_alive_response::Event, semaphore_service_client::SemaphoreServiceClient,
};
use support::{
    keepalive::{keep_renewing, next_lost, open_stream},
    redis::RedisServer,
    serving,
};
use tonic::{Code, transport::Channel};

type Sems = SemaphoreServiceClient<Channel>;

fn acquire_req(name: &str, permits: u32, size: u32) -> SemaphoreServiceAcquireRequest {
    SemaphoreServiceAcquireRequest {
        name: name.into(),
        permits,
        size,
        ttl_ms: 30_000,
        owner: "test".into(),
        ..Default::default()
    }
}

async fn acquire(c: &mut Sems, req: SemaphoreServiceAcquireRequest) -> SemaphoreServiceAcquireResponse {
    c.acquire(req).await.expect("acquire").into_inner()
}

async fn granted(c: &mut Sems, req: SemaphoreServiceAcquireRequest) -> SemaphoreServiceAcquireResponse {
    let name = req.name.clone();
    let got = acquire(c, req).await;
    assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32, "{name}: {got:?}");
    got
}

async fn release(c: &mut Sems, name: &str, got: &SemaphoreServiceAcquireResponse) -> i32 {
    c.release(SemaphoreServiceReleaseRequest {
        name: name.into(),
        permit_id: got.permit_id,
        lease_id: got.lease_id.clone(),
    })
    .await
    .expect("release")
    .into_inner()
    .status
}

async fn describe(c: &mut Sems, name: &str) -> SemaphoreServiceDescribeResponse {
    c.describe(SemaphoreServiceDescribeRequest { name: name.into(), limit: 0 }).await.unwrap().into_inner()
}

/// 16 clients take 1–3 permits of a 5-permit semaphore, waiting, hold them
/// briefly and give them back: by the clients' own count no more than 5
/// are ever held, every request is served, and all permits come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_never_hold_more_than_the_size() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let held = Arc::new(AtomicI64::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..16u64)
        .map(|w| {
            let (mut c, held, peak) = (coord.semaphores(), held.clone(), peak.clone());
            tokio::spawn(async move {
                let mut seed = w * 7919 + 1;
                for _ in 0..15 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let n = (seed % 3 + 1) as i64;
                    let got = granted(
                        &mut c,
                        SemaphoreServiceAcquireRequest { wait_ms: 20_000, ..acquire_req("pool", n as u32, 5) },
                    )
                    .await;
                    let now = held.fetch_add(n, Ordering::SeqCst) + n;
                    peak.fetch_max(now, Ordering::SeqCst);
                    assert!(now <= 5, "{now} permits held, size 5");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    held.fetch_sub(n, Ordering::SeqCst);
                    assert_eq!(release(&mut c, "pool", &got).await, SemaphoreReleaseStatus::Released as i32);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) >= 3, "the permits were used concurrently");
    let info = describe(&mut coord.semaphores(), "pool").await;
    assert_eq!((info.size, info.used, info.waiters, info.holders.len()), (5, 0, 0, 0), "{info:?}");
}

/// FIFO: a 10-permit request waits at the head while 1-permit requests keep
/// arriving and queue behind it; it is served once the first ten holders
/// give theirs back, before any late small request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_is_served_while_small_ones_keep_arriving() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(granted(&mut c, acquire_req("fair", 1, 10)).await);
    }
    let big = {
        let mut c = coord.semaphores();
        tokio::spawn(async move {
            let got =
                acquire(&mut c, SemaphoreServiceAcquireRequest { wait_ms: 20_000, ..acquire_req("fair", 10, 10) })
                    .await;
            (Instant::now(), got)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = Vec::new();
    for (i, got) in held.iter().enumerate() {
        // A small request arrives behind the big one...
        let mut lc = coord.semaphores();
        late.push(tokio::spawn(async move {
            let got =
                acquire(&mut lc, SemaphoreServiceAcquireRequest { wait_ms: 20_000, ..acquire_req("fair", 1, 10) })
                    .await;
            (Instant::now(), got)
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...and a permit comes back: it goes to nobody but the head.
        release(&mut c, "fair", got).await;
        if i < 9 {
            assert!(!big.is_finished(), "the big request waits for all ten");
        }
    }
    let (big_at, big_got) = big.await.unwrap();
    assert_eq!(big_got.status, SemaphoreAcquireStatus::Acquired as i32, "{big_got:?}");
    assert!(late.iter().all(|t| !t.is_finished()), "no small request jumped ahead");
    release(&mut c, "fair", &big_got).await;
    for t in late {
        let (at, got) = t.await.unwrap();
        assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32);
        assert!(at > big_at, "served after the big request");
    }
}

/// A release wakes a waiter through pub/sub: it gets its permit far sooner
/// than it would by polling (waiters try again every 2 s on their own).
#[tokio::test]
async fn a_release_wakes_the_waiter_by_notification() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let other = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    let mut waits = Vec::new();
    for round in 0..5 {
        let got = granted(&mut c, acquire_req("wake", 2, 2)).await;
        // Waiting on another instance: the wake-up crosses Redis pub/sub.
        let mut oc = other.semaphores();
        let waiter = tokio::spawn(async move {
            let got =
                acquire(&mut oc, SemaphoreServiceAcquireRequest { wait_ms: 10_000, ..acquire_req("wake", 2, 2) }).await;
            (Instant::now(), got)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let released_at = Instant::now();
        release(&mut c, "wake", &got).await;
        let (at, w) = waiter.await.unwrap();
        assert_eq!(w.status, SemaphoreAcquireStatus::Acquired as i32, "round {round}");
        waits.push(at - released_at);
        release(&mut c, "wake", &w).await;
    }
    waits.sort();
    assert!(waits[2] < Duration::from_millis(1000), "median wake-up {:?} (polling would take ~2 s)", waits[2]);
}

/// A holder that crashed (no renewals) loses its permits when its TTL runs
/// out: a waiter gets them within about one TTL.
#[tokio::test]
async fn a_crashed_holders_permits_come_back_within_one_ttl() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    granted(&mut c, SemaphoreServiceAcquireRequest { ttl_ms: 400, ..acquire_req("crash", 3, 3) }).await;
    let start = Instant::now();
    let got = acquire(&mut c, SemaphoreServiceAcquireRequest { wait_ms: 10_000, ..acquire_req("crash", 3, 3) }).await;
    assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(2500), "took {took:?}");
}

/// Permits under a shared lease live as long as the lease is renewed (many
/// TTLs); a force-release is reported on the stream with kind SEMAPHORE and
/// the permit id; the other permit stays.
#[tokio::test]
async fn keepalive_renews_permits_and_reports_a_force_release() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut locks = coord.locks();
    let lease =
        locks.grant(GrantRequest { ttl_ms: 500, owner: "worker-1".into() }).await.unwrap().into_inner().lease_id;
    let mut c = coord.semaphores();
    let lease_req = |name: &str, n| SemaphoreServiceAcquireRequest {
        lease_id: lease.clone(),
        ttl_ms: 0,
        owner: String::new(),
        ..acquire_req(name, n, 4)
    };
    let a = granted(&mut c, lease_req("renewed", 2)).await;
    let b = granted(&mut c, lease_req("renewed", 1)).await;
    assert_eq!((a.lease_id.as_str(), a.ttl_ms <= 500), (lease.as_str(), true));
    let info = describe(&mut c, "renewed").await;
    assert!(info.holders.iter().all(|h| h.owner == "worker-1"), "the lease's owner label: {info:?}");

    let (tx, mut stream) = open_stream(&mut coord.locks()).await;
    let events = keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(150),
        Instant::now() + Duration::from_millis(2000),
    )
    .await;
    assert!(events.iter().all(|e| matches!(e, Event::Renewed(r) if r.ttl_ms == 500)), "{events:?}");
    assert_eq!(describe(&mut c, "renewed").await.used, 3, "both grants outlived 4 TTLs");

    let forced = c
        .force_release(SemaphoreServiceForceReleaseRequest { name: "renewed".into(), permit_id: a.permit_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((forced.released, forced.permits, forced.lease_id.as_str()), (true, 2, lease.as_str()));
    let lost = next_lost(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        (lost.kind, lost.reason, lost.fencing_token, lost.name.as_str()),
        (HoldKind::Semaphore as i32, LockLostReason::ForceReleased as i32, a.permit_id, "renewed")
    );
    let events = keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(150),
        Instant::now() + Duration::from_millis(800),
    )
    .await;
    assert!(events.iter().all(|e| matches!(e, Event::Renewed(_))), "nothing else is lost: {events:?}");
    assert_eq!(describe(&mut c, "renewed").await.used, 1);
    assert_eq!(release(&mut c, "renewed", &b).await, SemaphoreReleaseStatus::Released as i32);
    let events = keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(150),
        Instant::now() + Duration::from_millis(500),
    )
    .await;
    assert!(events.iter().all(|e| matches!(e, Event::Renewed(_))), "a release is not a loss: {events:?}");
}

/// Revoking a lease on another instance gives its permits back at once and
/// tells the stream renewing it (LEASE_REVOKED); a private lease from an
/// Acquire with ttl_ms is renewed by KeepAlive like any lease.
#[tokio::test]
async fn revoking_a_lease_returns_its_permits_and_private_leases_renew() {
    let redis = RedisServer::start();
    let a = serving(&redis.url()).await;
    let b = serving(&redis.url()).await;
    let lease = a.locks().grant(GrantRequest { ttl_ms: 5_000, owner: "w".into() }).await.unwrap().into_inner().lease_id;
    let mut c = a.semaphores();
    let got = granted(
        &mut c,
        SemaphoreServiceAcquireRequest { lease_id: lease.clone(), ttl_ms: 0, ..acquire_req("rev", 2, 2) },
    )
    .await;
    let (tx, mut stream) = open_stream(&mut a.locks()).await;
    keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(100),
        Instant::now() + Duration::from_millis(300),
    )
    .await;
    let revoked = b.locks().revoke(RevokeRequest { lease_id: lease.clone() }).await.unwrap().into_inner();
    assert_eq!(revoked.released, vec!["rev".to_owned()]);
    let lost = next_lost(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        (lost.kind, lost.reason, lost.fencing_token),
        (HoldKind::Semaphore as i32, LockLostReason::LeaseRevoked as i32, got.permit_id)
    );
    assert_eq!(describe(&mut c, "rev").await.used, 0, "permits back at once, not after a TTL");

    // A private lease: renewed well past its TTL, then gone within it.
    let private = granted(&mut c, SemaphoreServiceAcquireRequest { ttl_ms: 400, ..acquire_req("rev", 1, 2) }).await;
    assert!(private.lease_id.starts_with('q'), "{}", private.lease_id);
    let events = keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&private.lease_id),
        Duration::from_millis(120),
        Instant::now() + Duration::from_millis(1500),
    )
    .await;
    assert!(events.iter().all(|e| matches!(e, Event::Renewed(r) if r.ttl_ms == 400)), "{events:?}");
    assert_eq!(describe(&mut c, "rev").await.used, 1);
    drop(tx);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(describe(&mut c, "rev").await.used, 0, "expired without renewals");
}

/// A waiting Acquire whose caller goes away (its deadline passes) leaves
/// no waiter and takes nothing, and the waiter behind it is woken.
#[tokio::test]
async fn a_cancelled_wait_leaves_nothing_behind() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    let held = granted(&mut c, acquire_req("cancel", 1, 2)).await;
    // A 2-permit request waits at the head; the client gives up after 300 ms.
    let mut req =
        tonic::Request::new(SemaphoreServiceAcquireRequest { wait_ms: 60_000, ..acquire_req("cancel", 2, 2) });
    req.set_timeout(Duration::from_millis(300));
    // The wait ends at the deadline: NOT_ACQUIRED, or DEADLINE_EXCEEDED
    // when the answer arrives too late.
    match coord.semaphores().acquire(req).await {
        Ok(reply) => assert_eq!(reply.into_inner().status, SemaphoreAcquireStatus::NotAcquired as i32),
        Err(err) => assert_eq!(err.code(), Code::DeadlineExceeded),
    }
    // A 1-permit request behind it would have been held back by it.
    let start = Instant::now();
    let got = acquire(&mut c, SemaphoreServiceAcquireRequest { wait_ms: 5_000, ..acquire_req("cancel", 1, 2) }).await;
    assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32);
    assert!(start.elapsed() < Duration::from_secs(1), "the cancelled waiter left the head: {:?}", start.elapsed());
    let info = describe(&mut c, "cancel").await;
    assert_eq!((info.used, info.waiters), (2, 0), "{info:?}");
    release(&mut c, "cancel", &held).await;
    release(&mut c, "cancel", &got).await;
    let queue = redis.cli(&["ZCARD", "coord:default:sem:{cancel}:queue"]);
    assert_eq!(queue, "0", "nothing left in the queue");

    // A call dropped by its client mid-wait (no deadline) is cancelled on
    // the server: it leaves the queue at once.
    let held = granted(&mut c, acquire_req("cancel", 2, 2)).await;
    let mut dc = coord.semaphores();
    let dropped = tokio::spawn(async move {
        dc.acquire(SemaphoreServiceAcquireRequest { wait_ms: 60_000, ..acquire_req("cancel", 2, 2) }).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(describe(&mut c, "cancel").await.waiters, 1);
    dropped.abort();
    let deadline = Instant::now() + Duration::from_secs(2);
    while describe(&mut c, "cancel").await.waiters != 0 {
        assert!(Instant::now() < deadline, "the dropped call still waits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release(&mut c, "cancel", &held).await;
    assert_eq!(describe(&mut c, "cancel").await.used, 0, "the dropped call took nothing");
}

/// Resize: growing wakes the waiters that now fit; shrinking keeps holders'
/// permits; Describe shows size, use, holders (owners) and waiters.
#[tokio::test]
async fn resize_and_describe() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    assert_eq!(describe(&mut c, "rs").await.size, 0, "no such semaphore");
    let a = granted(&mut c, acquire_req("rs", 2, 2)).await;
    let waiter = {
        let mut c = coord.semaphores();
        tokio::spawn(async move {
            acquire(&mut c, SemaphoreServiceAcquireRequest { wait_ms: 10_000, ..acquire_req("rs", 2, 2) }).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = describe(&mut c, "rs").await;
    assert_eq!((info.size, info.used, info.waiters), (2, 2, 1));
    assert_eq!(
        (info.holders[0].permit_id, info.holders[0].permits, info.holders[0].owner.as_str()),
        (a.permit_id, 2, "test")
    );
    let start = Instant::now();
    let resized = c.resize(SemaphoreServiceResizeRequest { name: "rs".into(), size: 4 }).await.unwrap().into_inner();
    assert_eq!((resized.previous_size, resized.used, resized.woken), (2, 2, 1));
    let got = waiter.await.unwrap();
    assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32);
    assert!(start.elapsed() < Duration::from_secs(1), "woken by the resize");
    let shrunk = c.resize(SemaphoreServiceResizeRequest { name: "rs".into(), size: 1 }).await.unwrap().into_inner();
    assert_eq!((shrunk.previous_size, shrunk.used), (4, 4));
    let err = c.acquire(acquire_req("rs", 2, 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("permits") && err.message().contains('1'), "{}", err.message());
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    let cases: Vec<(SemaphoreServiceAcquireRequest, &str)> = vec![
        (acquire_req("x", 0, 1), "permits"),
        (acquire_req("x", 1, 1_000_001), "size"),
        (acquire_req("", 1, 1), "name"),
        (acquire_req(&"n".repeat(513), 1, 1), "name"),
        (SemaphoreServiceAcquireRequest { ttl_ms: 0, ..acquire_req("x", 1, 1) }, "lease_id"),
        (SemaphoreServiceAcquireRequest { lease_id: "l0".into(), ..acquire_req("x", 1, 1) }, "ttl_ms"),
        (SemaphoreServiceAcquireRequest { lease_id: "nope".into(), ttl_ms: 0, ..acquire_req("x", 1, 1) }, "lease_id"),
        (SemaphoreServiceAcquireRequest { wait_ms: -1, ..acquire_req("x", 1, 1) }, "wait_ms"),
        (SemaphoreServiceAcquireRequest { wait_ms: 10_000_000, ..acquire_req("x", 1, 1) }, "wait_ms"),
        (SemaphoreServiceAcquireRequest { owner: "o".repeat(257), ..acquire_req("x", 1, 1) }, "owner"),
    ];
    for (req, field) in cases {
        let err = c.acquire(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }
    let err = c
        .release(SemaphoreServiceReleaseRequest { name: "x".into(), permit_id: 0, lease_id: "l0".into() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("permit_id"), "{}", err.message());
    let err = c.resize(SemaphoreServiceResizeRequest { name: "x".into(), size: 0 }).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().starts_with("size"), "{err:?}");
    // A lock's private lease cannot hold permits.
    let lock_lease = format!("p{}.x", "0".repeat(32));
    let err = c
        .acquire(SemaphoreServiceAcquireRequest { lease_id: lock_lease, ttl_ms: 0, ..acquire_req("x", 1, 1) })
        .await
        .unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().starts_with("lease_id"), "{err:?}");
    // Nothing was written by any of them.
    assert_eq!(describe(&mut c, "x").await.size, 0);
}

/// Regression: a release that frees room for several waiters serves them
/// all at once. (The first version granted only the head of the queue; the
/// rest of the woken run waited for their next 2 s retry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiter_a_release_makes_room_for_is_served_at_once() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    let all = granted(&mut c, acquire_req("batch", 4, 4)).await;
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let mut c = coord.semaphores();
            tokio::spawn(async move {
                let got =
                    acquire(&mut c, SemaphoreServiceAcquireRequest { wait_ms: 10_000, ..acquire_req("batch", 1, 4) })
                        .await;
                (Instant::now(), got)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    release(&mut c, "batch", &all).await;
    for w in waiters {
        let (at, got) = w.await.unwrap();
        assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32);
        assert!(at - released < Duration::from_millis(1000), "served {:?} after the release", at - released);
    }
}

/// Regression (found by tests/fuzz.rs): names hold any characters, and a
/// private lease's id holds its name, so grants under names with spaces,
/// newlines or `<id>` are described, renewed, released and revoked like
/// any other. (Grants were stored space-separated: Describe failed with
/// INTERNAL, and such grants could be neither renewed nor released.)
#[tokio::test]
async fn names_with_any_characters_work_end_to_end() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    for name in ["ünï cødé ✓ 🔒", "two\nlines", "a <id> b", " "] {
        let private = granted(&mut c, SemaphoreServiceAcquireRequest { ttl_ms: 400, ..acquire_req(name, 1, 3) }).await;
        let (tx, mut stream) = open_stream(&mut coord.locks()).await;
        let events = keep_renewing(
            &tx,
            &mut stream,
            std::slice::from_ref(&private.lease_id),
            Duration::from_millis(120),
            Instant::now() + Duration::from_millis(900),
        )
        .await;
        assert!(events.iter().all(|e| matches!(e, Event::Renewed(r) if r.ttl_ms == 400)), "{name:?}: {events:?}");
        let info = describe(&mut c, name).await;
        assert_eq!((info.used, info.holders.len()), (1, 1), "{name:?}: renewed past its TTL");
        assert_eq!(
            (info.holders[0].lease_id.as_str(), info.holders[0].owner.as_str()),
            (private.lease_id.as_str(), "test")
        );
        assert_eq!(release(&mut c, name, &private).await, SemaphoreReleaseStatus::Released as i32, "{name:?}");

        // Under a shared lease: Revoke finds the grant through the lease's index.
        let lease =
            coord.locks().grant(GrantRequest { ttl_ms: 5_000, owner: "o".into() }).await.unwrap().into_inner().lease_id;
        let shared = SemaphoreServiceAcquireRequest { lease_id: lease.clone(), ttl_ms: 0, ..acquire_req(name, 2, 3) };
        let got = granted(&mut c, shared.clone()).await;
        assert_eq!(release(&mut c, name, &got).await, SemaphoreReleaseStatus::Released as i32);
        granted(&mut c, shared).await;
        let revoked = coord.locks().revoke(RevokeRequest { lease_id: lease }).await.unwrap().into_inner();
        assert_eq!(revoked.released, vec![name.to_owned()], "only the live grant: the released one left the index");
        assert_eq!(describe(&mut c, name).await.used, 0, "{name:?}");
    }
}

/// A grant force-released before its stream renewed it even once is still
/// reported, as for locks: under a shared lease the stream already watches
/// (the pub/sub event names the lease), and under a private lease whose
/// first renewal comes after the force (the tombstone says how it ended).
/// (Before: only grants the stream had seen held were reported, so such a
/// holder heard nothing, or only a TTL of 0.)
#[tokio::test]
async fn a_grant_forced_before_its_first_renewal_is_reported() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.semaphores();
    let mut locks = coord.locks();
    let (tx, mut stream) = open_stream(&mut locks).await;
    let lease = locks.grant(GrantRequest { ttl_ms: 5_000, owner: "svc".into() }).await.unwrap().into_inner().lease_id;
    keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(50),
        Instant::now() + Duration::from_millis(120),
    )
    .await;
    let shared =
        granted(&mut c, SemaphoreServiceAcquireRequest { lease_id: lease, ttl_ms: 0, ..acquire_req("early", 1, 2) })
            .await;
    let forced = c
        .force_release(SemaphoreServiceForceReleaseRequest { name: "early".into(), permit_id: shared.permit_id })
        .await
        .unwrap();
    assert!(forced.into_inner().released);
    let lost = next_lost(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        (lost.kind, lost.reason, lost.fencing_token),
        (HoldKind::Semaphore as i32, LockLostReason::ForceReleased as i32, shared.permit_id)
    );

    let private = granted(&mut c, acquire_req("early", 1, 2)).await;
    c.force_release(SemaphoreServiceForceReleaseRequest { name: "early".into(), permit_id: private.permit_id })
        .await
        .unwrap();
    tx.send(coord::pb::KeepAliveRequest { lease_id: private.lease_id.clone() }).await.unwrap();
    let lost = next_lost(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        (lost.kind, lost.reason, lost.fencing_token, lost.lease_id.as_str()),
        (
            HoldKind::Semaphore as i32,
            LockLostReason::ForceReleased as i32,
            private.permit_id,
            private.lease_id.as_str()
        )
    );
}
