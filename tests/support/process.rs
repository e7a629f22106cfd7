//! Running the real `coord` binary as a child process (embedded-mode and
//! configuration tests need a process of their own).

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// `coord` with no inherited `COORD_*` variables, so tests see only what
/// they set.
pub fn coord_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coord"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("COORD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `coord args…` to completion.
pub fn coord_output(args: &[&str], env: &[(&str, &str)]) -> Output {
    coord_command().args(args).envs(env.iter().copied()).output().expect("run coord")
}

/// Starts `coord serve` with JSON logs written to `log`.
pub fn spawn_serve(args: &[&str], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    coord_command()
        .arg("serve")
        .args(["--log-format", "json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn coord")
}

/// Waits for a JSON log line containing `needle` and returns it.
pub fn wait_log_line(log: &Path, needle: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(start.elapsed() < within, "no log line with {needle:?} within {within:?}; log:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A numeric field of a JSON log line, e.g. `"pid":1234`.
pub fn json_number(line: &str, field: &str) -> u64 {
    let key = format!("\"{field}\":");
    let rest = &line[line.find(&key).unwrap_or_else(|| panic!("{field} in {line}")) + key.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("number")
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3, after the parenthesised command name, is the state.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone; panics after `within`.
pub fn wait_gone(pid: u32, within: Duration) -> Duration {
    let start = Instant::now();
    while alive(pid) {
        assert!(start.elapsed() < within, "process {pid} still alive after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Sends `signal` (e.g. "TERM", "KILL") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A free loopback port (and a second one), probed together.
pub fn free_port_pair() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().expect("addr").port(), b.local_addr().expect("addr").port())
}
