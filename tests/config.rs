//! Configuration: defaults < TOML file < COORD_* environment < flags;
//! validation errors name the setting; `--print-config` redacts secrets.

mod support;

use support::process::coord_output;

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut full = vec!["serve", "--print-config"];
    full.extend_from_slice(args);
    let out = coord_output(&full, env);
    assert!(out.status.success(), "coord failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn failing(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    let out = coord_output(&full, env);
    assert_eq!(out.status.code(), Some(2), "expected a configuration error, got {:?}", out.status);
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coord.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:1111\"\n[redis]\npool_size = 7\nkey_prefix = \"file\"\ncommand_timeout = \"3s\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let text = print_config(
        &["--config", file, "--key-prefix", "flag"],
        &[("COORD_REDIS_POOL_SIZE", "9"), ("COORD_KEY_PREFIX", "env")],
    );
    assert!(text.contains("listen = \"127.0.0.1:1111\""), "file over default:\n{text}");
    assert!(text.contains("command_timeout = \"3s\""), "file over default:\n{text}");
    assert!(text.contains("pool_size = 9"), "env over file:\n{text}");
    assert!(text.contains("key_prefix = \"flag\""), "flag over env:\n{text}");
    assert!(text.contains("connect_timeout = \"1s\""), "default kept:\n{text}");

    // The config file itself may come from the environment.
    let text = print_config(&[], &[("COORD_CONFIG", file)]);
    assert!(text.contains("pool_size = 7"), "{text}");
}

