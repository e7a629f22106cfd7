//! The embedded default: `coord serve` with no Redis configured starts a
//! private redis-server and never leaves it behind — not after a clean stop,
//! not after SIGKILL of coord.

mod support;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use support::{
    Coord,
    process::{alive, coord_output, json_number, signal, spawn_serve, wait_gone, wait_log_line},
    redis::free_port,
};
use tonic_health::pb::health_check_response::ServingStatus;

struct Started {
    child: std::process::Child,
    redis_pid: u32,
    grpc: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

fn start_embedded() -> Started {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("coord.log");
    let grpc = free_port();
    let listen = format!("127.0.0.1:{grpc}");
    let child = spawn_serve(&["--listen", &listen, "--metrics-enabled", "false"], &log);
    let line = wait_log_line(&log, "started embedded redis-server", Duration::from_secs(20));
    let redis_pid = json_number(&line, "pid") as u32;
    assert!(alive(redis_pid), "embedded redis {redis_pid} is running");
    Started { child, redis_pid, grpc, _dir: dir, log }
}

/// Waits until the child coord reports SERVING. The client lives in its own
/// runtime, dropped on return, so its connection is closed before the test
/// blocks on the child (an open, unpolled connection would stall the drain).
fn wait_serving(grpc: u16) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let probe = Coord::client_only(&format!("http://127.0.0.1:{grpc}"));
        probe.wait_health("", ServingStatus::Serving, Duration::from_secs(20)).await;
    });
}

#[test]
fn embedded_redis_serves_and_is_stopped_on_sigterm() {
    let mut started = start_embedded();
    wait_serving(started.grpc);
    let sent = Instant::now();
    signal(started.child.id(), "TERM");
    let status = started.child.wait().unwrap();
    assert!(status.success(), "coord exited with {status}");
    wait_gone(started.redis_pid, Duration::from_secs(5));
    let log = std::fs::read_to_string(&started.log).unwrap();
    assert!(log.contains("coord stopped"), "{log}");
    // The default grace is 10 s; with nothing open the drain is immediate.
    assert!(sent.elapsed() < Duration::from_secs(5), "stop took {:?}\n{log}", sent.elapsed());
}

#[test]
fn embedded_redis_dies_with_coord_on_sigkill() {
    let mut started = start_embedded();
    wait_serving(started.grpc);
    signal(started.child.id(), "KILL");
    let _ = started.child.wait();
    // The kernel delivers the parent-death signal; no cleanup code runs.
    let took = wait_gone(started.redis_pid, Duration::from_secs(5));
    eprintln!("embedded redis gone {took:?} after SIGKILL of coord");
}

#[test]
fn missing_redis_server_exits_with_install_instructions() {
    let out = coord_output(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-enabled",
            "false",
            "--redis-server",
            "/nonexistent/redis-server",
        ],
        &[],
    );
    // A configuration error, worded and numbered as --check-config says it.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid setting redis.embedded_binary"), "{stderr}");
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
    assert!(stderr.contains("--redis-url"), "{stderr}");
}
