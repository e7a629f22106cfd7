//! RateLimitService through the generated client: exact admission under
//! concurrency for every algorithm, refill and retry-after, denials that
//! consume nothing, cost above the limit, all-or-nothing limits, peek and
//! refund, concurrency slots, validation, and the scripts on a cluster.

mod support;

use std::time::{Duration, Instant};

use coord::pb::{
    AcquireSlotRequest, CheckMode, CheckRequest, CheckResponse, FixedWindow, Gcra, Limit, RefundRequest,
    ReleaseSlotRequest, SlidingLog, SlidingWindow, TokenBucket, limit::Algorithm,
    rate_limit_service_client::RateLimitServiceClient,
};
use support::{
    inside_one_window,
    redis::{RedisCluster, RedisServer},
    serving, serving_with,
};
use tonic::{Code, transport::Channel};

type Client = RateLimitServiceClient<Channel>;

fn limit(name: &str, algorithm: Algorithm) -> Limit {
    Limit { name: name.into(), algorithm: Some(algorithm) }
}

fn fixed(l: u64, w: i64) -> Algorithm {
    Algorithm::FixedWindow(FixedWindow { limit: l, window_ms: w })
}

fn bucket(capacity: u64, refill_tokens: u64, refill_period_ms: i64) -> Algorithm {
    Algorithm::TokenBucket(TokenBucket { capacity, refill_tokens, refill_period_ms })
}

