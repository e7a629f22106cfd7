//! `coord bench`: every scenario runs briefly against a live coord and
//! reports non-zero throughput with zero errors; `--vs-redis` runs
//! redis-benchmark on the same script and reports the ratio.

mod support;

use support::{Coord, process::coord_command, redis::RedisServer, serving};

async fn bench(coord: &Coord, args: &[&str]) -> serde_json::Value {
    let mut cmd = coord_command();
    cmd.arg("--endpoint").arg(format!("http://{}", coord.addr)).arg("bench");
    // coord runs in this process.
    cmd.args(["--server-pid", &std::process::id().to_string()]);
    cmd.args(["--duration", "1s", "--warmup", "100ms", "--json", "--concurrency", "4", "--connections", "2"])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run coord bench")).await.unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert!(report["throughput"].as_f64().unwrap() > 0.0, "{args:?}: {report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{args:?}: {report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reports_throughput_without_errors() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let url = redis.url();
    for scenario in
        ["lock", "lock-contended", "lock-handoff", "semaphore", "read-lock", "election-failover", "ratelimit"]
    {
        let report = bench(&coord, &[scenario, "--redis-url", &url]).await;
        assert_eq!(report["scenario"], scenario);
        assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
        // CPU per request: coord's from /proc, Redis's from its own accounting.
        assert!(report["coord_cpu_us_per_op"].as_f64().is_some(), "{report}");
        assert!(report["redis_cpu_us_per_op"].as_f64().is_some(), "{report}");
        assert!(report["redis_script_us_per_op"].as_f64().unwrap() > 0.0, "{report}");
    }
    bench(&coord, &["ratelimit", "--algorithm", "gcra"]).await;
    // Open loop: --rate paces the requests (200/s for the 1 s measured).
    let report = bench(&coord, &["ratelimit", "--rate", "200"]).await;
    let sent = report["requests"].as_u64().unwrap();
    assert!((100..=260).contains(&sent), "{sent} requests at 200/s for 1 s: {report}");
    let report = bench(&coord, &["keepalive", "--leases", "20", "--lease-ttl", "600ms", "--redis-url", &url]).await;
    assert!(report["redis_script_us_per_op"].as_f64().unwrap() > 0.0, "{report}");
    for scenario in ["board-submit", "board-top", "board-around"] {
        bench(&coord, &[scenario, "--board-size", "300"]).await;
    }
    let report = bench(&coord, &["pubsub", "--subscribers", "20", "--rate", "20", "--redis-url", &url]).await;
    assert!(report["publishes"].as_u64().unwrap() >= 10, "{report}");
    assert!(report["redis_script_us_per_op"].as_f64().unwrap() > 0.0, "{report}");
    // Several channels and publishers, back to back: every publish reaches
    // its channel's 5 subscribers (a miss is a NotDelivered error).
    let args = ["pubsub", "--subscribers", "20", "--channels", "4", "--publishers", "3", "--rate", "0"];
    let report = bench(&coord, &args).await;
    let publishes = report["publishes"].as_u64().unwrap();
    assert!(publishes >= 20, "{report}");
    assert_eq!(report["requests"].as_u64().unwrap(), publishes * 5, "{report}");
    assert_eq!(report["channels"], 4, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vs_redis_runs_redis_benchmark_on_the_same_script() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    for args in [["ratelimit", "--vs-redis"], ["board-around", "--vs-redis"]] {
        let mut full = args.to_vec();
        let url = redis.url();
        full.extend(["--redis-url", &url, "--board-size", "2000"]);
        let report = bench(&coord, &full).await;
        assert!(report["redis_benchmark"]["throughput"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["ratio"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["redis_benchmark"]["command"].as_str().unwrap().contains("EVALSHA"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_checks_envoys_api_against_a_configured_domain() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The rule BENCHMARKS.md gives: the same limit as `ratelimit --algorithm fixed`.
    let yaml = "domain: bench\ndescriptors:\n  - key: subject\n    rate_limit: { unit: minute, requests_per_unit: 1000000000 }\n";
    std::fs::write(dir.path().join("bench.yaml"), yaml).unwrap();
    let mut config = support::config(&redis.url());
    config.ratelimit.envoy.config_dir = Some(dir.path().to_owned());
    let coord = support::serving_with(config).await;
    let report = bench(&coord, &["rls", "--subjects", "100", "--redis-url", &redis.url()]).await;
    assert_eq!(report["scenario"], "rls");
    assert!(report["redis_cpu_us_per_op"].as_f64().is_some(), "{report}");
}
