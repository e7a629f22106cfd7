//! Batched rate-limit decisions (ratelimit.lua decides a batch of requests,
//! and coord coalesces concurrent Checks into batches):
//! - in one batch, requests on one subject are decided in order, each seeing
//!   what the ones before it charged; admitted and denied requests mix, a
//!   denial writes nothing (state byte-identical), and a request that fails
//!   does not fail the others;
//! - through coord, concurrent Checks share script calls (fewer calls than
//!   Checks) and still admit exactly the limit, with batching on or off;
//! - a Check whose caller gave up (its policy timeout) before its batch left
//!   is never charged.

mod support;

use std::{path::Path, time::Duration};

use coord::{
    pb::{CheckRequest, FixedWindow, Limit, limit::Algorithm, rate_limit_service_client::RateLimitServiceClient},
    redis::{ConnectOptions, Redis, scripts},
};
use redis::Value;
use support::{redis::RedisServer, serving_with};

fn redis(server: &RedisServer) -> Redis {
    let opts = ConnectOptions {
        pool_size: 2,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    Redis::single(&server.url(), &opts).unwrap()
}

/// One request of a batch: (keys, cost, mode, limits as (algorithm, a, b)).
type Req<'a> = (Vec<&'a str>, u64, &'a str, Vec<(&'a str, u64, u64)>);

async fn batch(redis: &Redis, reqs: &[Req<'_>]) -> Vec<Value> {
    redis
        .invoke(&scripts::RATELIMIT, |inv| {
            for (keys, ..) in reqs {
                for k in keys {
                    inv.key(*k);
                }
            }
            inv.arg(reqs.len());
            for (i, (_, cost, mode, limits)) in reqs.iter().enumerate() {
                inv.arg(*cost).arg(*mode).arg(format!("req{i}")).arg(limits.len());
                for (algo, a, b) in limits {
                    inv.arg(*algo).arg(*a).arg(*b);
                }
            }
        })
        .await
        .unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(items) => items.iter().map(|i| if let Value::Int(n) = i { *n } else { i64::MIN }).collect(),
        other => panic!("{other:?}"),
    }
}

const FIXED: (&str, u64, u64) = ("fixed", 3, 3_600_000_000);
const KEY: &str = "coord:default:rl:{s}:fixed:f";

#[tokio::test]
async fn a_batch_decides_its_requests_in_order_and_denials_write_nothing() {
    let server = RedisServer::start();
    let r = redis(&server);
    // Limit 3: 2 admitted, 2 more denied (4 > 3), 1 admitted (3), 1 denied.
    let reqs: Vec<Req> = [2, 2, 1, 1].iter().map(|&cost| (vec![KEY], cost, "consume", vec![FIXED])).collect();
    let verdicts: Vec<Vec<i64>> = batch(&r, &reqs).await.iter().map(ints).collect();
    let allowed: Vec<i64> = verdicts.iter().map(|v| v[0]).collect();
    assert_eq!(allowed, [1, 0, 1, 0], "{verdicts:?}");
    let remaining: Vec<i64> = verdicts.iter().map(|v| v[2]).collect();
    assert_eq!(remaining, [1, 1, 0, 0], "each sees what the ones before it charged");
    // Later writes in a window keep the expiry the first one set.
    let slide = "coord:default:rl:{z}:slide:s";
    let reqs: Vec<Req> = (0..3).map(|_| (vec![slide], 1, "consume", vec![("slide", 10, 60_000)])).collect();
    batch(&r, &reqs).await;
    for (key, most) in [(KEY, 3_600_000), (slide, 120_000)] {
        let ttl: i64 = server.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= most, "{key}: {ttl}");
    }

    // A batch of denials only (and a peek) leaves the state byte-identical.
    let before = server.cli(&["DUMP", KEY]);
    let reqs: Vec<Req> = vec![
        (vec![KEY], 1, "consume", vec![FIXED]),
        (vec![KEY], 2, "peek", vec![FIXED]),
        (vec![KEY], 5, "consume", vec![FIXED]),
    ];
    let verdicts: Vec<Vec<i64>> = batch(&r, &reqs).await.iter().map(ints).collect();
    assert_eq!(verdicts.iter().map(|v| v[0]).collect::<Vec<_>>(), [0, 0, 0]);
    assert_eq!(verdicts[2][3], -1, "a cost above the limit never passes");
    assert_eq!(server.cli(&["DUMP", KEY]), before, "denials wrote nothing");

    // All or nothing per request, across its own limits, inside a batch:
    // the second request's window limit denies it, so its bucket is not
    // charged either; the third is admitted on its own.
    let other = "coord:default:rl:{t}:fixed:w";
    let bucket = "coord:default:rl:{t}:tb:b";
    let meter = ("meter", 1_000_000_000, 10);
    let reqs: Vec<Req> = vec![
        (vec![other, bucket], 1, "consume", vec![("fixed", 1, 3_600_000_000), meter]),
        (vec![other, bucket], 1, "consume", vec![("fixed", 1, 3_600_000_000), meter]),
        (vec![bucket], 1, "consume", vec![meter]),
    ];
    let verdicts: Vec<Vec<i64>> = batch(&r, &reqs).await.iter().map(ints).collect();
    assert_eq!(verdicts.iter().map(|v| v[0]).collect::<Vec<_>>(), [1, 0, 1]);
    assert_eq!((verdicts[1][6], verdicts[2][2]), (9, 8), "the denied request charged no bucket token");

    // A request that fails (an algorithm the script does not know makes it
    // index nil) does not fail the others.
    let reqs: Vec<Req> = vec![
        (vec!["coord:default:rl:{u}:x:x"], 1, "consume", vec![("meter", 0, 0)]),
        (vec!["coord:default:rl:{v}:fixed:f"], 1, "consume", vec![FIXED]),
    ];
    let replies = batch(&r, &reqs).await;
    assert_eq!(ints(&replies[1])[0], 1, "{replies:?}");
}

