//! Test harness that runs real `redis-server` processes on 127.0.0.1.
//!
//! * [`RedisServer`]: one standalone server (stop/cont/kill/restart for fault tests).
//! * [`RedisNodes`]: N independent servers (Redlock).
//! * [`RedisCluster`]: 3 masters, optionally with replicas.
//!
//! Every process is killed and its temp dir removed when the value drops, also while
//! unwinding from a failed assertion. If the test process itself is killed (no `Drop`),
//! a small `sh` watchdog per server kills the server and removes its dir within ~1 s.
//!
//! Binaries come from `REDIS_SERVER` / `REDIS_CLI`, else from `PATH`.
#![allow(dead_code)] // each test binary uses a different subset

use std::env;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PING_TIMEOUT: Duration = Duration::from_secs(10);
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// Fresh-port tries: another process may grab a probed port before redis binds it.
const PORT_ATTEMPTS: usize = 5;
/// Same-port tries for `restart`, in case the old socket lingers briefly.
const RESTART_ATTEMPTS: usize = 10;
const ADDR_IN_USE: &str = "Address already in use";

fn find_binary(env_var: &str, name: &str) -> PathBuf {
    let from_env = env::var_os(env_var).filter(|p| !p.is_empty());
    let found = from_env.map(PathBuf::from).or_else(|| {
        let path = env::var_os("PATH")?;
        env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
    });
    match found {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "`{name}` not found (env {env_var} or PATH). \
             Run `make test`, which installs redis-server and redis-cli."
        ),
    }
}

/// Path of `redis-server`: env `REDIS_SERVER`, else `PATH`; panics if missing.
pub fn redis_server_bin() -> PathBuf {
    find_binary("REDIS_SERVER", "redis-server")
}

/// Path of `redis-cli`: env `REDIS_CLI`, else `PATH`; panics if missing.
pub fn redis_cli_bin() -> PathBuf {
    find_binary("REDIS_CLI", "redis-cli")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (someone may take it before use).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports (the probes are held together so they cannot repeat).
fn free_ports(n: usize) -> Vec<u16> {
    let bind = |_| TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 (port probe)");
    let probes: Vec<TcpListener> = (0..n).map(bind).collect();
    let port = |l: &TcpListener| l.local_addr().expect("local_addr of port probe").port();
    probes.iter().map(port).collect()
}

/// Sends a raw inline `PING` to 127.0.0.1:`port`; true only if `+PONG` arrives within
/// `timeout`. A SIGSTOPped server still accepts the connection but never answers.
pub fn raw_ping(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Runs `redis-cli -h 127.0.0.1 -p port args...`; trimmed stdout, or an error with stderr.
/// redis-cli 7.0 exits 0 on error replies, so `ERR ...` comes back as `Ok`.
fn try_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new(redis_cli_bin())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("failed to run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let (status, stderr) = (out.status, String::from_utf8_lossy(&out.stderr));
        return Err(format!("redis-cli -p {port} {args:?}: {status}: {stderr}{stdout}"));
    }
    Ok(stdout)
}

/// Sends a signal with the `kill` command (std can only SIGKILL, and we avoid unsafe/libc).
fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        other => Err(format!("kill -{sig} {pid} failed: {other:?}")),
    }
}

/// Fresh, uniquely named directory under the system temp dir.
fn make_dir() -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    let nanos = now.map(|d| d.subsec_nanos()).unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = env::temp_dir().join(format!("coord-redis-{}-{seq}-{nanos}", process::id()));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create temp dir {}: {e}", dir.display()));
    dir
}

/// std cannot set PDEATHSIG without unsafe, so a shell loop watches this test process
/// and kills the server (and removes its dir) if we die without running Drop.
fn spawn_watchdog(server_pid: u32, dir: &Path) -> Option<Child> {
    let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
        kill -9 "$2" 2>/dev/null; rm -rf "$3""#;
    let (me, server) = (process::id().to_string(), server_pid.to_string());
    Command::new("sh")
        .args(["-c", script, "redis-watchdog", &me, &server])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok() // best effort: Drop still cleans up normally
}

#[derive(Default)]
struct Proc {
    child: Option<Child>,
    watchdog: Option<Child>,
    stopped: bool,
}

