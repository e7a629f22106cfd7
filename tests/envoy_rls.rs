//! Envoy's rate limit service (`envoy.service.ratelimit.v3`) served by coord
//! against a live Redis, with envoyproxy/ratelimit's own expectations
//! ported (its integration test `testBasicBaseConfig`, the `replaces`
//! integration script and the service tests for unlimited, shadow mode,
//! quota mode, headers and empty requests; commit f2fb157), plus
//! hits_addend and request overrides as Envoy sends them.
//!
//! Where coord deliberately differs, both numbers are asserted: with the
//! default `coord` semantics a request over limit on one descriptor charges
//! none of the others, and with `ratelimit.envoy.semantics = envoy` the
//! numbers are envoyproxy/ratelimit's.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coord::envoy::{
    extensions::common::ratelimit::v3::{
        RateLimitDescriptor,
        rate_limit_descriptor::{Entry, RateLimitOverride},
    },
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{Code, rate_limit::Unit},
        rate_limit_service_client::RateLimitServiceClient,
    },
    r#type::v3::RateLimitUnit,
};
use coord::rls::Semantics;
use support::{Coord, redis::RedisServer, serving_with};
use tonic::transport::Channel;

/// envoyproxy/ratelimit's integration configuration
/// (test/integration/runtime/current/ratelimit/config/{basic,another}.yaml),
/// its example (examples/ratelimit/config/example.yaml, the part the
/// `replaces` script uses) and rules for the service tests.
const BASIC: &str = "domain: basic
descriptors:
  - key: key1
    rate_limit:
      unit: second
      requests_per_unit: 50
";
const ANOTHER: &str = "domain: another
descriptors:
  - key: key2
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: key3
    rate_limit:
      unit: hour
      requests_per_unit: 10
  - key: key4
    rate_limit:
      unit: day
      requests_per_unit: 20
";
const EXAMPLE: &str = "domain: rl
descriptors:
  - key: source_cluster
    value: proxy
    descriptors:
      - key: destination_cluster
        value: mock
        rate_limit:
          unit: minute
          requests_per_unit: 1
      - key: destination_cluster
        value: override
        rate_limit:
          replaces:
            - name: banned_limit
          unit: minute
          requests_per_unit: 2
  - key: foo
    rate_limit:
      unit: minute
      requests_per_unit: 2
    descriptors:
      - key: bar
        value: banned
        rate_limit:
          name: banned_limit
          unit: minute
          requests_per_unit: 0
";
const SERVICE: &str = "domain: svc
descriptors:
  - key: unlimited
    rate_limit:
      unlimited: true
  - key: shadow
    shadow_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: strict
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: quota
    quota_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: smooth
    rate_limit:
      unit: second
      requests_per_unit: 10
      algorithm: gcra
";

async fn start(semantics: Semantics, headers: bool) -> (RedisServer, Coord, tempfile::TempDir) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in
        [("basic.yaml", BASIC), ("another.yaml", ANOTHER), ("example.yaml", EXAMPLE), ("svc.yml", SERVICE)]
    {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut config = support::config(&redis.url());
    config.ratelimit.envoy.config_dir = Some(dir.path().to_owned());
    config.ratelimit.envoy.semantics = semantics;
    config.ratelimit.envoy.response_headers = headers;
    // Generous: the debug build on a shared machine, not Envoy's 20 ms.
    config.ratelimit.envoy.timeout = Duration::from_secs(5);
    let coord = serving_with(config).await;
    (redis, coord, dir)
}

fn client(coord: &Coord) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::new(coord.channel())
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries.iter().map(|(k, v)| Entry { key: k.to_string(), value: v.to_string() }).collect(),
        ..Default::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>, hits: u32) -> RateLimitRequest {
    RateLimitRequest { domain: domain.into(), descriptors, hits_addend: hits }
}

async fn ask(c: &mut RateLimitServiceClient<Channel>, req: RateLimitRequest) -> RateLimitResponse {
    c.should_rate_limit(req).await.unwrap().into_inner()
}

