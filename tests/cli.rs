//! The `coord` client subcommands against a live coord: `lock run` releases
//! after the command and propagates its exit code, refuses to run it while
//! another holder has the lock, kills the command when
//! the lock is force-released, `--output json` parses, and `health` exit
//! codes work as a probe; `sem run`, `lock run --shared` and `elect run`
//! hold while their command runs.

mod support;

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use coord::pb::{AcquireRequest, AcquireStatus, DescribeRequest, ForceReleaseRequest};
use support::{Coord, process::coord_command, redis::RedisServer, serving};

fn cli(coord: &Coord, args: &[&str]) -> Command {
    let mut cmd = coord_command();
    cmd.arg("--endpoint").arg(format!("http://{}", coord.addr)).args(args);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run coord")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_run_releases_after_the_command_and_propagates_its_exit_code() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let out =
        run(cli(&coord, &["lock", "run", "nightly", "--ttl", "2s", "--", "sh", "-c", "echo working; exit 7"])).await;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "working\n", "stdout belongs to the command");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fencing token"), "{out:?}");
    let lock = coord
        .locks()
        .describe(DescribeRequest { name: "nightly".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock;
    assert!(!lock.unwrap().held, "released when the command ended");
    let ok = run(cli(&coord, &["lock", "run", "nightly", "--", "true"])).await;
    assert_eq!(ok.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_run_exits_1_without_running_the_command_when_the_lock_is_held() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let held =
        AcquireRequest { name: "busy".into(), ttl_ms: 30_000, owner: "someone-else".into(), ..Default::default() };
    let got = coord.locks().acquire(held).await.unwrap().into_inner();
    assert_eq!(got.status(), AcquireStatus::Acquired);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = run(cli(&coord, &["lock", "run", "busy", "--wait", "200ms", "--", "sh", "-c", &touch])).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not acquired") && stderr.contains("someone-else"), "{stderr}");
    assert!(!marker.exists(), "the command must not run without the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_run_kills_the_command_when_the_lock_is_force_released() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let child = cli(&coord, &["lock", "run", "cron", "--ttl", "2s", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pidfile)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let released =
        coord.locks().force_release(ForceReleaseRequest { name: "cron".into(), ..Default::default() }).await.unwrap();
    assert!(released.into_inner().released);
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(status.status.code(), Some(75), "lock lost: {status:?}");
    assert!(String::from_utf8_lossy(&status.stderr).contains("FORCE_RELEASED"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!support::process::alive(pid), "the command was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_json_parses_and_errors_exit_non_zero() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let json = |out: &Output| -> serde_json::Value {
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let v = json(&run(cli(&coord, &["--output", "json", "board", "create", "arena", "--period", "daily"])).await);
    assert_eq!(v["created"], true);
    for (m, s) in [("ada", "30"), ("bo", "-20"), ("cy", "10")] {
        run(cli(&coord, &["board", "submit", "arena", m, s])).await;
    }
    let v = json(&run(cli(&coord, &["--output", "json", "board", "top", "arena", "--limit", "2"])).await);
    assert_eq!(v["entries"][0]["member"], "ada");
    assert_eq!(v["entries"][1]["score"], 10);
    assert_eq!(v["count"], 3);
    let v = json(&run(cli(&coord, &["--output", "json", "board", "top", "arena", "--period", "daily"])).await);
    assert_eq!(v["entries"][2]["score"], -20);
    // A sliding log: a fixed minute could end between the two processes.
    let v = json(&run(cli(&coord, &["--output", "json", "limit", "check", "u", "--limit", "log:1/1m"])).await);
    assert_eq!(v["allowed"], true);
    let denied = run(cli(&coord, &["--output", "json", "limit", "check", "u", "--limit", "log:1/1m"])).await;
    assert_eq!(denied.status.code(), Some(1), "a denial exits 1");
    let v = json(&run(cli(&coord, &["--output", "json", "pub", "news", "hello"])).await);
    assert_eq!(v["mode"], "CHANNEL_MODE_EPHEMERAL");

    let table = run(cli(&coord, &["board", "top", "arena"])).await;
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("RANK  MEMBER"), "{table:?}");
    let bad = run(cli(&coord, &["board", "top", "missing"])).await;
    assert_eq!(bad.status.code(), Some(3), "an error is not a denial: {bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NOT_FOUND"), "{bad:?}");
}

/// Scripts can tell a denial (1) from bad input (2) and from an error (3).
#[tokio::test]
async fn exit_codes_tell_a_denial_from_bad_input_and_from_errors() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let code = |out: Output| out.status.code();
    assert_eq!(code(run(cli(&coord, &["limit", "check", "s", "--limit", "log:1/1m"])).await), Some(0));
    assert_eq!(code(run(cli(&coord, &["limit", "check", "s", "--limit", "log:1/1m"])).await), Some(1));
    // Refused by the CLI, and by coord (INVALID_ARGUMENT: an empty subject).
    assert_eq!(code(run(cli(&coord, &["limit", "check", "s", "--limit", "fixed:x/1m"])).await), Some(2));
    let invalid = run(cli(&coord, &["limit", "check", "", "--limit", "fixed:1/1m"])).await;
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("INVALID_ARGUMENT"), "{invalid:?}");
    assert_eq!(code(invalid), Some(2));
    let mut nowhere = coord_command();
    nowhere.args(["--endpoint", "http://127.0.0.1:1", "limit", "check", "s", "--limit", "fixed:1/1m"]);
    assert_eq!(code(run(nowhere).await), Some(3), "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_zero_only_when_serving() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    assert_eq!(run(cli(&coord, &["health"])).await.status.code(), Some(0));
    assert_eq!(run(cli(&coord, &["health", "--service", "coord.v1.LockService"])).await.status.code(), Some(0));
    redis.kill();
    coord
        .wait_health("", tonic_health::pb::health_check_response::ServingStatus::NotServing, Duration::from_secs(10))
        .await;
    let down = run(cli(&coord, &["health"])).await;
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(String::from_utf8_lossy(&down.stdout).contains("NOT_SERVING"));
    let mut nowhere = coord_command();
    nowhere.args(["--endpoint", "http://127.0.0.1:1", "health"]);
    let out = run(nowhere).await;
    assert_eq!(out.status.code(), Some(1), "unreachable: {out:?}");
}

/// `coord sem run` holds its permits while the command runs (Describe from
/// inside the command sees them), then gives them back; `coord lock run
/// --shared` lets two readers run side by side, and `--exclusive` waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sem_run_and_shared_lock_run_hold_while_the_command_runs() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let out =
        run(cli(&coord, &["sem", "run", "pool", "--permits", "2", "--size", "3", "--", "sh", "-c", "exit 3"])).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let described = run(cli(&coord, &["--output", "json", "sem", "describe", "pool"])).await;
    let d: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!((d["size"].as_u64(), d["used"].as_u64()), (Some(3), Some(0)), "{d}");

    // Two readers hold the read/write lock at once; a writer cannot meanwhile.
    let reader = |c: &Coord| {
        cli(c, &["lock", "run", "doc", "--shared", "--", "sleep", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (reader(&coord), reader(&coord));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let described = run(cli(&coord, &["--output", "json", "lock", "describe", "doc", "--shared"])).await;
    let d: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!((d["mode"].as_str(), d["holders"].as_array().map(Vec::len)), (Some("SHARED"), Some(2)), "{d}");
    let writer = run(cli(&coord, &["lock", "run", "doc", "--exclusive", "--", "true"])).await;
    assert_eq!(writer.status.code(), Some(1), "readers hold it: {writer:?}");
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let writer = run(cli(&coord, &["lock", "run", "doc", "--exclusive", "--wait", "2s", "--", "true"])).await;
    assert_eq!(writer.status.code(), Some(0), "{writer:?}");
}

/// `coord elect run` runs its command only while leading: a second
/// candidate waits, and runs once the first command ends (the first
/// resigns); `elect leader` shows the leader's value and the candidates;
/// `elect observe` prints the changes; `elect force-resign` kills the
/// leader's command (exit 75, FORCE_RELEASED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_run_runs_the_command_only_while_leading() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let observer = cli(&coord, &["--output", "json", "elect", "observe", "svc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let job = |value: &str| {
        let script = format!("echo start-{value} >> {0}; sleep 1; echo end-{value} >> {0}", log.display());
        cli(&coord, &["elect", "run", "svc", "--value", value, "--", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = job("a");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut second = job("b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = run(cli(&coord, &["--output", "json", "elect", "leader", "svc"])).await;
    let d: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        (d["leader"].as_bool(), d["value"].as_str(), d["candidates"].as_u64()),
        (Some(true), Some("a"), Some(1)),
        "{d}"
    );
    assert!(first.wait().unwrap().success() && second.wait().unwrap().success());
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().collect::<Vec<_>>(), ["start-a", "end-a", "start-b", "end-b"], "never both at once");

    // Deposed: the command is killed and coord exits 75.
    let mut leader = cli(&coord, &["elect", "run", "svc", "--value", "c", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let shown = run(cli(&coord, &["--output", "json", "elect", "leader", "svc"])).await;
        let d: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        if d["value"].as_str() == Some("c") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never elected: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // its stream is up
    let forced = run(cli(&coord, &["--output", "json", "elect", "force-resign", "svc"])).await;
    let d: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(d["resigned"].as_bool(), Some(true), "{d}");
    let status = leader.wait().unwrap();
    assert_eq!(status.code(), Some(75));
    let mut stderr = String::new();
    std::io::Read::read_to_string(leader.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("FORCE_RELEASED"), "{stderr}");

    let mut observer = observer;
    observer.kill().unwrap();
    let out = observer.wait_with_output().unwrap();
    let values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["value"].as_str().unwrap_or("none").to_owned()
        })
        .collect();
    // The observer shows the state when it starts ("none", or already "a").
    let from_a = values.strip_prefix(&["none".to_owned()][..]).unwrap_or(&values);
    assert_eq!(from_a, ["a", "none", "b", "none", "c", "none"], "every change, in order: {values:?}");
}