/// One `redis-server` on 127.0.0.1 with its own temp dir (`--save "" --appendonly no`,
/// log in `<dir>/redis.log`). Killed and cleaned up on drop.
pub struct RedisServer {
    port: u16,
    /// `Some(bus port)` means cluster mode.
    bus_port: Option<u16>,
    extra: Vec<String>,
    dir: PathBuf,
    // Mutex so fault injection works through `&self`, e.g. `nodes.node(1).kill()`.
    proc: Mutex<Proc>,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start) plus extra `redis-server` args, e.g. `&["--maxmemory", "10mb"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(extra, false)
    }

    fn launch(extra: &[&str], cluster: bool) -> Self {
        let mut server = RedisServer {
            port: 0,
            bus_port: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: make_dir(),
            proc: Mutex::default(),
        };
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let ports = free_ports(2);
            server.port = ports[0];
            server.bus_port = cluster.then_some(ports[1]);
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if log.contains(ADDR_IN_USE) => last_log = log,
                Err(log) => panic!("redis-server failed to start: {log}"),
            }
        }
        panic!("redis-server got no free port in {PORT_ATTEMPTS} tries; last: {last_log}");
    }

    fn args(&self) -> Vec<String> {
        let dir = self.dir.display().to_string();
        let mut opts = vec![
            ("--port", self.port.to_string()),
            ("--bind", "127.0.0.1".into()),
            ("--save", String::new()),
            ("--appendonly", "no".into()),
            ("--dir", dir.clone()),
            ("--logfile", format!("{dir}/redis.log")),
            // DEBUG SLEEP stalls a node the way a busy one stalls.
            ("--enable-debug-command", "local".into()),
        ];
        if let Some(bus) = self.bus_port {
            opts.extend([
                ("--cluster-enabled", "yes".into()),
                ("--cluster-node-timeout", "2000".into()),
                ("--cluster-config-file", format!("{dir}/nodes.conf")),
                // Explicit bus port: the default port+10000 may be taken or exceed 65535.
                ("--cluster-port", bus.to_string()),
            ]);
        }
        let mut args: Vec<String> = opts.into_iter().flat_map(|(k, v)| [k.into(), v]).collect();
        args.extend(self.extra.iter().cloned());
        args
    }

    fn lock(&self) -> MutexGuard<'_, Proc> {
        // A panic while holding the lock must not stop Drop from cleaning up.
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the process and waits for PING. `Err(log)` if it exited or the port is not ours.
    fn spawn(&self) -> Result<(), String> {
        // stdout/stderr to a file: config errors are printed before `--logfile` applies.
        let out = File::create(self.dir.join("stdout.log")).expect("create stdout.log");
        let err = out.try_clone().expect("clone stdout.log handle");
        let mut cmd = Command::new(redis_server_bin());
        cmd.args(self.args()).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn redis-server: {e}"));
        let pid = child.id();
        let watchdog = spawn_watchdog(pid, &self.dir);
        *self.lock() = Proc { child: Some(child), watchdog, stopped: false };

        let (port, deadline) = (self.port, Instant::now() + PING_TIMEOUT);
        loop {
            let exited = self.lock().child.as_mut().map(|c| c.try_wait());
            if let Some(Ok(Some(status))) = exited {
                self.kill(); // reaps the watchdog too
                return Err(format!("port {port}: exited with {status}\n{}", self.logs()));
            }
            if raw_ping(port, Duration::from_millis(200)) {
                // The PONG must come from our process, not a stranger that won the port race.
                let info = try_cli(port, &["info", "server"]).unwrap_or_default();
                let ours = format!("process_id:{pid}");
                if info.lines().any(|l| l.trim() == ours) {
                    return Ok(());
                }
                self.kill();
                return Err(format!("port {port} answered by another process: {ADDR_IN_USE}"));
            }
            if Instant::now() > deadline {
                let logs = self.logs();
                self.kill();
                panic!("redis-server on port {port}: no PONG in {PING_TIMEOUT:?}\n{logs}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Last lines of the server's stdout/stderr and log file, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |name: &str| {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let (out, log) = (tail("stdout.log"), tail("redis.log"));
        format!("--- stdout/stderr ---\n{out}\n--- redis.log ---\n{log}")
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id; panics if the server was killed and not restarted.
    pub fn pid(&self) -> u32 {
        let pid = self.lock().child.as_ref().map(Child::id);
        pid.expect("redis-server is not running (killed?)")
    }

    /// Freezes the server with SIGSTOP: connections are accepted but never answered.
    pub fn stop(&self) {
        signal(self.pid(), "STOP").expect("SIGSTOP redis-server");
        self.lock().stopped = true;
    }

    /// Resumes a server frozen by [`stop`](Self::stop) (SIGCONT).
    pub fn cont(&self) {
        signal(self.pid(), "CONT").expect("SIGCONT redis-server");
        self.lock().stopped = false;
    }

    /// SIGKILLs the server and waits until it has exited. No-op if not running.
    pub fn kill(&self) {
        let mut p = self.lock();
        // Watchdog first: once the server is reaped its pid may be reused.
        if let Some(mut w) = p.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut c) = p.child.take() {
            if p.stopped {
                let _ = signal(c.id(), "CONT");
            }
            let _ = c.kill();
            let _ = c.wait(); // reap: frees the port and leaves no zombie
        }
        p.stopped = false;
    }

    /// Kills the server if running and starts it again on the same port and dir, then
    /// waits for PING. Data is lost; a cluster node keeps its identity (nodes.conf).
    pub fn restart(&self) {
        self.kill();
        let mut last_log = String::new();
        for _ in 0..RESTART_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(log) if log.contains(ADDR_IN_USE) => last_log = log,
                Err(log) => panic!("redis-server failed to restart: {log}"),
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("redis-server could not rebind port {}: {last_log}", self.port);
    }

    /// True while the process exists (also while SIGSTOPped).
    pub fn is_running(&self) -> bool {
        let mut p = self.lock();
        let status = p.child.as_mut().map(|c| c.try_wait());
        matches!(status, Some(Ok(None)))
    }

    /// Runs `redis-cli -p <port> args...` and returns trimmed stdout. Panics with stderr
    /// if redis-cli exits non-zero (e.g. connection refused); error replies come back as text.
    pub fn cli(&self, args: &[&str]) -> String {
        try_cli(self.port, args).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts `n` servers concurrently; a panic in one is re-raised after the others dropped.
fn start_many(n: usize, cluster: bool) -> Vec<RedisServer> {
    thread::scope(|s| {
        let launch = |_| s.spawn(move || RedisServer::launch(&[], cluster));
        let handles: Vec<_> = (0..n).map(launch).collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        let unwrap = |r: thread::Result<_>| r.unwrap_or_else(|e| std::panic::resume_unwind(e));
        results.into_iter().map(unwrap).collect()
    })
}

/// N independent standalone servers, e.g. for Redlock.
pub struct RedisNodes {
    servers: Vec<RedisServer>,
}

impl RedisNodes {
    /// Starts `n` servers on distinct free ports.
    pub fn start(n: usize) -> Self {
        let servers = start_many(n, false);
        RedisNodes { servers }
    }

    /// `redis://127.0.0.1:<port>` of every node, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// Node `i`; panics if out of range.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.servers[i]
    }

    /// Node `i`, mutably; panics if out of range.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.servers[i]
    }
}

