//! Rate-limit policies: named limits from a file, overrides (most specific
//! wins), shadow mode, the deny cache, fail-open and fail-closed with Redis
//! stopped, and hot reload of a valid and an invalid file (on change, and
//! on SIGHUP with the real binary).

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use coord::pb::{
    CheckRequest, CheckResponse, DecisionSource, RefundRequest, rate_limit_service_client::RateLimitServiceClient,
};
use support::{redis::RedisServer, serving_with};
use tonic::{Code, transport::Channel};

const POLICIES: &str = r#"
[policies.api]
limits = [{ name = "per-minute", fixed_window = { limit = 3, window_ms = 60000 } }]
[[policies.api.overrides]]
subject = "vip"
limits = [{ name = "per-minute", fixed_window = { limit = 5, window_ms = 60000 } }]

[policies.observe]
shadow = true
limits = [{ name = "tiny", token_bucket = { capacity = 1, refill_tokens = 1, refill_period_ms = 3600000 } }]

[policies.open]
failure = "open"
timeout = "100ms"
limits = [{ name = "b", token_bucket = { capacity = 100, refill_tokens = 1, refill_period_ms = 1000 } }]

[policies.closed]
failure = "closed"
timeout = "100ms"
limits = [{ name = "b", token_bucket = { capacity = 100, refill_tokens = 1, refill_period_ms = 1000 } }]
"#;

async fn check(c: &mut RateLimitServiceClient<Channel>, policy: &str, subject: &str) -> CheckResponse {
    c.check(CheckRequest { subject: subject.into(), policy: policy.into(), cost: Some(1), ..Default::default() })
        .await
        .expect("check")
        .into_inner()
}

fn write(path: &Path, text: &str) {
    // Write-then-rename, as config management does.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(redis: &RedisServer, file: &Path) -> support::Coord {
    let mut config = support::config(&redis.url());
    config.ratelimit.policy_file = Some(file.to_path_buf());
    config.ratelimit.reload_interval = Duration::from_millis(100);
    serving_with(config).await
}

#[tokio::test]
async fn policies_apply_with_overrides_shadow_and_the_deny_cache() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.toml");
    write(&file, POLICIES);
    let coord = start(&redis, &file).await;
    let mut c = coord.rate_limits();
    // The counts below are of one fixed minute.
    support::inside_one_window(Duration::from_secs(60), Duration::from_secs(10)).await;

    for _ in 0..3 {
        assert!(check(&mut c, "api", "alice").await.allowed);
    }
    let denied = check(&mut c, "api", "alice").await;
    assert!(!denied.allowed);
    assert_eq!(denied.source, DecisionSource::Redis as i32);
    // The override: the exact subject gets 5.
    for _ in 0..5 {
        assert!(check(&mut c, "api", "vip").await.allowed);
    }
    assert!(!check(&mut c, "api", "vip").await.allowed);

    // Denied with a long retry-after: remembered, Redis not asked again.
    let cached = check(&mut c, "api", "alice").await;
    assert!(!cached.allowed);
    assert_eq!(cached.source, DecisionSource::LocalCache as i32);
    assert!(cached.limits[0].retry_after_ms > 0);
    // A refund forgets the remembered denial.
    c.refund(RefundRequest {
        subject: "alice".into(),
        policy: "api".into(),
        limit_name: "per-minute".into(),
        amount: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let again = check(&mut c, "api", "alice").await;
    assert!(again.allowed && again.source == DecisionSource::Redis as i32, "{again:?}");

    // Shadow: computed and reported, always allowed.
    assert!(check(&mut c, "observe", "bob").await.allowed);
    let shadow = check(&mut c, "observe", "bob").await;
    assert!(shadow.allowed && shadow.shadow_denied, "{shadow:?}");
    assert!(!shadow.limits[0].allowed);

    let err =
        c.check(CheckRequest { subject: "x".into(), policy: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("policy"), "{}", err.message());
}

#[tokio::test]
async fn stopped_redis_fails_open_or_closed_quickly() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.toml");
    write(&file, POLICIES);
    let coord = start(&redis, &file).await;
    let mut c = coord.rate_limits();
    redis.stop();
    let start = Instant::now();
    let open = check(&mut c, "open", "s").await;
    assert!(open.allowed && open.source == DecisionSource::FailOpen as i32, "{open:?}");
    let closed = check(&mut c, "closed", "s").await;
    assert!(!closed.allowed && closed.source == DecisionSource::FailClosed as i32, "{closed:?}");
    // Two decisions bounded by the policies' 100 ms Redis budget.
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    redis.cont();
}

#[tokio::test]
async fn policy_file_reloads_and_an_invalid_file_keeps_the_old_policies() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.toml");
    write(&file, POLICIES);
    let coord = start(&redis, &file).await;
    let mut c = coord.rate_limits();
    assert_eq!(check(&mut c, "api", "r1").await.limits[0].limit, 3);

    // A valid change is picked up.
    write(&file, &POLICIES.replace("limit = 3,", "limit = 7,"));
    let start = Instant::now();
    while check(&mut c, "api", "r2").await.limits[0].limit != 7 {
        assert!(start.elapsed() < Duration::from_secs(10), "reload not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An invalid file is rejected whole; the previous policies stay.
    let errors_before = reload_errors();
    write(&file, &POLICIES.replace("limit = 3,", "limit = 0,"));
    let start = Instant::now();
    while reload_errors() == errors_before {
        assert!(start.elapsed() < Duration::from_secs(10), "invalid file not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(check(&mut c, "api", "r3").await.limits[0].limit, 7);
}

fn reload_errors() -> u64 {
    coord::metrics::handle()
        .render()
        .lines()
        .find(|l| l.starts_with(r#"coord_ratelimit_policy_reloads_total{result="error"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sighup_reloads_the_policy_file() {
    use support::process::{free_port_pair, signal, spawn_serve, wait_log_line};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.toml");
    write(&file, POLICIES);
    let log = dir.path().join("coord.log");
    let (grpc, _) = free_port_pair();
    let listen = format!("127.0.0.1:{grpc}");
    let mut child = spawn_serve(
        &[
            "--listen",
            &listen,
            "--metrics-enabled",
            "false",
            "--redis-url",
            &redis.url(),
            "--ratelimit-policy-file",
            file.to_str().unwrap(),
            // Only SIGHUP may trigger the reload here.
            "--ratelimit-reload-interval",
            "1h",
        ],
        &log,
    );
    wait_log_line(&log, "coord serving gRPC", Duration::from_secs(20));
    write(&file, &POLICIES.replace("limit = 3,", "limit = 9,"));
    signal(child.id(), "HUP");
    let line = wait_log_line(&log, "rate-limit policies loaded", Duration::from_secs(10));
    assert!(line.contains("\"policies\":4"), "{line}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let limit = runtime.block_on(async {
        let mut c = support::Coord::client_only(&format!("http://{listen}")).rate_limits();
        check(&mut c, "api", "h").await.limits[0].limit
    });
    signal(child.id(), "TERM");
    let _ = child.wait();
    assert_eq!(limit, 9);
}
