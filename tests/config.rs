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
