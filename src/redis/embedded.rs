//! The embedded default: with no Redis configured, coord runs a private
//! `redis-server` child on a free loopback port, without persistence.
//!
//! The child must never outlive coord. A clean exit kills it (drop), and on
//! Linux the child is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel
//! kills it when coord dies in any way, SIGKILL included. The death signal
//! fires when the *thread* that spawned the child exits, so [`start`] must be
//! called from a thread that lives as long as the process (coord calls it
//! from the main thread, inside `block_on`).

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::{Child, Command},
};

/// A running private redis-server.
#[derive(Debug)]
pub struct EmbeddedRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "invalid setting redis.embedded_binary: `{0}` not found (no redis.url or redis.cluster set, so \
         coord starts its embedded Redis). Install it (Debian/Ubuntu: `apt-get install redis-server`; \
         `make run` does this) or point coord at a Redis with --redis-url / COORD_REDIS_URL"
    )]
    NotInstalled(String),
    #[error("embedded redis-server did not start: {0}")]
    Failed(String),
}

impl EmbeddedRedis {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the child and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for EmbeddedRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `binary` (default: `redis-server` on PATH) on a free loopback port
/// and waits until it answers PING. See the module docs for which thread
/// must call this.
pub async fn start(binary: Option<&Path>) -> Result<EmbeddedRedis, EmbeddedError> {
    let binary = binary.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("redis-server"));
    let mut last_error = String::new();
    // The free port can be taken between probing and binding: retry.
    for _ in 0..5 {
        let port = free_port().map_err(|e| EmbeddedError::Failed(e.to_string()))?;
        match start_on(&binary, port).await {
            Ok(redis) => return Ok(redis),
            Err(EmbeddedError::Failed(msg)) => last_error = msg,
            Err(e) => return Err(e),
        }
    }
    Err(EmbeddedError::Failed(last_error))
}

async fn start_on(binary: &Path, port: u16) -> Result<EmbeddedRedis, EmbeddedError> {
    let dir = std::env::temp_dir().join(format!("coord-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| EmbeddedError::Failed(format!("{}: {e}", dir.display())))?;
    let log = dir.join("redis.log");
    let mut cmd = Command::new(binary);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "yes"])
        .args(["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => EmbeddedError::NotInstalled(binary.display().to_string()),
        _ => EmbeddedError::Failed(format!("{}: {e}", binary.display())),
    })?;
    let mut redis = EmbeddedRedis { child, port, dir };

    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = redis.child.try_wait() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(EmbeddedError::Failed(format!("exited with {status}: {}", log.trim())));
        }
        if ping(port).await {
            return Ok(redis);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = redis.child.start_kill();
    Err(EmbeddedError::Failed(format!("no PONG on port {port} within 10 s")))
}

/// Asks the kernel to SIGKILL the child when the spawning thread dies.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_millis(200), exchange).await, Ok(Ok(true)))
}