/// Calls of `command` Redis counted since the last CONFIG RESETSTAT (script
/// calls included).
fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A hot subject's state is read once per batch and written once at its
/// end, yet every request is decided as if alone and in order: charges,
/// a refund and a peek in between see each other, and the final state
/// (value and expiry) is what the same requests leave one by one.
#[tokio::test]
async fn a_hot_subject_is_read_and_written_once_per_batch_with_the_same_decisions() {
    let server = RedisServer::start();
    let r = redis(&server);
    let meter = ("meter", 1_000_000, 5); // 5 tokens, one back per second
    let fixed = ("fixed", 5, 3_600_000_000);
    let slide = ("slide", 5, 3_600_000);
    // consume 2, 2, peek 1, refund 1 (to every limit), consume 2, 1 (denied:
    // 6 > 5), and a peek of nothing
    let steps: [(u64, &str); 7] =
        [(2, "consume"), (2, "consume"), (1, "peek"), (1, "refund"), (2, "consume"), (1, "consume"), (0, "peek")];
    let run = |tag: &'static str, batched: bool| {
        let r = r.clone();
        async move {
            let keys = [format!("rl:{{{tag}}}:tb:m"), format!("rl:{{{tag}}}:fixed:f"), format!("rl:{{{tag}}}:slide:s")];
            let reqs: Vec<Req> = steps
                .iter()
                .map(|&(cost, mode)| {
                    let ks = keys.iter().map(String::as_str).collect();
                    (ks, cost, mode, vec![meter, fixed, slide])
                })
                .collect();
            let mut verdicts = Vec::new();
            if batched {
                verdicts.extend(batch(&r, &reqs).await.iter().map(ints));
            } else {
                for req in &reqs {
                    verdicts.extend(batch(&r, std::slice::from_ref(req)).await.iter().map(ints));
                }
            }
            (keys, verdicts)
        }
    };
    server.cli(&["CONFIG", "RESETSTAT"]);
    let (keys, batched) = run("a", true).await;
    let (get, set, hmget, hset, pexpire) = (
        command_calls(&server, "get"),
        command_calls(&server, "set"),
        command_calls(&server, "hmget"),
        command_calls(&server, "hset"),
        command_calls(&server, "pexpire"),
    );
    assert_eq!((get, set), (1, 1), "the bucket: one read, one write for 7 requests");
    assert_eq!((hmget, hset, pexpire), (2, 2, 2), "each window: one read, one write, one expiry");
    let (alone_keys, alone) = run("b", false).await;

    // Same answers, apart from times (reset, retry) measured a few µs apart.
    let allowed = |v: &[Vec<i64>]| v.iter().map(|v| (v[0], v[1], v[2], v[5], v[6], v[9], v[10])).collect::<Vec<_>>();
    assert_eq!(allowed(&batched), allowed(&alone));
    assert_eq!(batched.iter().map(|v| v[0]).collect::<Vec<_>>(), [1, 1, 1, 1, 1, 0, 1], "{batched:?}");
    // After 2 + 2, a refund of 1 and 2 more: 0 of 5 left (the bucket may
    // have earned nothing back in these few ms).
    assert_eq!((batched[4][2], batched[4][6], batched[4][10]), (0, 0, 0), "{batched:?}");
    for (a, b) in keys.iter().zip(&alone_keys).skip(1) {
        assert_eq!(server.cli(&["HGETALL", a]), server.cli(&["HGETALL", b]), "{a} and {b}");
    }
    for key in keys.iter().chain(&alone_keys) {
        let ttl: i64 = server.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000 * 2, "{key}: {ttl}");
    }
}

