//! Read/write locks (LockService Acquire with a mode) on real Redis: many
//! readers or one writer, never both; writer-preferring (a waiting writer
//! blocks readers that arrive after it); no re-entry or upgrade, refused at
//! once rather than deadlocking; one fencing counter across both modes; a
//! name's read/write lock is separate from its plain lock; holds under a
//! lease are renewed and reported lost like any lock.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use coord::pb::{
    AcquireRequest, AcquireResponse, AcquireStatus, DescribeRequest, ForceReleaseRequest, GrantRequest, HoldKind,
    KeepAliveRequest, LockLostReason, LockMode, ReleaseRequest, ReleaseStatus, keep_alive_response::Event,
    lock_service_client::LockServiceClient,
};
use support::{keepalive::next_lost, redis::RedisServer, serving};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::{Code, transport::Channel};

type Client = LockServiceClient<Channel>;

fn req(name: &str, mode: LockMode) -> AcquireRequest {
    AcquireRequest { name: name.into(), ttl_ms: 30_000, mode: mode as i32, owner: "t".into(), ..Default::default() }
}

async fn acquire(c: &mut Client, r: AcquireRequest) -> AcquireResponse {
    c.acquire(r).await.expect("acquire").into_inner()
}

async fn held(c: &mut Client, r: AcquireRequest) -> AcquireResponse {
    let got = acquire(c, r).await;
    assert_eq!(got.status, AcquireStatus::Acquired as i32, "{got:?}");
    got
}