/// (code, requests_per_unit, unit, remaining) of every status.
fn summary(r: &RateLimitResponse) -> Vec<(Code, u32, Unit, u32)> {
    r.statuses
        .iter()
        .map(|s| {
            let (n, unit) = s.current_limit.as_ref().map_or((0, Unit::Unknown), |l| (l.requests_per_unit, l.unit()));
            (s.code(), n, unit, s.limit_remaining)
        })
        .collect()
}

/// Unique per run: the counters live for a minute or more.
fn random() -> String {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos().to_string()
}

/// Sleeps past the end of the current minute when fewer than `margin` is
/// left, so a test of a per-minute limit cannot straddle two windows.
async fn clear_of_minute_boundary(margin: Duration) {
    let into = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 60_000;
    let left = Duration::from_millis((60_000 - into) as u64);
    if left < margin {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoyproxy_ratelimit_basic_integration_expectations_hold() {
    let (_redis, coord, _dir) = start(Semantics::Coord, false).await;
    let mut c = client(&coord);

    // An unknown domain: OK, no limit.
    let r = ask(&mut c, request("foo", vec![descriptor(&[("hello", "world")])], 1)).await;
    assert_eq!(r.overall_code(), Code::Ok);
    assert_eq!(summary(&r), vec![(Code::Ok, 0, Unit::Unknown, 0)]);
    assert!(r.statuses[0].current_limit.is_none());

    // A bare key matches any value: 50 per second, 49 left.
    let r = ask(&mut c, request("basic", vec![descriptor(&[("key1", "foo")])], 1)).await;
    assert_eq!(r.overall_code(), Code::Ok);
    assert_eq!(summary(&r), vec![(Code::Ok, 50, Unit::Second, 49)]);
    let reset = r.statuses[0].duration_until_reset.expect("a reset is always given");
    assert!((0..=1).contains(&reset.seconds), "{reset:?}");

    // 25 hits on a 20-per-minute key: the 21st and later are over.
    clear_of_minute_boundary(Duration::from_secs(5)).await;
    let value = random();
    for i in 0..25u32 {
        let r = ask(&mut c, request("another", vec![descriptor(&[("key2", &value)])], 1)).await;
        let (code, left) = if i >= 20 { (Code::OverLimit, 0) } else { (Code::Ok, 20 - (i + 1)) };
        assert_eq!(r.overall_code(), code, "hit {i}");
        assert_eq!(summary(&r), vec![(code, 20, Unit::Minute, left)], "hit {i}");
    }

    // Two keys in one request. envoyproxy/ratelimit keeps charging key2
    // while key3 is over (19, 18, … 5 left); coord charges neither then,
    // as envoyproxy/ratelimit does with STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT
    // (the expectation its test states for that setting: 10 left).
    clear_of_minute_boundary(Duration::from_secs(5)).await;
    let value = random();
    for i in 0..15u32 {
        let two = vec![descriptor(&[("key2", &value)]), descriptor(&[("key3", &value)])];
        let r = ask(&mut c, request("another", two, 1)).await;
        let (code, left1, left2) =
            if i >= 10 { (Code::OverLimit, 10, 0) } else { (Code::Ok, 20 - (i + 1), 10 - (i + 1)) };
        assert_eq!(r.overall_code(), code, "hit {i}");
        assert_eq!(summary(&r), vec![(Code::Ok, 20, Unit::Minute, left1), (code, 10, Unit::Hour, left2)], "hit {i}");
    }

    // The time to reset counts down.
    let value = random();
    let first = ask(&mut c, request("another", vec![descriptor(&[("key4", &value)])], 1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = ask(&mut c, request("another", vec![descriptor(&[("key4", &value)])], 1)).await;
    let secs = |r: &RateLimitResponse| r.statuses[0].duration_until_reset.unwrap().seconds;
    assert!(secs(&second) < secs(&first), "{} then {}", secs(&first), secs(&second));
    assert_eq!(summary(&second), vec![(Code::Ok, 20, Unit::Day, 18)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_semantics_reproduce_envoyproxy_ratelimit_numbers() {
    let (_redis, coord, _dir) = start(Semantics::Envoy, false).await;
    let mut c = client(&coord);
    // The same two-key run: key2 is charged on every hit, admitted or not.
    clear_of_minute_boundary(Duration::from_secs(5)).await;
    let value = random();
    for i in 0..15u32 {
        let two = vec![descriptor(&[("key2", &value)]), descriptor(&[("key3", &value)])];
        let r = ask(&mut c, request("another", two, 1)).await;
        let (code, left2) = if i >= 10 { (Code::OverLimit, 0) } else { (Code::Ok, 10 - (i + 1)) };
        assert_eq!(summary(&r), vec![(Code::Ok, 20, Unit::Minute, 20 - (i + 1)), (code, 10, Unit::Hour, left2)], "{i}");
    }
    // Denied hits are charged: after a request of 5 over a limit of 10
    // with 9 used, a request of 1 is over too (coord would admit it).
    let value = random();
    let hit = |n| request("another", vec![descriptor(&[("key3", &value)])], n);
    assert_eq!(ask(&mut c, hit(9)).await.overall_code(), Code::Ok);
    assert_eq!(ask(&mut c, hit(5)).await.overall_code(), Code::OverLimit);
    assert_eq!(ask(&mut c, hit(1)).await.overall_code(), Code::OverLimit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_hit_charges_nothing_with_coord_semantics() {
    let (_redis, coord, _dir) = start(Semantics::Coord, false).await;
    let mut c = client(&coord);
    clear_of_minute_boundary(Duration::from_secs(5)).await; // and so of the hour
    let value = random();
    let hit = |n| request("another", vec![descriptor(&[("key3", &value)])], n);
    assert_eq!(ask(&mut c, hit(9)).await.overall_code(), Code::Ok);
    assert_eq!(summary(&ask(&mut c, hit(5)).await), vec![(Code::OverLimit, 10, Unit::Hour, 0)]);
    assert_eq!(summary(&ask(&mut c, hit(1)).await), vec![(Code::Ok, 10, Unit::Hour, 0)]);
}

/// The `replaces` integration script: a rule that replaces `banned_limit`
/// (0 per minute) lets the request through, twice, then limits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_cancels_the_named_rule_as_envoyproxy_ratelimit_does() {
    let (_redis, coord, _dir) = start(Semantics::Coord, false).await;
    let mut c = client(&coord);
    clear_of_minute_boundary(Duration::from_secs(5)).await;
    let user = format!("bkthomps{}", random());
    let banned = || descriptor(&[("foo", &user), ("bar", "banned")]);
    let cluster = |d: &str| descriptor(&[("source_cluster", "proxy"), ("destination_cluster", d)]);
    let r = ask(&mut c, request("rl", vec![banned()], 1)).await;
    assert_eq!(r.overall_code(), Code::OverLimit, "0 per minute");
    let r = ask(&mut c, request("rl", vec![banned(), cluster("mock")], 1)).await;
    assert_eq!(r.overall_code(), Code::OverLimit, "mock does not replace the ban");
    // Only this run's user is new; the override counter is shared, so the
    // run needs a fresh minute (or a fresh Redis, which it has).
    for (i, expect) in [Code::Ok, Code::Ok, Code::OverLimit].into_iter().enumerate() {
        let r = ask(&mut c, request("rl", vec![banned(), cluster("override")], 1)).await;
        assert_eq!(r.overall_code(), expect, "override hit {i}: {r:?}");
        assert_eq!(r.statuses[0].code(), Code::Ok, "the replaced rule is not applied");
        assert!(r.statuses[0].current_limit.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_shadow_and_quota_rules_answer_as_envoyproxy_ratelimit() {
    let (_redis, coord, _dir) = start(Semantics::Coord, false).await;
    let mut c = client(&coord);
    clear_of_minute_boundary(Duration::from_secs(5)).await; // and so of the hour
    let v = random();

    // TestUnlimited: OK, no limit, remaining MaxUint32.
    let r = ask(&mut c, request("svc", vec![descriptor(&[("unlimited", &v)])], 1)).await;
    assert_eq!(r.overall_code(), Code::Ok);
    assert_eq!(r.statuses[0].limit_remaining, u32::MAX);
    assert!(r.statuses[0].current_limit.is_none());

    // TestRuleShadowMode: over the limit, yet OK.
    for _ in 0..3 {
        let r = ask(&mut c, request("svc", vec![descriptor(&[("shadow", &v)])], 1)).await;
        assert_eq!(r.overall_code(), Code::Ok);
        assert_eq!(r.statuses[0].code(), Code::Ok);
    }

    // TestMixedRuleShadowMode: a shadow rule and a real one both over.
    ask(&mut c, request("svc", vec![descriptor(&[("strict", &v)])], 1)).await;
    let both = vec![descriptor(&[("shadow", &v)]), descriptor(&[("strict", &v)])];
    let r = ask(&mut c, request("svc", both, 1)).await;
    assert_eq!(r.overall_code(), Code::OverLimit);
    assert_eq!((r.statuses[0].code(), r.statuses[1].code()), (Code::Ok, Code::OverLimit));

    // Quota mode: OVER_LIMIT only when every quota descriptor is over.
    let q = random();
    ask(&mut c, request("svc", vec![descriptor(&[("quota", &q)])], 1)).await;
    let r = ask(&mut c, request("svc", vec![descriptor(&[("quota", &q)])], 1)).await;
    assert_eq!(r.overall_code(), Code::OverLimit, "the only quota descriptor is over");
    let fresh = random();
    let r = ask(&mut c, request("svc", vec![descriptor(&[("quota", &q)]), descriptor(&[("quota", &fresh)])], 1)).await;
    assert_eq!(r.overall_code(), Code::Ok, "one quota descriptor of two is over: {r:?}");
    assert_eq!(r.statuses[0].code(), Code::OverLimit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_addend_and_overrides_are_honoured_as_envoy_sends_them() {
    let (_redis, coord, _dir) = start(Semantics::Coord, true).await;
    let mut c = client(&coord);
    clear_of_minute_boundary(Duration::from_secs(5)).await; // and so of the hour
    let v = random();
    let key3 = || descriptor(&[("key3", &v)]);

    // Request hits_addend: 0 means 1; 4 charges 4.
    assert_eq!(summary(&ask(&mut c, request("another", vec![key3()], 0)).await)[0].3, 9);
    assert_eq!(summary(&ask(&mut c, request("another", vec![key3()], 4)).await)[0].3, 5);
    // A descriptor's own hits_addend wins; an explicit 0 only looks.
    let mut own = key3();
    own.hits_addend = Some(2);
    assert_eq!(summary(&ask(&mut c, request("another", vec![own], 4)).await)[0].3, 3);
    let mut peek = key3();
    peek.hits_addend = Some(0);
    assert_eq!(summary(&ask(&mut c, request("another", vec![peek], 4)).await)[0].3, 3);

    // A limit override replaces the configured limit (in a known domain).
    let mut custom = descriptor(&[("key3", &random())]);
    custom.limit = Some(RateLimitOverride { requests_per_unit: 3, unit: RateLimitUnit::Minute.into() });
    let r = ask(&mut c, request("another", vec![custom], 1)).await;
    assert_eq!(summary(&r), vec![(Code::Ok, 3, Unit::Minute, 2)]);

    // RateLimit-* headers from the descriptor closest to its limit.
    let names: Vec<(&str, &str)> =
        r.response_headers_to_add.iter().map(|h| (h.key.as_str(), h.value.as_str())).collect();
    assert_eq!(&names[..2], &[("RateLimit-Limit", "3"), ("RateLimit-Remaining", "2")]);
    assert_eq!(names[2].0, "RateLimit-Reset");

    // coord's extension: GCRA spaces 10 per second evenly.
    let smooth = random();
    let r = ask(&mut c, request("svc", vec![descriptor(&[("smooth", &smooth)])], 10)).await;
    assert_eq!(r.overall_code(), Code::Ok, "a burst of 10 fits");
    let r = ask(&mut c, request("svc", vec![descriptor(&[("smooth", &smooth)])], 5)).await;
    assert_eq!(r.overall_code(), Code::OverLimit, "5 more within 500 ms do not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let (_redis, coord, _dir) = start(Semantics::Coord, false).await;
    let mut c = client(&coord);
    let invalid = |r: Result<tonic::Response<RateLimitResponse>, tonic::Status>, field: &str| {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    };
    invalid(c.should_rate_limit(request("", vec![descriptor(&[("a", "b")])], 1)).await, "domain");
    invalid(c.should_rate_limit(request("basic", vec![], 1)).await, "descriptors");
    invalid(c.should_rate_limit(request("basic", vec![descriptor(&[])], 1)).await, "descriptors[0].entries");
    invalid(
        c.should_rate_limit(request("basic", vec![descriptor(&[("", "x")])], 1)).await,
        "descriptors[0].entries[0].key",
    );
    let mut bad = descriptor(&[("key1", "x")]);
    bad.limit = Some(RateLimitOverride { requests_per_unit: 3, unit: 42 });
    invalid(c.should_rate_limit(request("basic", vec![bad], 1)).await, "descriptors[0].limit.unit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_added_file_is_reloaded_and_a_bad_one_keeps_the_previous_rules() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.yaml");
    let rules = |n: u32| {
        format!("domain: live\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: hour, requests_per_unit: {n} }}\n")
    };
    std::fs::write(&file, rules(5)).unwrap();
    let mut config = support::config(&redis.url());
    config.ratelimit.envoy.config_dir = Some(dir.path().to_owned());
    config.ratelimit.reload_interval = Duration::from_millis(100);
    let coord = serving_with(config).await;
    let mut c = client(&coord);
    let limit_now = |c: &mut RateLimitServiceClient<Channel>| {
        let mut c = c.clone();
        async move { summary(&ask(&mut c, request("live", vec![descriptor(&[("k", "v")])], 0)).await)[0].1 }
    };
    assert_eq!(limit_now(&mut c).await, 5);

    std::fs::write(&file, rules(7)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while limit_now(&mut c).await != 7 {
        assert!(std::time::Instant::now() < deadline, "the changed file was not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A file added to the directory: its domain appears.
    let added = "domain: added\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 3 }\n";
    std::fs::write(dir.path().join("added.yaml"), added).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(&mut c, request("added", vec![descriptor(&[("k", "v")])], 0)).await;
        if summary(&r)[0].1 == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the added file was not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A unit that does not exist: rejected whole, the 7 stays.
    std::fs::write(&file, rules(9).replace("hour", "fortnight")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(limit_now(&mut c).await, 7);
}

/// Redis stopped (SIGSTOP): no answer within the timeout. By default the
/// call fails UNAVAILABLE quickly (Envoy's failure_mode_deny decides);
/// `failure: open` / `closed` answer OK / OVER_LIMIT instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_fails_fast_in_the_configured_mode() {
    for (failure, expect) in [
        (coord::rls::Failure::Error, None),
        (coord::rls::Failure::Open, Some(Code::Ok)),
        (coord::rls::Failure::Closed, Some(Code::OverLimit)),
    ] {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("another.yaml"), ANOTHER).unwrap();
        let mut config = support::config(&redis.url());
        config.ratelimit.envoy.config_dir = Some(dir.path().to_owned());
        config.ratelimit.envoy.failure = failure;
        config.ratelimit.envoy.timeout = Duration::from_millis(200);
        let coord = serving_with(config).await;
        let mut c = client(&coord);
        assert_eq!(
            ask(&mut c, request("another", vec![descriptor(&[("key3", "x")])], 1)).await.overall_code(),
            Code::Ok
        );
        redis.stop();
        let started = std::time::Instant::now();
        let answer = c.should_rate_limit(request("another", vec![descriptor(&[("key3", "y")])], 1)).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{failure:?}: took {:?}", started.elapsed());
        match (expect, answer) {
            (None, Err(e)) => assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}"),
            (Some(code), Ok(r)) => {
                let r = r.into_inner();
                assert_eq!(r.overall_code(), code, "{failure:?}: {r:?}");
                assert_eq!(r.statuses[0].current_limit.as_ref().map(|l| l.requests_per_unit), Some(10));
            }
            (expect, answer) => panic!("{failure:?}: expected {expect:?}, got {answer:?}"),
        }
        redis.cont();
    }
}
