//! The Rust client (`coord::client`): a guard keeps its lock past many
//! TTLs, fencing tokens increase across guards, dropping or releasing a
//! guard frees the lock, a waiter gets it then; `lost()` resolves with the
//! pushed reason on ForceRelease and about a TTL after the backend goes
//! away, but a coord restart on the same Redis is ridden out.

mod support;

use std::time::{Duration, Instant};

use coord::{
    client::{ClientError, LockClient, LockGuard, LockOptions},
    pb::{DescribeRequest, ForceReleaseRequest, LockInfo, LockLostReason, ReleaseStatus},
};
use support::{Coord, redis::RedisServer, serving};

fn client(coord: &Coord) -> LockClient {
    LockClient::new(coord.channel())
}

fn opts(ttl_ms: u64) -> LockOptions {
    LockOptions { ttl: Duration::from_millis(ttl_ms), owner: "test".into(), ..Default::default() }
}

async fn describe(coord: &Coord, name: &str) -> LockInfo {
    coord
        .locks()
        .describe(DescribeRequest { name: name.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap()
}

/// Polls Describe until the lock is free; returns how long that took.
async fn wait_free(coord: &Coord, name: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while describe(coord, name).await.held {
        assert!(start.elapsed() < within, "{name} still held after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[test]
fn client_and_guard_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LockClient>();
    send_sync::<LockGuard>();
}

#[tokio::test]
async fn guard_keeps_the_lock_past_several_ttls() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let guard = client(&coord).lock("long-job", opts(1_000)).await.unwrap();
    assert_eq!(guard.ttl(), Duration::from_secs(1));

    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let info = describe(&coord, "long-job").await;
    assert!(info.held, "still held after 3.5 TTLs: {info:?}");
    assert_eq!((info.lease_id.as_str(), info.fencing_token), (guard.lease_id(), guard.fencing_token()));
    assert_eq!(info.owner, "test");
    assert!(!guard.is_lost());
    assert!(tokio::time::timeout(Duration::from_millis(100), guard.lost()).await.is_err(), "not lost");
}

#[tokio::test]
async fn fencing_tokens_increase_and_a_waiter_gets_the_lock_once_the_holder_releases() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let c = client(&coord);
    let first = c.lock("ledger", opts(5_000)).await.unwrap();
    let first_token = first.fencing_token();

    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let options = LockOptions { wait: Duration::from_secs(20), ..opts(5_000) };
            let guard = c.lock("ledger", options).await;
            (guard, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the waiter waits while the lock is held");
    assert_eq!(describe(&coord, "ledger").await.waiters, 1);

    let released_at = Instant::now();
    assert_eq!(first.release().await.unwrap(), ReleaseStatus::Released);
    let (second, waited) = waiter.await.unwrap();
    let second = second.unwrap();
    assert!(waited >= Duration::from_millis(400), "waited {waited:?}");
    // Woken by the release, long before the 5 s TTL would have run out.
    assert!(released_at.elapsed() < Duration::from_secs(3), "took {:?}", released_at.elapsed());
    assert!(second.fencing_token() > first_token, "{} after {first_token}", second.fencing_token());
    assert_eq!(describe(&coord, "ledger").await.fencing_token, second.fencing_token());

    let second_token = second.fencing_token();
    drop(second);
    wait_free(&coord, "ledger", Duration::from_secs(3)).await;
    let third = c.lock("ledger", opts(5_000)).await.unwrap();
    assert!(third.fencing_token() > second_token, "{} after {second_token}", third.fencing_token());
}

#[tokio::test]
async fn tokens_strictly_increase_across_successive_guards() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let c = client(&coord);
    let mut last = 0;
    for _ in 0..5 {
        let guard = c.lock("counter", opts(2_000)).await.unwrap();
        assert!(guard.fencing_token() > last, "{} after {last}", guard.fencing_token());
        last = guard.fencing_token();
        assert_eq!(guard.release().await.unwrap(), ReleaseStatus::Released);
    }
}

#[tokio::test]
async fn dropping_the_guard_releases_the_lock_without_waiting_for_the_ttl() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let guard = client(&coord).lock("dropped", opts(30_000)).await.unwrap();
    let token = guard.fencing_token();
    drop(guard);

    let start = Instant::now();
    let options = LockOptions { wait: Duration::from_secs(10), ..opts(30_000) };
    let next = client(&coord).lock("dropped", options).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?} (TTL 30 s)", start.elapsed());
    assert!(next.fencing_token() > token);
}