/// A request whose key holds the wrong type fails alone: the requests
/// around it on a cached subject are decided and charged.
#[tokio::test]
async fn a_failing_request_between_requests_on_a_hot_subject_fails_alone() {
    let server = RedisServer::start();
    let r = redis(&server);
    server.cli(&["RPUSH", "rl:{w}:fixed:bad", "x"]);
    let key = "rl:{w}:fixed:f";
    let reqs: Vec<Req> = vec![
        (vec![key], 1, "consume", vec![FIXED]),
        (vec![key, "rl:{w}:fixed:bad"], 1, "consume", vec![FIXED, FIXED]),
        (vec![key], 1, "consume", vec![FIXED]),
    ];
    let replies = batch(&r, &reqs).await;
    let second = format!("{:?}", replies[1]);
    assert!(second.contains("WRONGTYPE"), "{second}");
    assert_eq!((ints(&replies[0])[0], ints(&replies[2])[0]), (1, 1));
    assert_eq!(ints(&replies[2])[2], 1, "3 - 2 charged: the failed request charged nothing");
    assert_eq!(server.cli(&["HGET", key, "n"]), "2");
}

/// The longest window: the exact counts below almost never straddle its end.
const MONTH_MS: i64 = coord::ratelimit::MAX_PERIOD_MS;

async fn checks(c: &mut RateLimitServiceClient<tonic::transport::Channel>, subject: &str, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        let limit = Limit {
            name: "f".into(),
            algorithm: Some(Algorithm::FixedWindow(FixedWindow { limit: 100, window_ms: MONTH_MS })),
        };
        let req = CheckRequest { subject: subject.into(), limits: vec![limit], cost: Some(1), ..Default::default() };
        if c.check(req).await.unwrap().into_inner().allowed {
            admitted += 1;
        }
    }
    admitted
}

/// 32 clients × 10 Checks on one subject (limit 100): exactly 100 admitted
/// with batching on (in fewer script calls than Checks) and off (one call
/// per Check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_script_calls_and_admit_exactly_the_limit() {
    for max_size in [64, 1] {
        let server = RedisServer::start();
        let mut config = support::config(&server.url());
        config.ratelimit.batch_max_size = max_size;
        let coord = serving_with(config).await;
        server.cli(&["CONFIG", "RESETSTAT"]);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let mut c = coord.rate_limits();
                tokio::spawn(async move { checks(&mut c, "hot", 10).await })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.unwrap();
        }
        assert_eq!(admitted, 100, "batch_max_size {max_size}: 320 Checks against a limit of 100");
        let calls = command_calls(&server, "evalsha");
        if max_size == 1 {
            assert!(calls >= 320, "one call per Check: {calls}");
        } else {
            assert!(calls < 320, "batched: {calls} script calls for 320 Checks");
        }
    }
}

// A 30-day window (see MONTH_MS).
const POLICIES: &str = r#"
[policies.open]
failure = "open"
timeout = "100ms"
limits = [{ name = "f", fixed_window = { limit = 100, window_ms = 2592000000 } }]
"#;

/// While Redis is paused, Checks fail open after their 100 ms policy
/// timeout. Only the batches already sent (2 in flight) run when Redis
/// resumes; the Checks queued behind them, whose callers gave up, are
/// dropped and charge nothing.
#[tokio::test]
async fn checks_whose_callers_gave_up_before_their_batch_left_charge_nothing() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.toml");
    std::fs::write(&file, POLICIES).unwrap();
    let mut config = support::config(&server.url());
    config.ratelimit.policy_file = Some(Path::new(&file).to_path_buf());
    config.ratelimit.deny_cache = false;
    // The 2 stuck batches stay in flight for the whole pause (a call that
    // timed out would free its place for a later, live Check).
    config.redis.command_timeout = Duration::from_secs(5);
    let coord = serving_with(config).await;
    let mut c = coord.rate_limits();
    let check = |c: &mut RateLimitServiceClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move {
            let req = CheckRequest { subject: "p".into(), policy: "open".into(), cost: Some(1), ..Default::default() };
            c.check(req).await.unwrap().into_inner()
        }
    };
    assert!(check(&mut c).await.allowed);
    server.stop();
    for _ in 0..8 {
        let r = check(&mut c).await;
        assert!(r.allowed && r.limits.is_empty(), "failed open: {r:?}");
    }
    server.cont();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = server.cli(&["HGET", "coord:default:rl:{p}:fixed:f", "n"]);
    assert_eq!(used, "3", "the first Check and the 2 batches in flight; not the 6 that gave up while queued");
}

/// On a cluster, batches are per slot: 16 clients × 10 Checks on each of
/// three subjects (three slots) admit exactly 100 per subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_a_cluster_are_per_slot_and_exact() {
    let cluster = support::redis::RedisCluster::start(0);
    let mut config = support::config("");
    config.redis.cluster = cluster.urls();
    let coord = serving_with(config).await;
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let mut c = coord.rate_limits();
            let subject = ["a", "b", "c"][i % 3];
            tokio::spawn(async move { (subject, checks(&mut c, subject, 10).await) })
        })
        .collect();
    let mut admitted = std::collections::BTreeMap::new();
    for t in tasks {
        let (subject, n) = t.await.unwrap();
        *admitted.entry(subject).or_insert(0) += n;
    }
    assert_eq!(admitted.into_iter().collect::<Vec<_>>(), [("a", 100), ("b", 100), ("c", 100)]);
}
