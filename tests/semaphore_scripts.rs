//! The semaphore scripts' contract on a real Redis, driven as a service
//! would drive them: permits are taken all or nothing, in arrival order
//! (a large request at the head is not starved by small ones behind it), a
//! release wakes exactly the waiters that now fit, permits of a lease that
//! stopped renewing come back, and no interleaving of concurrent callers
//! ever holds more than the size.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use coord::redis::{ConnectOptions, Redis, scripts};
use redis::Value;
use support::redis::RedisServer;

const KEY: &str = "coord:default:sem:{s}";
const CHANNEL: &str = "coord:_:sem-events";

fn keys() -> Vec<String> {
    let mut keys = vec![KEY.to_owned()];
    keys.extend(["permits", "expiry", "queue", "wants", "fence"].iter().map(|s| format!("{KEY}:{s}")));
    keys
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Granted { permit: i64, free: i64 },
    Waiting { free: i64, ahead: i64 },
    TooMany,
}

#[derive(Clone)]
struct Sem {
    redis: Redis,
}

impl Sem {
    fn on(server: &RedisServer) -> Sem {
        let opts = ConnectOptions {
            pool_size: 4,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        Sem { redis: Redis::single(&server.url(), &opts).unwrap() }
    }

    /// `wait`: queue as `waiter` for that long when not granted.
    async fn acquire(&self, n: u32, size: u32, lease: &str, ttl_ms: u64, waiter: &str, wait: Option<u64>) -> Got {
        let reply: Vec<Value> = self
            .redis
            .invoke(&scripts::SEM_ACQUIRE, |inv| {
                for k in keys() {
                    inv.key(k);
                }
                inv.arg(n)
                    .arg(size)
                    .arg(lease)
                    .arg(ttl_ms)
                    .arg("owner")
                    .arg(waiter)
                    .arg(wait.map(|w| (now_ms() + w).to_string()).unwrap_or_default())
                    .arg(600_000)
                    .arg("0")
                    .arg("");
            })
            .await
            .unwrap();
        match reply.as_slice() {
            [Value::Int(1), Value::Int(token), _, _, Value::Int(free)] => Got::Granted { permit: *token, free: *free },
            [Value::Int(0), _, Value::Int(free), Value::Int(ahead), _] => Got::Waiting { free: *free, ahead: *ahead },
            [Value::Int(-1), _] => Got::TooMany,
            other => panic!("{other:?}"),
        }
    }

    /// (flag, waiters woken)
    async fn release(&self, permit: i64, lease: &str) -> (i64, i64) {
        let reply: Vec<Value> = self
            .redis
            .invoke(&scripts::SEM_RELEASE, |inv| {
                for k in &keys()[..5] {
                    inv.key(k);
                }
                inv.arg(permit.to_string()).arg(lease).arg(CHANNEL).arg(KEY).arg("released").arg("");
            })
            .await
            .unwrap();
        match reply.as_slice() {
            [Value::Int(1), _, Value::Int(woken), ..] => (1, *woken),
            [Value::Int(flag)] => (*flag, 0),
            other => panic!("{other:?}"),
        }
    }
}

fn granted(got: &Got) -> i64 {
    match got {
        Got::Granted { permit, .. } => *permit,
        other => panic!("not granted: {other:?}"),
    }
}

#[tokio::test]
async fn permits_are_taken_all_or_nothing_and_only_by_their_lease_given_back() {
    let server = RedisServer::start();
    let s = Sem::on(&server);
    let a = granted(&s.acquire(3, 5, "la", 10_000, "", None).await);
    assert_eq!(s.acquire(3, 5, "lb", 10_000, "", None).await, Got::Waiting { free: 2, ahead: 0 });
    assert_eq!(server.cli(&["HGET", KEY, "used"]), "3", "a refused request takes nothing");
    assert_eq!(s.acquire(6, 5, "lb", 10_000, "", None).await, Got::TooMany, "more than the size, ever");
    let b = granted(&s.acquire(2, 5, "lb", 10_000, "", None).await);
    assert!(b > a, "fencing tokens increase");
    assert_eq!(s.release(a, "lb").await, (2, 0), "another lease's permit");
    assert_eq!(s.release(a, "la").await.0, 1);
    assert_eq!(s.release(a, "la").await.0, 0, "released once");
    match s.acquire(3, 99, "lc", 10_000, "", None).await {
        Got::Granted { free, .. } => assert_eq!(free, 0, "the size is the first caller's, not 99"),
        other => panic!("{other:?}"),
    }
}

/// A 10-permit request at the head of the queue is served while 1-permit
/// requests keep arriving behind it: they queue instead of jumping ahead,
/// and each release wakes exactly the waiters that now fit, in order.
#[tokio::test]
async fn a_large_request_is_not_starved_by_small_ones_and_releases_wake_only_what_fits() {
    let server = RedisServer::start();
    let s = Sem::on(&server);
    let held: Vec<i64> = futures_util::future::join_all((0..10).map(|i| {
        let s = s.clone();
        async move { granted(&s.acquire(1, 10, &format!("small{i}"), 30_000, "", None).await) }
    }))
    .await;
    assert!(matches!(s.acquire(10, 10, "big", 30_000, "w-big", Some(10_000)).await, Got::Waiting { ahead: 0, .. }));
    for (i, permit) in held.iter().enumerate() {
        // A small request arrives behind the big one and queues, although a
        // permit was just freed.
        let waiter = format!("w-small{i}");
        assert!(matches!(
            s.acquire(1, 10, &format!("late{i}"), 30_000, &waiter, Some(10_000)).await,
            Got::Waiting { .. }
        ));
        let (_, woken) = s.release(*permit, &format!("small{i}")).await;
        // Only the last release frees enough for the head.
        assert_eq!(woken, if i == 9 { 1 } else { 0 }, "release {i}");
    }
    let big = granted(&s.acquire(10, 10, "big", 30_000, "w-big", Some(10_000)).await);
    assert!(matches!(s.acquire(1, 10, "late0", 30_000, "w-small0", Some(10_000)).await, Got::Waiting { ahead: 0, .. }));
    // Releasing 10 wakes the ten small waiters together.
    assert_eq!(s.release(big, "big").await, (1, 10));
    for i in 0..10 {
        granted(&s.acquire(1, 10, &format!("late{i}"), 30_000, &format!("w-small{i}"), Some(10_000)).await);
    }
    assert_eq!(server.cli(&["ZCARD", &format!("{KEY}:queue")]), "0", "served waiters leave the queue");
}

/// Permits whose lease stopped renewing them come back once they expire,
/// and a waiter that gave up (its deadline passed) stops blocking the queue.
#[tokio::test]
async fn expired_permits_and_departed_waiters_free_their_places() {
    let server = RedisServer::start();
    let s = Sem::on(&server);
    granted(&s.acquire(4, 4, "crashed", 200, "", None).await);
    assert!(matches!(s.acquire(4, 4, "next", 10_000, "w-gone", Some(100)).await, Got::Waiting { ahead: 0, .. }));
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The crashed holder's permits and the departed waiter are both gone.
    granted(&s.acquire(4, 4, "next", 10_000, "", None).await);
    assert_eq!(server.cli(&["HGET", KEY, "used"]), "4");
    assert_eq!(server.cli(&["ZCARD", &format!("{KEY}:queue")]), "0");
    for key in keys() {
        let ttl: i64 = server.cli(&["PTTL", &key]).parse().unwrap();
        assert!(ttl > 0 || ttl == -2, "{key} has a TTL ({ttl})");
    }
}

/// 16 callers take and give back random numbers of permits as fast as they
/// can; the permits held (by the callers' own count) never exceed the size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_never_hold_more_than_the_size() {
    let server = RedisServer::start();
    let s = Sem::on(&server);
    let held = Arc::new(AtomicI64::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..16u64)
        .map(|w| {
            let (s, held, peak) = (s.clone(), held.clone(), peak.clone());
            tokio::spawn(async move {
                let mut seed = w + 1;
                let mut grants = 0;
                for _ in 0..150 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let n = (seed % 3 + 1) as i64;
                    let lease = format!("l{w}");
                    if let Got::Granted { permit, .. } = s.acquire(n as u32, 5, &lease, 30_000, "", None).await {
                        let now = held.fetch_add(n, Ordering::SeqCst) + n;
                        peak.fetch_max(now, Ordering::SeqCst);
                        assert!(now <= 5, "{now} permits held, size 5");
                        held.fetch_sub(n, Ordering::SeqCst);
                        assert_eq!(s.release(permit, &lease).await.0, 1);
                        grants += 1;
                    }
                }
                grants
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(total > 100, "callers got permits ({total})");
    assert!(peak.load(Ordering::SeqCst) >= 3, "the size was used concurrently");
    assert_eq!(server.cli(&["HGET", KEY, "used"]), "0", "every permit came back");
}

impl Sem {
    /// (previous size, used, waiters woken)
    async fn resize(&self, size: u32) -> (i64, i64, i64) {
        self.redis
            .invoke(&scripts::SEM_RESIZE, |inv| {
                for k in &keys()[..5] {
                    inv.key(k);
                }
                inv.arg(size).arg(CHANNEL).arg(KEY).arg(600_000);
            })
            .await
            .unwrap()
    }

    /// (size, used, waiters, holders as (permit, n, lease, owner, ttl))
    async fn describe(&self) -> (i64, i64, i64, Vec<(String, i64, String, String, i64)>) {
        self.redis
            .invoke(&scripts::SEM_DESCRIBE, |inv| {
                for k in &keys()[..5] {
                    inv.key(k);
                }
                inv.arg(100);
            })
            .await
            .unwrap()
    }
}

/// Growing a semaphore wakes the waiters that now fit; shrinking it takes
/// nothing back but grants nothing until enough permits return, and a
/// waiter that wants more than the new size is told so on its next try.
#[tokio::test]
async fn resizing_wakes_what_fits_and_never_takes_permits_back() {
    let server = RedisServer::start();
    let s = Sem::on(&server);
    let a = granted(&s.acquire(2, 2, "la", 30_000, "", None).await);
    assert!(matches!(s.acquire(2, 2, "lb", 30_000, "w-b", Some(10_000)).await, Got::Waiting { .. }));
    assert!(matches!(s.acquire(1, 2, "lc", 30_000, "w-c", Some(10_000)).await, Got::Waiting { ahead: 1, .. }));
    assert_eq!(s.resize(5).await, (2, 2, 2), "both waiters fit in 3 more permits");
    granted(&s.acquire(2, 2, "lb", 30_000, "w-b", Some(10_000)).await);
    granted(&s.acquire(1, 2, "lc", 30_000, "w-c", Some(10_000)).await);

    assert_eq!(s.resize(1).await, (5, 5, 0));
    assert_eq!(server.cli(&["HGET", KEY, "used"]), "5", "holders keep their permits");
    assert_eq!(s.acquire(1, 1, "ld", 30_000, "", None).await, Got::Waiting { free: -4, ahead: 0 });
    assert_eq!(s.acquire(2, 1, "le", 30_000, "", None).await, Got::TooMany);
    assert_eq!(s.release(a, "la").await.0, 1);
    assert!(matches!(s.acquire(1, 1, "ld", 30_000, "", None).await, Got::Waiting { .. }), "3 held, size 1");
}

#[tokio::test]
async fn describe_shows_size_use_holders_and_live_waiters() {
    let server = RedisServer::start();
    let s = Sem::on(&server);
    assert_eq!(s.describe().await, (0, 0, 0, vec![]), "no such semaphore");
    let a = granted(&s.acquire(2, 3, "la", 30_000, "", None).await);
    granted(&s.acquire(1, 3, "lb", 10_000, "", None).await);
    assert!(matches!(s.acquire(3, 3, "lc", 30_000, "w-c", Some(10_000)).await, Got::Waiting { .. }));
    assert!(matches!(s.acquire(3, 3, "ld", 30_000, "w-d", Some(50)).await, Got::Waiting { .. }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (size, used, waiters, holders) = s.describe().await;
    assert_eq!((size, used, waiters), (3, 3, 1), "w-d gave up");
    assert_eq!(holders.len(), 2);
    let (permit, n, lease, owner, ttl) = &holders[1];
    assert_eq!((permit.as_str(), *n, lease.as_str(), owner.as_str()), (a.to_string().as_str(), 2, "la", "owner"));
    assert!(*ttl > 29_000 && *ttl <= 30_000, "{ttl}");
    assert_eq!(holders[0].2, "lb", "soonest expiry first");
}

/// Key TTLs are topped up only when low, yet every key a grant relies on
/// outlives its permit: a semaphore first written by a waiter (no grants
/// yet) and then granted a permit longer than half the key TTL gets its
/// grant and expiry keys at least that long.
#[tokio::test]
async fn every_key_outlives_the_permits_it_holds() {
    let server = RedisServer::start();
    let s = Sem::on(&server);
    let held = granted(&s.acquire(1, 1, "a", 1_000, "", None).await);
    assert!(matches!(s.acquire(1, 1, "b", 1_000, "w", Some(5_000)).await, Got::Waiting { .. }));
    s.release(held, "a").await;
    for key in [format!("{KEY}:permits"), format!("{KEY}:expiry")] {
        server.cli(&["PERSIST", &key]);
    }
    server.cli(&["PEXPIRE", KEY, "1000"]);
    // 500 s: longer than half the 600 s key TTL the helper passes.
    granted(&s.acquire(1, 1, "b", 500_000, "w", Some(5_000)).await);
    for key in [KEY.to_owned(), format!("{KEY}:permits"), format!("{KEY}:expiry")] {
        let ttl: i64 = server.cli(&["PTTL", &key]).parse().unwrap();
        assert!(ttl >= 500_000 - 1_000, "{key}: {ttl} ms");
    }
}