#[tokio::test]
async fn explicit_release_answers_released_and_frees_the_lock() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let guard = client(&coord).lock("report", opts(10_000)).await.unwrap();
    let lost = guard.lost();
    assert!(describe(&coord, "report").await.held);
    assert_eq!(guard.release().await.unwrap(), ReleaseStatus::Released);
    assert!(!describe(&coord, "report").await.held);
    // Releasing is not losing: a loss future taken before stays pending.
    assert!(tokio::time::timeout(Duration::from_millis(300), lost).await.is_err());
}

#[tokio::test]
async fn force_release_resolves_lost_with_force_released() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let guard = client(&coord).lock("victim", opts(2_000)).await.unwrap();
    let lost = guard.lost();
    tokio::time::sleep(Duration::from_millis(200)).await; // the stream is up
    assert!(!guard.is_lost());

    let start = Instant::now();
    let forced =
        coord.locks().force_release(ForceReleaseRequest { name: "victim".into(), ..Default::default() }).await.unwrap();
    assert!(forced.into_inner().released);
    let lost = tokio::time::timeout(Duration::from_secs(5), lost).await.expect("lost() resolves");
    assert_eq!(lost.reason, LockLostReason::ForceReleased, "{lost:?}");
    assert_eq!(lost.fencing_token, guard.fencing_token());
    // Pushed by coord: well before the 2 s TTL would have told.
    assert!(start.elapsed() < Duration::from_millis(1_500), "took {:?}", start.elapsed());
    assert!(guard.is_lost());
    assert!(lost.to_string().contains("FORCE_RELEASED"), "{lost}");
    // Any number of times, also after the fact.
    let again = tokio::time::timeout(Duration::from_millis(100), guard.lost()).await.expect("at once");
    assert_eq!(again, lost);
    assert_eq!(guard.release().await.unwrap(), ReleaseStatus::NotHeld);
}

#[tokio::test]
async fn not_acquired_when_held_and_wait_is_zero_names_the_holder() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let options = LockOptions { owner: "alice@host-1".into(), ..opts(10_000) };
    let _held = client(&coord).lock("busy", options).await.unwrap();

    let start = Instant::now();
    match client(&coord).lock("busy", opts(10_000)).await {
        Err(ClientError::NotAcquired { name, holder_owner, holder_ttl }) => {
            assert_eq!((name.as_str(), holder_owner.as_str()), ("busy", "alice@host-1"));
            assert!(holder_ttl > Duration::ZERO && holder_ttl <= Duration::from_secs(10), "{holder_ttl:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "wait 0 tries once");
}

#[tokio::test]
async fn namespaces_keep_locks_apart() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let shop = client(&coord).with_namespace("shop").unwrap();
    let _in_shop = shop.lock("orders", opts(5_000)).await.unwrap();
    assert!(!describe(&coord, "orders").await.held, "not in the default namespace");
    let _in_default = client(&coord).lock("orders", opts(5_000)).await.unwrap();
    assert!(matches!(shop.lock("orders", opts(5_000)).await, Err(ClientError::NotAcquired { .. })));
    assert!(matches!(client(&coord).with_namespace("café"), Err(ClientError::InvalidArgument(_))));
}

#[tokio::test]
async fn a_retried_request_id_gets_the_same_grant_back() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let options = LockOptions { request_id: Some("job-42-attempt".into()), ..opts(5_000) };
    let first = client(&coord).lock("idempotent", options.clone()).await.unwrap();
    // As if the first answer had been lost and the caller asked again.
    let replay = client(&coord).lock("idempotent", options).await.unwrap();
    assert_eq!((replay.lease_id(), replay.fencing_token()), (first.lease_id(), first.fencing_token()));
    assert_eq!(describe(&coord, "idempotent").await.hold_count, 1, "one hold, not two");
}

#[tokio::test]
async fn stopped_redis_makes_lost_resolve_after_about_a_ttl() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let guard = client(&coord).lock("fragile", opts(1_500)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await; // a few renewals

    let lost = guard.lost();
    let stopped = Instant::now();
    redis.stop();
    let lost = tokio::time::timeout(Duration::from_secs(10), lost).await;
    let after = stopped.elapsed();
    redis.cont();
    let lost = lost.expect("lost() resolves once renewals fail for a TTL");
    assert_eq!(lost.reason, LockLostReason::BackendUnavailable, "{lost:?}");
    assert!(guard.is_lost());
    // The last confirmed renewal was at most TTL/3 (+ noise) before the
    // stop: not instantly, and no later than about a TTL.
    assert!(after >= Duration::from_millis(700), "lost {after:?} after the stop: too early");
    assert!(after <= Duration::from_millis(1_500 + 2_000), "lost {after:?} after the stop");
}