async fn check(c: &mut Client, subject: &str, limits: Vec<Limit>, cost: u64) -> CheckResponse {
    c.check(CheckRequest { subject: subject.into(), limits, cost: Some(cost), mode: 0, ..Default::default() })
        .await
        .expect("check")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_admits_exactly_its_limit_under_contention() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let algorithms = [
        ("fixed", fixed(100, 60_000)),
        ("log", Algorithm::SlidingLog(SlidingLog { limit: 100, window_ms: 60_000 })),
        ("slide", Algorithm::SlidingWindow(SlidingWindow { limit: 100, window_ms: 60_000 })),
        // Refill far slower than the test: capacity is all there is.
        ("bucket", bucket(100, 1, 3_600_000)),
        ("gcra", Algorithm::Gcra(Gcra { rate: 1, period_ms: 3_600_000, burst: 100 })),
    ];
    for (name, algorithm) in algorithms {
        inside_one_window(Duration::from_secs(60), Duration::from_secs(15)).await;
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let mut c = RateLimitServiceClient::new(coord.channel());
                tokio::spawn(async move {
                    let mut admitted = 0;
                    for _ in 0..20 {
                        if check(&mut c, &format!("hammer-{name}"), vec![limit(name, algorithm)], 1).await.allowed {
                            admitted += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        assert_eq!(total, 100, "{name}: 320 attempts against a limit of 100");
    }
}

#[tokio::test]
async fn buckets_refill_continuously_and_retry_after_is_exact_enough() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    // 10 tokens per second: one every 100 ms.
    for (name, algorithm) in
        [("bucket", bucket(5, 10, 1_000)), ("gcra", Algorithm::Gcra(Gcra { rate: 10, period_ms: 1_000, burst: 5 }))]
    {
        let limits = vec![limit(name, algorithm)];
        let burst = check(&mut c, name, limits.clone(), 5).await;
        assert!(burst.allowed, "{name}: a new bucket is full");
        assert_eq!(burst.limits[0].remaining, 0);
        let denied = check(&mut c, name, limits.clone(), 1).await;
        assert!(!denied.allowed);
        let retry = denied.limits[0].retry_after_ms;
        assert!((1..=100).contains(&retry), "{name}: retry {retry}");
        assert!(denied.limits[0].reset_after_ms > 400, "{name}: {denied:?}");
        // Clearly before retry-after: still denied.
        if retry > 40 {
            tokio::time::sleep(Duration::from_millis(retry as u64 / 4)).await;
            assert!(!check(&mut c, name, limits.clone(), 1).await.allowed, "{name}: early");
        }
        tokio::time::sleep(Duration::from_millis(retry as u64 + 15)).await;
        assert!(check(&mut c, name, limits.clone(), 1).await.allowed, "{name}: after retry-after");
        // Fractional refill accumulates: fast polling does not starve.
        let start = Instant::now();
        let mut admitted = 0;
        while start.elapsed() < Duration::from_millis(1_000) {
            if check(&mut c, name, limits.clone(), 1).await.allowed {
                admitted += 1;
            }
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        assert!((8..=12).contains(&admitted), "{name}: {admitted} in 1 s at 10/s");
    }
}

#[tokio::test]
async fn windows_deny_until_retry_after() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    for (name, algorithm) in [
        ("fixed", fixed(3, 1_000)),
        ("log", Algorithm::SlidingLog(SlidingLog { limit: 3, window_ms: 1_000 })),
        ("slide", Algorithm::SlidingWindow(SlidingWindow { limit: 3, window_ms: 1_000 })),
    ] {
        inside_one_window(Duration::from_secs(1), Duration::from_millis(300)).await;
        let limits = vec![limit(name, algorithm)];
        for i in 0..3 {
            let r = check(&mut c, name, limits.clone(), 1).await;
            assert!(r.allowed, "{name} #{i}");
            assert_eq!(r.limits[0].remaining, 2 - i);
        }
        let denied = check(&mut c, name, limits.clone(), 1).await;
        assert!(!denied.allowed, "{name}");
        let retry = denied.limits[0].retry_after_ms;
        assert!(retry > 0 && retry <= 2_000, "{name}: retry {retry}");
        tokio::time::sleep(Duration::from_millis(retry as u64 + 20)).await;
        assert!(check(&mut c, name, limits.clone(), 1).await.allowed, "{name}: admitted after retry-after");
    }
}

#[tokio::test]
async fn denials_consume_nothing_and_oversized_costs_never_pass() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    // Counts of one hour-aligned window: not across its end.
    inside_one_window(Duration::from_secs(3600), Duration::from_secs(20)).await;
    for (name, algorithm) in [
        ("bucket", bucket(10, 1, 3_600_000)),
        ("fixed", fixed(10, 3_600_000)),
        ("log", Algorithm::SlidingLog(SlidingLog { limit: 10, window_ms: 3_600_000 })),
        ("slide", Algorithm::SlidingWindow(SlidingWindow { limit: 10, window_ms: 3_600_000 })),
    ] {
        let limits = vec![limit(name, algorithm)];
        assert!(check(&mut c, name, limits.clone(), 8).await.allowed);
        // The rate limits' keys only: the health probe rewrites its own key
        // every second, which is not the denial's doing.
        let before = redis.cli(&["--scan", "--pattern", "coord:default:rl:*"]);
        assert!(!before.is_empty(), "{name}: no rate limit keys to compare");
        let dump_before: Vec<String> = before.lines().map(|k| redis.cli(&["DUMP", k])).collect();
        let denied = check(&mut c, name, limits.clone(), 5).await;
        assert!(!denied.allowed && denied.limits[0].remaining == 2, "{name}: {denied:?}");
        let dump_after: Vec<String> = before.lines().map(|k| redis.cli(&["DUMP", k])).collect();
        assert_eq!(dump_before, dump_after, "{name}: a denial changed state");
        assert!(check(&mut c, name, limits.clone(), 2).await.allowed, "{name}: the denial charged nothing");

        let never = check(&mut c, name, limits.clone(), 11).await;
        assert!(!never.allowed, "{name}");
        assert_eq!(never.limits[0].retry_after_ms, -1, "{name}: cost above the limit can never pass");
    }
}

#[tokio::test]
async fn several_limits_are_all_or_nothing() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    inside_one_window(Duration::from_secs(60), Duration::from_secs(5)).await;
    let limits = vec![limit("per-minute", fixed(2, 60_000)), limit("per-day", fixed(100, 86_400_000))];
    assert!(check(&mut c, "user:1", limits.clone(), 1).await.allowed);
    assert!(check(&mut c, "user:1", limits.clone(), 1).await.allowed);
    let denied = check(&mut c, "user:1", limits.clone(), 1).await;
    assert!(!denied.allowed);
    assert!(!denied.limits[0].allowed && denied.limits[1].allowed, "{denied:?}");
    // The per-day limit was not charged for the denied request.
    assert_eq!(denied.limits[1].remaining, 98, "{denied:?}");
    let peek = c
        .check(CheckRequest {
            subject: "user:1".into(),
            limits,
            cost: Some(1),
            mode: CheckMode::Peek as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(peek.limits[1].remaining, 98);
}

#[tokio::test]
async fn peek_changes_nothing_and_refund_gives_back() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    // Counts of one hour-aligned window: not across its end.
    inside_one_window(Duration::from_secs(3600), Duration::from_secs(20)).await;
    for (name, algorithm) in [
        ("bucket", bucket(10, 1, 3_600_000)),
        ("fixed", fixed(10, 3_600_000)),
        ("log", Algorithm::SlidingLog(SlidingLog { limit: 10, window_ms: 3_600_000 })),
        ("slide", Algorithm::SlidingWindow(SlidingWindow { limit: 10, window_ms: 3_600_000 })),
    ] {
        let l = limit(name, algorithm);
        check(&mut c, name, vec![l.clone()], 6).await;
        for _ in 0..3 {
            let peek = c
                .check(CheckRequest {
                    subject: name.into(),
                    limits: vec![l.clone()],
                    cost: Some(1),
                    mode: CheckMode::Peek as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(peek.limits[0].remaining, 4, "{name}: peek");
            assert_eq!(check(&mut c, name, vec![l.clone()], 0).await.limits[0].remaining, 4, "{name}: cost 0");
        }
        let refunded = c
            .refund(RefundRequest { subject: name.into(), limit: Some(l.clone()), amount: 4, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .limit
            .unwrap();
        assert_eq!(refunded.remaining, 8, "{name}: refund");
        // Never above the limit's size.
        let refunded = c
            .refund(RefundRequest { subject: name.into(), limit: Some(l.clone()), amount: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .limit
            .unwrap();
        assert_eq!(refunded.remaining, 10, "{name}: clamped");
    }
}

#[tokio::test]
async fn concurrency_slots_limit_in_flight_and_expire() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    let acquire = |ttl_ms: i64| AcquireSlotRequest {
        subject: "reports".into(),
        max_in_flight: 2,
        ttl_ms,
        slot_id: String::new(),
    };
    let a = c.acquire_slot(acquire(10_000)).await.unwrap().into_inner();
    let b = c.acquire_slot(acquire(400)).await.unwrap().into_inner();
    assert!(a.acquired && b.acquired && b.in_flight == 2);
    let full = c.acquire_slot(acquire(10_000)).await.unwrap().into_inner();
    assert!(!full.acquired && full.retry_after_ms > 0 && full.retry_after_ms <= 400, "{full:?}");
    // Renewing a held slot is not a new one.
    let renewed = c
        .acquire_slot(AcquireSlotRequest { slot_id: a.slot_id.clone(), ..acquire(10_000) })
        .await
        .unwrap()
        .into_inner();
    assert!(renewed.acquired && renewed.in_flight == 2);
    // b "crashes": its slot frees itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c3 = c.acquire_slot(acquire(10_000)).await.unwrap().into_inner();
    assert!(c3.acquired, "{c3:?}");
    let released =
        c.release_slot(ReleaseSlotRequest { subject: "reports".into(), slot_id: a.slot_id.clone() }).await.unwrap();
    assert!(released.into_inner().released);
    let again = c.release_slot(ReleaseSlotRequest { subject: "reports".into(), slot_id: a.slot_id }).await.unwrap();
    assert!(!again.into_inner().released, "idempotent");
    assert!(c.acquire_slot(acquire(10_000)).await.unwrap().into_inner().acquired);
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    let cases = vec![
        (
            CheckRequest {
                subject: String::new(),
                limits: vec![limit("a", fixed(1, 1000))],
                cost: None,
                mode: 0,
                ..Default::default()
            },
            "subject:",
        ),
        (CheckRequest { subject: "s".into(), limits: vec![], cost: None, mode: 0, ..Default::default() }, "limits:"),
        (
            CheckRequest {
                subject: "s".into(),
                limits: vec![limit("a", fixed(0, 1000))],
                cost: None,
                mode: 0,
                ..Default::default()
            },
            "limits[0].fixed_window.limit:",
        ),
        (
            CheckRequest {
                subject: "s".into(),
                limits: vec![limit("a", bucket(5, 1, 0))],
                cost: None,
                mode: 0,
                ..Default::default()
            },
            "limits[0].token_bucket.refill_period_ms:",
        ),
        (
            CheckRequest {
                subject: "s".into(),
                limits: vec![limit("a", fixed(1, 1000)), limit("a", fixed(2, 1000))],
                cost: None,
                mode: 0,
                ..Default::default()
            },
            "limits[1].name:",
        ),
        (
            CheckRequest {
                subject: "s".into(),
                limits: vec![Limit { name: "x".into(), algorithm: None }],
                cost: None,
                mode: 0,
                ..Default::default()
            },
            "limits[0].algorithm:",
        ),
    ];
    for (req, prefix) in cases {
        let err = c.check(req.clone()).await.expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(prefix), "{req:?}: {}", err.message());
    }
    let err = c
        .acquire_slot(AcquireSlotRequest { subject: "s".into(), max_in_flight: 0, ttl_ms: 10, slot_id: String::new() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("max_in_flight:"), "{}", err.message());
    let err = c
        .refund(RefundRequest {
            subject: "s".into(),
            limit: Some(limit("a", fixed(1, 1000))),
            amount: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("amount:"), "{}", err.message());
}

#[tokio::test]
async fn rate_limit_scripts_run_on_a_local_cluster() {
    let cluster = RedisCluster::start(0);
    let mut config = support::config("");
    config.redis.cluster = cluster.urls();
    let coord = serving_with(config).await;
    let mut c = coord.rate_limits();
    // Counts of one hour-aligned window: not across its end.
    inside_one_window(Duration::from_secs(3600), Duration::from_secs(20)).await;
    for subject in ["a", "b", "c", "d", "e", "f"] {
        let limits = vec![
            limit("burst", bucket(3, 1, 3_600_000)),
            limit("window", fixed(2, 3_600_000)),
            limit("log", Algorithm::SlidingLog(SlidingLog { limit: 5, window_ms: 3_600_000 })),
        ];
        assert!(check(&mut c, subject, limits.clone(), 1).await.allowed);
        assert!(check(&mut c, subject, limits.clone(), 1).await.allowed);
        let third = check(&mut c, subject, limits.clone(), 1).await;
        assert!(!third.allowed && third.limits[0].remaining == 1, "{subject}: all-or-nothing on a cluster: {third:?}");
    }
    let slot = c
        .acquire_slot(AcquireSlotRequest {
            subject: "x".into(),
            max_in_flight: 1,
            ttl_ms: 1000,
            slot_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(slot.acquired);
}

#[tokio::test]
async fn an_unknown_check_mode_is_invalid_and_charges_nothing() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.rate_limits();
    let l = limit("per-hour", fixed(5, 3_600_000));
    for mode in [3, 99, -1] {
        let err = c
            .check(CheckRequest {
                subject: "modes".into(),
                limits: vec![l.clone()],
                cost: Some(1),
                mode,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "mode {mode}: {err:?}");
        assert!(err.message().starts_with("mode:"), "{err:?}");
    }
    // Nothing was charged: all 5 units are still there.
    let peek = c
        .check(CheckRequest {
            subject: "modes".into(),
            limits: vec![l],
            cost: Some(5),
            mode: CheckMode::Peek as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(peek.allowed, "{peek:?}");
}