async fn release(c: &mut Client, name: &str, got: &AcquireResponse) -> i32 {
    c.release(ReleaseRequest { name: name.into(), lease_id: got.lease_id.clone(), mode: LockMode::Shared as i32 })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_a_writer_excludes_and_a_waiting_writer_blocks_new_readers() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let r1 = held(&mut c, req("doc", LockMode::Shared)).await;
    let r2 = held(&mut c, req("doc", LockMode::Shared)).await;
    assert!(r2.fencing_token > r1.fencing_token);
    let busy = acquire(&mut c, req("doc", LockMode::Exclusive)).await;
    assert_eq!(busy.status, AcquireStatus::NotAcquired as i32, "readers hold it");

    // A writer waits; a reader arriving after it waits behind it.
    let writer = {
        let mut c = coord.locks();
        tokio::spawn(async move {
            let got = acquire(&mut c, AcquireRequest { wait_ms: 10_000, ..req("doc", LockMode::Exclusive) }).await;
            (Instant::now(), got)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reader = {
        let mut c = coord.locks();
        tokio::spawn(async move {
            let got = acquire(&mut c, AcquireRequest { wait_ms: 10_000, ..req("doc", LockMode::Shared) }).await;
            (Instant::now(), got)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!reader.is_finished(), "a waiting writer blocks new readers");
    let info = c
        .describe(DescribeRequest { name: "doc".into(), mode: LockMode::Shared as i32 })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert_eq!(
        (info.held, info.mode, info.hold_count, info.holders.len(), info.waiters),
        (true, LockMode::Shared as i32, 2, 2, 2)
    );
    release(&mut c, "doc", &r1).await;
    release(&mut c, "doc", &r2).await;
    let (w_at, w) = writer.await.unwrap();
    assert_eq!(w.status, AcquireStatus::Acquired as i32);
    assert!(w.fencing_token > r2.fencing_token, "one counter across modes");
    let info = c
        .describe(DescribeRequest { name: "doc".into(), mode: LockMode::Exclusive as i32 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.lock.unwrap().mode, LockMode::Exclusive as i32);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reader.is_finished(), "the writer excludes readers");
    release(&mut c, "doc", &w).await;
    let (r_at, r) = reader.await.unwrap();
    assert_eq!(r.status, AcquireStatus::Acquired as i32);
    assert!(r_at > w_at && r.fencing_token > w.fencing_token);
}

/// Re-entry and upgrade are refused at once with FAILED_PRECONDITION,
/// even with a long wait: the alternative is a lease waiting on itself.
#[tokio::test]
async fn a_lease_asking_again_is_refused_never_deadlocked() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let lease = c.grant(GrantRequest { ttl_ms: 10_000, owner: "x".into() }).await.unwrap().into_inner().lease_id;
    let under = |mode| AcquireRequest { lease_id: lease.clone(), ttl_ms: 0, wait_ms: 5_000, ..req("up", mode) };
    let read = held(&mut c, under(LockMode::Shared)).await;
    for mode in [LockMode::Exclusive, LockMode::Shared] {
        let start = Instant::now();
        let err = c.acquire(under(mode)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{mode:?}");
        assert!(err.message().contains("upgradable"), "{}", err.message());
        assert!(start.elapsed() < Duration::from_secs(1), "refused at once");
    }
    release(&mut c, "up", &read).await;
    let write = held(&mut c, under(LockMode::Exclusive)).await;
    assert_eq!(c.acquire(under(LockMode::Shared)).await.unwrap_err().code(), Code::FailedPrecondition);
    // The plain lock of the same name is a separate lock.
    let plain = acquire(&mut c, AcquireRequest { name: "up".into(), ttl_ms: 1_000, ..Default::default() }).await;
    assert_eq!(plain.status, AcquireStatus::Acquired as i32);
    assert_eq!(release(&mut c, "up", &write).await, ReleaseStatus::Released as i32);
    assert_eq!(release(&mut c, "up", &write).await, ReleaseStatus::NotHeld as i32);
    let err = c.acquire(AcquireRequest { request_id: "r1".into(), ..req("up", LockMode::Shared) }).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().starts_with("request_id"), "{err:?}");
    let err = c.acquire(AcquireRequest { mode: 9, ..req("up", LockMode::Shared) }).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().starts_with("mode"), "{err:?}");
}

/// 6 readers and 2 writers loop on one lock: by their own counts a writer
/// never overlaps anyone, readers do overlap, and everyone gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_writers_never_overlap() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let readers = Arc::new(AtomicI64::new(0));
    let writers = Arc::new(AtomicI64::new(0));
    let max_readers = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (mut c, readers, writers, max_readers) =
                (coord.locks(), readers.clone(), writers.clone(), max_readers.clone());
            tokio::spawn(async move {
                let mode = if i < 2 { LockMode::Exclusive } else { LockMode::Shared };
                for _ in 0..12 {
                    let got = held(&mut c, AcquireRequest { wait_ms: 20_000, ..req("shared-doc", mode) }).await;
                    if mode == LockMode::Exclusive {
                        assert_eq!(writers.fetch_add(1, Ordering::SeqCst), 0, "two writers");
                        assert_eq!(readers.load(Ordering::SeqCst), 0, "a writer with readers");
                        tokio::time::sleep(Duration::from_millis(3)).await;
                        writers.fetch_sub(1, Ordering::SeqCst);
                    } else {
                        let now = readers.fetch_add(1, Ordering::SeqCst) + 1;
                        max_readers.fetch_max(now, Ordering::SeqCst);
                        assert_eq!(writers.load(Ordering::SeqCst), 0, "a reader with a writer");
                        tokio::time::sleep(Duration::from_millis(3)).await;
                        readers.fetch_sub(1, Ordering::SeqCst);
                    }
                    assert_eq!(release(&mut c, "shared-doc", &got).await, ReleaseStatus::Released as i32);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(max_readers.load(Ordering::SeqCst) >= 2, "readers shared the lock");
}

/// A read hold under a shared lease is renewed by KeepAlive; an admin's
/// ForceRelease (mode + token) is reported as LockLost READ_WRITE_LOCK.
#[tokio::test]
async fn read_holds_are_renewed_by_the_lease_and_their_loss_reported() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let lease = c.grant(GrantRequest { ttl_ms: 400, owner: "x".into() }).await.unwrap().into_inner().lease_id;
    let got = held(&mut c, AcquireRequest { lease_id: lease.clone(), ttl_ms: 0, ..req("cfg", LockMode::Shared) }).await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut stream = c.keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let until = Instant::now() + Duration::from_millis(1600);
    while Instant::now() < until {
        tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
        let msg = stream.next().await.unwrap().unwrap();
        assert!(matches!(msg.event, Some(Event::Renewed(ref r)) if r.ttl_ms == 400), "{msg:?}");
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let info = c
        .describe(DescribeRequest { name: "cfg".into(), mode: LockMode::Shared as i32 })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    assert_eq!((info.held, info.lease_id.as_str()), (true, lease.as_str()), "outlived 4 TTLs");
    let forced = c
        .force_release(ForceReleaseRequest {
            name: "cfg".into(),
            mode: LockMode::Shared as i32,
            fencing_token: got.fencing_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.released);
    let lost = next_lost(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        (lost.kind, lost.reason, lost.fencing_token),
        (HoldKind::ReadWriteLock as i32, LockLostReason::ForceReleased as i32, got.fencing_token)
    );
}