#[tokio::test]
async fn coord_going_away_makes_lost_resolve_after_about_a_ttl() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let guard = client(&coord).lock("orphan", opts(1_500)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let lost = guard.lost();
    let gone = Instant::now();
    coord.shutdown().await; // the stream ends, nothing listens any more
    let lost = tokio::time::timeout(Duration::from_secs(10), lost).await.expect("lost() resolves");
    let after = gone.elapsed();
    assert_eq!(lost.reason, LockLostReason::BackendUnavailable, "{lost:?}");
    assert!(lost.detail.contains("no renewal confirmed"), "{lost:?}");
    assert!(after >= Duration::from_millis(700), "lost {after:?} after coord went away: too early");
    assert!(after <= Duration::from_millis(1_500 + 2_000), "lost {after:?} after coord went away");
}

#[tokio::test]
async fn a_coord_restart_on_the_same_redis_keeps_the_lock() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let addr = coord.addr;
    let guard = client(&coord).lock("survivor", opts(2_000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    // The stream breaks; for a while nothing listens; then a new coord on
    // the same address (and Redis) takes the renewals over.
    coord.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let coord = Coord::serving_at(support::config(&redis.url()), addr).await;
    assert!(!guard.is_lost(), "a broken stream alone is no loss");

    tokio::time::sleep(Duration::from_millis(4_000)).await; // two TTLs
    assert!(!guard.is_lost());
    let info = describe(&coord, "survivor").await;
    assert!(info.held, "{info:?}");
    assert_eq!((info.lease_id.as_str(), info.fencing_token), (guard.lease_id(), guard.fencing_token()));
    assert_eq!(guard.release().await.unwrap(), ReleaseStatus::Released);
}

/// A leadership guard: campaign waits until elected (wait zero: for as
/// long as it takes), its fencing token is the term, Proclaim updates the
/// value, an admin's ForceResign resolves `lost()` with FORCE_RELEASED, and
/// dropping the guard resigns so the next candidate leads at once.
#[tokio::test]
async fn a_leadership_guard_leads_proclaims_and_hears_when_deposed() {
    use coord::pb::{ElectionServiceForceResignRequest, ElectionServiceLeaderRequest};
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let leader = |coord: &Coord| {
        let mut c = coord.elections();
        async move {
            c.leader(ElectionServiceLeaderRequest { election: "svc".into() }).await.unwrap().into_inner().state.unwrap()
        }
    };
    let first = client(&coord).campaign("svc", b"10.0.0.1", opts(2_000)).await.unwrap();
    assert_eq!(leader(&coord).await.term, first.fencing_token());
    first.proclaim(b"10.0.0.9").await.unwrap();
    assert_eq!(leader(&coord).await.value, b"10.0.0.9");

    // A second candidate waits (wait zero: until elected); the first
    // guard's drop resigns, and the second leads well before any TTL.
    let c2 = client(&coord);
    let second = tokio::spawn(async move { c2.campaign("svc", b"10.0.0.2", opts(2_000)).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "waits while another leads");
    let start = Instant::now();
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(1), second).await.expect("elected at once").unwrap();
    assert!(start.elapsed() < Duration::from_millis(900), "{:?}", start.elapsed());
    let state = leader(&coord).await;
    assert_eq!((state.term, state.value.as_slice()), (second.fencing_token(), &b"10.0.0.2"[..]));

    tokio::time::sleep(Duration::from_millis(200)).await; // the stream is up
    let lost = second.lost();
    let forced = coord
        .elections()
        .force_resign(ElectionServiceForceResignRequest { election: "svc".into(), term: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.resigned);
    let lost = tokio::time::timeout(Duration::from_secs(2), lost).await.expect("lost() resolves");
    assert_eq!((lost.reason, lost.fencing_token), (LockLostReason::ForceReleased, second.fencing_token()));
    let err = second.proclaim(b"late").await.unwrap_err();
    assert!(matches!(&err, ClientError::Status(s) if s.code() == tonic::Code::FailedPrecondition), "{err:?}");
    // With a wait, not leading in time is NotAcquired.
    let _third = client(&coord).campaign("svc", b"3", opts(2_000)).await.unwrap();
    let wait = LockOptions { wait: Duration::from_millis(200), ..opts(2_000) };
    let err = client(&coord).campaign("svc", b"4", wait).await.unwrap_err();
    assert!(matches!(err, ClientError::NotAcquired { .. }), "{err:?}");
}