/// A local Redis Cluster: 3 masters, each with `replicas_per_master` replicas.
pub struct RedisCluster {
    servers: Vec<RedisServer>,
    replicas: usize,
}

impl RedisCluster {
    /// Starts 3 × (1 + `replicas_per_master`) cluster-enabled servers, joins them with
    /// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`
    /// and sees all nodes: 3 healthy masters and all replicas attached.
    pub fn start(replicas_per_master: usize) -> Self {
        let total = 3 * (1 + replicas_per_master);
        let servers = start_many(total, true);
        let addrs = servers.iter().map(|s| format!("127.0.0.1:{}", s.port()));
        let replicas = replicas_per_master.to_string();
        let out = Command::new(redis_cli_bin())
            .args(["--cluster", "create"])
            .args(addrs)
            .args(["--cluster-replicas", &replicas, "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "redis-cli --cluster create: {}\n{text}", out.status);
        let cluster = RedisCluster { servers, replicas: replicas_per_master };
        cluster.wait_ready(total);
        cluster
    }

    fn wait_ready(&self, total: usize) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let problem = self.servers.iter().find_map(|s| self.problem(s.port(), total).err());
            let Some(problem) = problem else { return };
            let late = Instant::now() > deadline;
            assert!(!late, "cluster not ready after {CLUSTER_TIMEOUT:?}: {problem}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ok if the node on `port` sees a healthy, fully formed cluster; else what is missing.
    fn problem(&self, port: u16, total: usize) -> Result<(), String> {
        let info = try_cli(port, &["cluster", "info"])?;
        let known = format!("cluster_known_nodes:{total}");
        for want in ["cluster_state:ok", "cluster_size:3", known.as_str()] {
            if !info.lines().any(|l| l.trim() == want) {
                return Err(format!("node {port}: no `{want}` in\n{info}"));
            }
        }
        let nodes = try_cli(port, &["cluster", "nodes"])?;
        let flags: Vec<&str> = nodes.lines().filter_map(|l| l.split(' ').nth(2)).collect();
        let count = |f: &str| flags.iter().filter(|x| x.split(',').any(|x| x == f)).count();
        let bad = ["fail", "handshake", "noaddr"];
        let unhealthy = flags.iter().any(|x| bad.iter().any(|b| x.contains(b)));
        if unhealthy || count("master") != 3 || count("slave") != 3 * self.replicas {
            return Err(format!("node {port}: cluster nodes not settled:\n{nodes}"));
        }
        Ok(())
    }

    /// `redis://127.0.0.1:<port>` of every node (masters and replicas).
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// URL of the first node, enough for a cluster client to discover the rest.
    pub fn seed_url(&self) -> String {
        self.servers[0].url()
    }

    /// All nodes, in start order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The node listening on `port`; panics if none.
    pub fn node_by_port(&self, port: u16) -> &RedisServer {
        let node = self.servers.iter().find(|s| s.port() == port);
        node.unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Ports of the current masters not flagged as failing, as seen by the first
    /// reachable node (changes after a failover), sorted.
    pub fn masters(&self) -> Vec<u16> {
        let mut answers = self.servers.iter().map(|s| try_cli(s.port(), &["cluster", "nodes"]));
        let nodes = answers.find_map(Result::ok).expect("no node answers `cluster nodes`");
        let mut ports: Vec<u16> = nodes.lines().filter_map(master_port).collect();
        ports.sort_unstable();
        ports
    }
}

impl RedisCluster {
    /// Waits until Redis itself has failed over from the killed master on
    /// `victim`: a live node reports `cluster_state:ok` and `victim` is no
    /// longer a master. Returns how long that took; panics after `within`
    /// with what the nodes say (so a slow Redis failover is told apart
    /// from coord not recovering).
    pub fn wait_failed_over(&self, victim: u16, within: Duration) -> Duration {
        let start = Instant::now();
        let ask = |args: &[&str]| {
            let mut live = self.servers.iter().filter(|s| s.port() != victim);
            live.find_map(|s| try_cli(s.port(), args).ok())
        };
        loop {
            let info = ask(&["cluster", "info"]);
            let ok = info.as_deref().is_some_and(|i| i.lines().any(|l| l.trim() == "cluster_state:ok"));
            if ok && !self.masters().contains(&victim) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                let nodes = ask(&["cluster", "nodes"]);
                panic!("Redis did not fail over from {victim} within {within:?}:\n{info:?}\n{nodes:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the master serving `slot`.
    pub fn owner_of(&self, slot: u16) -> u16 {
        let nodes = self.servers[0].cli(&["cluster", "nodes"]);
        nodes
            .lines()
            .filter(|l| master_port(l).is_some())
            .find(|l| {
                l.split(' ').skip(8).any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                    }
                    None => r.parse::<u16>().is_ok_and(|n| n == slot),
                })
            })
            .and_then(master_port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}:\n{nodes}"))
    }

    /// Moves `slot` (and its keys) to the master on `to`, as `redis-cli
    /// --cluster reshard` does: IMPORTING / MIGRATING, MIGRATE every key,
    /// then SETSLOT NODE on every master, the new owner first.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (src, dst) = (self.node_by_port(from), self.node_by_port(to));
        let (src_id, dst_id) = (src.cli(&["cluster", "myid"]), dst.cli(&["cluster", "myid"]));
        let slot = slot.to_string();
        dst.cli(&["cluster", "setslot", &slot, "importing", &src_id]);
        src.cli(&["cluster", "setslot", &slot, "migrating", &dst_id]);
        loop {
            let keys = src.cli(&["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "keys"];
            args.extend(keys);
            src.cli(&args);
        }
        dst.cli(&["cluster", "setslot", &slot, "node", &dst_id]);
        src.cli(&["cluster", "setslot", &slot, "node", &dst_id]);
        for port in self.masters() {
            if port != from && port != to {
                self.node_by_port(port).cli(&["cluster", "setslot", &slot, "node", &dst_id]);
            }
        }
    }
}

/// Port of a `cluster nodes` line if it is a healthy master; the address field looks
/// like `127.0.0.1:7000@17000`.
fn master_port(line: &str) -> Option<u16> {
    let fields: Vec<&str> = line.split(' ').collect();
    let flags = fields.get(2)?;
    if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
        return None;
    }
    let addr = fields.get(1)?.split('@').next()?;
    addr.rsplit_once(':')?.1.parse().ok()
}