#[test]
fn validation_errors_name_the_setting() {
    let err = failing(&["--redis-pool-size", "0"], &[]);
    assert!(err.contains("redis.pool_size") && err.contains("between 1 and 1024"), "{err}");

    let err = failing(&["--redis-url", "http://localhost"], &[]);
    assert!(err.contains("redis.url") && err.contains("http"), "{err}");

    let err = failing(&["--redis-url", "redis://a:1", "--redis-cluster", "redis://b:1"], &[]);
    assert!(err.contains("redis.cluster"), "{err}");

    let err = failing(&["--health-interval", "1ms"], &[]);
    assert!(err.contains("server.health_interval"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[redis]\npool_sise = 3\n").unwrap();
    let err = failing(&["--config", file.to_str().unwrap()], &[]);
    assert!(err.contains("pool_sise"), "{err}");
}

#[test]
fn bad_environment_values_name_the_variable_or_flag() {
    let out = coord_output(&["serve", "--print-config"], &[("COORD_REDIS_COMMAND_TIMEOUT", "banana")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--redis-command-timeout"), "{err}");
}

#[test]
fn print_config_redacts_secrets() {
    let text = print_config(
        &["--redis-url", "redis://app:hunter2@127.0.0.1:6379"],
        &[("COORD_REDIS_PASSWORD", "s3cret-pass")],
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("s3cret-pass"), "{text}");
    assert!(text.contains("redacted"), "{text}");
    assert!(text.contains("app"), "user name is not a secret:\n{text}");
}

/// WAIT runs inside one command's response timeout, so a longer replica
/// wait would answer "timed out" instead of "too few replicas".
#[test]
fn replica_ack_timeout_must_be_below_the_command_timeout() {
    let args = ["--lock-min-replicas", "1", "--lock-replica-ack-timeout", "1s", "--redis-command-timeout", "1s"];
    let err = failing(&args, &[]);
    assert!(err.contains("lock.replica_ack_timeout") && err.contains("redis.command_timeout"), "{err}");
    print_config(
        &["--lock-min-replicas", "1", "--lock-replica-ack-timeout", "900ms", "--redis-command-timeout", "1s"],
        &[],
    );
}

#[test]
fn redlock_needs_at_least_three_nodes_and_no_replica_wait() {
    let err = failing(&["--redlock-nodes", "redis://a:1,redis://b:1"], &[]);
    assert!(err.contains("lock.redlock.nodes") && err.contains("at least 3"), "{err}");
    let err = failing(&["--redlock-nodes", "redis://a:1,http://b:1,redis://c:1"], &[]);
    assert!(err.contains("lock.redlock.nodes"), "{err}");
    let err = failing(&["--redlock-nodes", "redis://a:1,redis://b:1,redis://c:1", "--lock-min-replicas", "1"], &[]);
    assert!(err.contains("lock.min_replicas"), "{err}");
    let text = print_config(&[], &[("COORD_LOCK_REDLOCK_NODES", "redis://u:pw1@a:1,redis://b:1,redis://c:1")]);
    assert!(text.contains("redis://b:1") && !text.contains("pw1"), "{text}");
}

/// `coord serve --check-config …`: exit code, stdout, stderr.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut full = vec!["serve", "--check-config"];
    full.extend_from_slice(args);
    let out = coord_output(&full, env);
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

const POLICIES: &str = r#"
[policies.api]
limits = [{ name = "per-second", fixed_window = { limit = 10, window_ms = 1000 } }]
[policies.login]
limits = [{ name = "burst", gcra = { rate = 5, period_ms = 60000, burst = 5 } }]
"#;

#[test]
fn check_config_accepts_a_good_configuration_without_binding_or_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("policies.toml"), POLICIES).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["redis".to_owned()]).unwrap().self_signed(&ca_key).unwrap();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    // Both ports are taken: binding either would fail the check.
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = format!(
        "[server]\nlisten = \"{}\"\nshutdown_grace = \"20s\"\n[metrics]\nlisten = \"{}\"\n\
         [redis]\nurl = \"rediss://redis.invalid:6380\"\ntls_ca_file = \"{}\"\n\
         [ratelimit]\npolicy_file = \"{}\"\n",
        grpc.local_addr().unwrap(),
        metrics.local_addr().unwrap(),
        path("ca.pem"),
        path("policies.toml"),
    );
    std::fs::write(path("coord.toml"), config).unwrap();
    let started = std::time::Instant::now();
    // The host does not resolve and the password comes from the
    // environment: neither matters without a connection.
    let (code, stdout, stderr) =
        check_config(&["--config", &path("coord.toml")], &[("COORD_REDIS_PASSWORD", "s3cret-pass")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("coord: configuration ok"), "{stdout}");
    assert!(stdout.contains("rediss://redis.invalid:6380 (TLS files ok)"), "{stdout}");
    assert!(stdout.contains("2 rate-limit policies"), "{stdout}");
    assert!(stdout.contains("liveness") && stdout.contains("coord.v1.LockService"), "{stdout}");
    assert!(!stdout.contains("s3cret-pass"), "{stdout}");

    // With --print-config it also prints the effective configuration.
    let (code, stdout, _) = check_config(&["--config", &path("coord.toml"), "--print-config"], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("configuration ok") && stdout.contains("shutdown_grace = \"20s\""), "{stdout}");

    // Redlock nodes and a cluster are parsed too.
    let (code, stdout, stderr) = check_config(
        &["--redis-cluster", "redis://a:7000,redis://b:7000", "--redlock-nodes", "redis://x:1,redis://y:1,redis://z:1"],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("cluster redis://a:7000,redis://b:7000; locks on Redlock (3 nodes)"), "{stdout}");
}

#[test]
fn check_config_failures_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let fails = |args: &[&str], setting: &str| {
        let (code, stdout, stderr) = check_config(args, &[]);
        assert_eq!(code, Some(2), "{args:?} passed: {stdout}");
        assert!(stderr.contains(setting), "{args:?}: expected {setting} in {stderr}");
        stderr
    };
    let url = "--redis-url=redis://127.0.0.1:1";

    // The file denies unknown keys, also misplaced ones, and bad values.
    std::fs::write(path("typo.toml"), "[redis]\npool_sise = 3\n").unwrap();
    fails(&["--config", &path("typo.toml")], "pool_sise");
    std::fs::write(path("misplaced.toml"), "[server]\npool_size = 3\n").unwrap();
    fails(&["--config", &path("misplaced.toml")], "pool_size");
    std::fs::write(path("value.toml"), "[server]\nshutdown_grace = \"soon\"\n").unwrap();
    fails(&["--config", &path("value.toml")], "shutdown_grace");
    std::fs::write(path("type.toml"), "[redis]\npool_size = \"four\"\n").unwrap();
    fails(&["--config", &path("type.toml")], "pool_size");
    fails(&[url, "--shutdown-grace", "11m"], "server.shutdown_grace");
    fails(&["--redis-url", "redis://[::1"], "redis.url");
    fails(&[url, "--metrics-addr", "0.0.0.0:50051"], "metrics.listen");

    // What serve reads from other files.
    std::fs::write(
        path("policies.toml"),
        "[policies.api]\nlimits = [{ name = \"s\", fixed_window = { limit = 0, window_ms = 1000 } }]\n",
    )
    .unwrap();
    let err = fails(&[url, "--ratelimit-policy-file", &path("policies.toml")], "ratelimit.policy_file");
    assert!(err.contains("policies.api.limits[0].fixed_window.limit"), "{err}");
    fails(&[url, "--ratelimit-policy-file", &path("missing.toml")], "ratelimit.policy_file");
    std::fs::write(path("ca.pem"), "not a certificate\n").unwrap();
    fails(&["--redis-url", "rediss://r:6380", "--redis-tls-ca-file", &path("ca.pem")], "redis.tls_ca_file");
    fails(&["--redis-url", "rediss://r:6380", "--redis-tls-ca-file", &path("missing.pem")], "redis.tls_ca_file");

    // No Redis configured means the embedded mode, which needs its binary.
    fails(&["--redis-server", &path("no-redis-server")], "redis.embedded_binary");
}

#[test]
fn check_config_validates_tls_and_credential_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let url = "--redis-url=redis://127.0.0.1:1";
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(path("other-key.pem"), other.serialize_pem()).unwrap();
    let (_, id, digest) = coord::auth::principals::new_key().unwrap();
    std::fs::write(
        path("principals.toml"),
        format!(
            "[[principal]]\nname = \"a\"\nkeys = [{{ id = {id:?}, sha256 = {digest:?} }}]\n\
             grants = [{{ namespaces = [\"a\"], permissions = [\"lock\"] }}]\n"
        ),
    )
    .unwrap();
    let tls = ["--tls-cert-file", &path("cert.pem"), "--tls-key-file", &path("key.pem")];
    let auth = ["--auth-enabled", "true", "--auth-principals-file", &path("principals.toml")];
    let mut args = vec![url];
    args.extend(tls);
    args.extend(auth);
    let (code, stdout, stderr) = check_config(&args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("(TLS)") && stdout.contains("auth on (1 principals)"), "{stdout}");

    let fails = |args: &[&str], setting: &str| {
        let (code, stdout, stderr) = check_config(args, &[]);
        assert_eq!(code, Some(2), "{args:?} passed: {stdout}");
        assert!(stderr.contains(setting), "{args:?}: expected {setting} in {stderr}");
    };
    fails(&[url, "--tls-cert-file", &path("cert.pem")], "server.tls.key_file");
    fails(
        &[url, "--tls-cert-file", &path("cert.pem"), "--tls-key-file", &path("other-key.pem")],
        "server.tls.key_file",
    );
    fails(&[url, "--tls-cert-file", &path("key.pem"), "--tls-key-file", &path("key.pem")], "server.tls.cert_file");
    fails(&[url, "--tls-client-ca-file", &path("cert.pem")], "server.tls.client_ca_file");
    fails(&[url, "--auth-enabled", "true"], "auth.principals_file");
    std::fs::write(
        path("bad.toml"),
        "[[principal]]\nname = \"a\"\ngrants = [{ namespaces = [\"a\"], permissions = [\"locks\"] }]\n",
    )
    .unwrap();
    fails(
        &[url, "--auth-enabled", "true", "--auth-principals-file", &path("bad.toml")],
        "principal[0].grants[0].permissions[0]",
    );
}
