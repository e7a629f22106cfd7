//! `coord bench SCENARIO`: load against a running coord, measured with
//! hdrhistogram, and optionally against Redis itself in the same run
//! (`--vs-redis`: redis-benchmark, EVALSHA of the same script, the same
//! concurrency), reported as both figures and their ratio.

mod scenarios;

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cli::{CliError, ClientArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Acquire + release of distinct lock names (one request = one cycle)
    Lock,
    /// Acquire + release of distinct lock names under one shared lease per
    /// worker (Grant once, then Acquire with its lease_id)
    LockShared,
    /// Acquire (waiting) + release of one lock name by every worker
    LockContended,
    /// Latency from a release to the next waiter holding the lock
    LockHandoff,
    /// Leader failover: latency from the leader's lease being revoked to
    /// the next candidate's Campaign returning (every worker campaigns)
    ElectionFailover,
    /// Acquire + release of one permit of distinct semaphores (size 4)
    Semaphore,
    /// Read holds of one read/write lock by every worker (with --writer,
    /// worker 0 takes write holds)
    ReadLock,
    /// --leases leases with a lock each, renewed on KeepAlive streams
    Keepalive,
    /// Rate-limit checks with the --algorithm
    Ratelimit,
    /// Envoy's ShouldRateLimit, one descriptor `subject=s…` in --domain
    /// (the server needs a rule for it: BENCHMARKS.md has the YAML)
    Rls,
    /// Leaderboard submits returning the rank, on a --board-size board
    BoardSubmit,
    /// Leaderboard top-100 pages
    BoardTop,
    /// Leaderboard around-me (±5) windows
    BoardAround,
    /// --subscribers streams over --channels channels, --publishers
    /// publishing at --rate per second in all
    Pubsub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algo {
    Fixed,
    Slide,
    Log,
    Bucket,
    Gcra,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Concurrent callers
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// gRPC connections the callers share
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How long to measure (after the warm-up)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests instead
    #[arg(long)]
    pub requests: Option<u64>,
    /// Load before measuring
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    /// Also run redis-benchmark on the same script (needs --redis-url)
    #[arg(long)]
    pub vs_redis: bool,
    /// The Redis coord uses: for --vs-redis and fast leaderboard preloads
    #[arg(long, env = "COORD_BENCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix of that coord (redis.key_prefix)
    #[arg(long, default_value = "coord")]
    pub key_prefix: String,
    /// Rate-limit algorithm
    #[arg(long, value_enum, default_value_t = Algo::Fixed)]
    pub algorithm: Algo,
    /// Envoy rate limit service: the domain asked
    #[arg(long, default_value = "bench")]
    pub domain: String,
    /// Rate-limit: distinct subjects checked (1 = one hot subject)
    #[arg(long, default_value_t = 1000)]
    pub subjects: u64,
    /// Leaderboard members preloaded
    #[arg(long, default_value_t = 100_000)]
    pub board_size: u64,
    /// Keepalive: leases held
    #[arg(long, default_value_t = 1000)]
    pub leases: usize,
    /// Keepalive: lease TTL (renewed every third of it)
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Read-lock: worker 0 takes write holds
    #[arg(long)]
    pub writer: bool,
    /// Pub/sub: subscribers, spread over the channels
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Pub/sub: channels (`bench`, or `bench-0`…)
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Pub/sub: concurrent publishers
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Requests per second in all (pub/sub: publishes, default 10; 0: back
    /// to back). Other
    /// scenarios run closed-loop without it; with it, each worker sends on
    /// a fixed schedule and latency counts from the scheduled time, so a
    /// stall is not hidden by requests that were never sent
    #[arg(long)]
    pub rate: Option<u64>,
    /// coord's process id, to report its CPU and RSS from /proc
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// What a scenario measured.
#[derive(Debug)]
pub struct Report {
    pub scenario: Scenario,
    /// What one request is.
    pub unit: &'static str,
    pub requests: u64,
    pub seconds: f64,
    /// Latency in µs.
    pub latency: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Extra figures (server CPU, RSS, …).
    pub notes: BTreeMap<&'static str, Value>,
    pub redis: Option<RedisFigures>,
}

#[derive(Debug, Clone)]
pub struct RedisFigures {
    pub command: String,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Report {
    /// `latency` measured over `seconds`, no errors yet.
    pub fn new(scenario: Scenario, unit: &'static str, latency: Histogram<u64>, seconds: f64) -> Report {
        Report {
            scenario,
            unit,
            requests: latency.len(),
            seconds,
            latency,
            errors: BTreeMap::new(),
            notes: BTreeMap::new(),
            redis: None,
        }
    }

    /// Counts `n` errors of `kind` (nothing when 0).
    pub fn error(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.to_owned()).or_default() += n;
        }
    }

    pub fn throughput(&self) -> f64 {
        if self.seconds > 0.0 { self.requests as f64 / self.seconds } else { 0.0 }
    }

    pub fn to_json(&self) -> Value {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let mut v = json!({
            "scenario": self.scenario.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default(),
            "unit": self.unit,
            "requests": self.requests,
            "seconds": self.seconds,
            "throughput": self.throughput(),
            "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999),
                            "max": self.latency.max() as f64 / 1000.0 },
            "errors": self.errors,
        });
        for (k, n) in &self.notes {
            v[*k] = n.clone();
        }
        if let Some(r) = &self.redis {
            v["redis_benchmark"] = json!({ "command": r.command, "throughput": r.throughput, "p50_ms": r.p50_ms,
                                           "p99_ms": r.p99_ms });
            v["ratio"] = json!(if r.throughput > 0.0 { self.throughput() / r.throughput } else { 0.0 });
        }
        v
    }

    pub fn to_text(&self) -> String {
        let v = self.to_json();
        let l = &v["latency_ms"];
        let mut out = format!(
            "{}: {:.0} {}/s over {:.1} s ({} requests)\nlatency ms: p50 {} p90 {} p99 {} p99.9 {} max {}\n",
            v["scenario"].as_str().unwrap_or(""),
            self.throughput(),
            self.unit,
            self.seconds,
            self.requests,
            l["p50"],
            l["p90"],
            l["p99"],
            l["p99_9"],
            l["max"]
        );
        let errors: u64 = self.errors.values().sum();
        out.push_str(&format!(
            "errors: {errors} {}\n",
            if errors > 0 { json!(self.errors).to_string() } else { String::new() }
        ));
        for (k, n) in &self.notes {
            out.push_str(&format!("{k}: {n}\n"));
        }
        if let Some(r) = &self.redis {
            out.push_str(&format!(
                "redis-benchmark: {:.0}/s p50 {:.2} ms p99 {:.2} ms  ({})\nratio coord / redis: {:.2}\n",
                r.throughput,
                r.p50_ms,
                r.p99_ms,
                r.command,
                v["ratio"].as_f64().unwrap_or(0.0)
            ));
        }
        out
    }
}

/// One measured operation's outcome: Ok, or the gRPC code name.
pub type Outcome = Result<(), String>;

/// Runs `op(worker, iteration)` from `concurrency` workers: a warm-up, then
/// the measurement until the duration or the request budget is spent.
pub async fn drive<F, Fut>(args: &BenchArgs, unit: &'static str, op: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let issued = Arc::new(AtomicU64::new(0));
    let budget = args.requests.unwrap_or(u64::MAX);
    let warm_until = Instant::now() + args.warmup;
    let measure_until = warm_until + args.duration;
    let progress = spawn_progress(issued.clone(), warm_until, args.duration, args.json);
    let meter = Meter::start_at(args, warm_until);
    let (rate, workers) = (args.rate, args.concurrency);
    let mut tasks = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let (op, issued) = (op.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("3 significant digits is valid");
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut i = 0u64;
            while Instant::now() < warm_until {
                let _ = op(w, i).await;
                i += 1;
            }
            // Open loop: worker w's k-th request is due at (k × workers + w) / rate.
            let gap = rate.map(|r| Duration::from_secs_f64(workers as f64 / r.max(1) as f64));
            let mut due = warm_until + gap.map_or(Duration::ZERO, |g| g.mul_f64(w as f64 / workers as f64));
            while Instant::now() < measure_until && issued.fetch_add(1, Ordering::Relaxed) < budget {
                let started = match gap {
                    Some(gap) => {
                        let at = due;
                        due += gap;
                        tokio::time::sleep_until(at).await;
                        at
                    }
                    None => Instant::now(),
                };
                let outcome = op(w, i).await;
                let _ = latency.record(started.elapsed().as_micros() as u64);
                if let Err(code) = outcome {
                    *errors.entry(code).or_default() += 1;
                }
                i += 1;
            }
            (latency, errors, Instant::now())
        }));
    }
    let mut latency = Histogram::<u64>::new(3).expect("valid");
    let mut errors = BTreeMap::new();
    let mut ended = warm_until;
    for w in tasks {
        if let Ok((h, e, end)) = w.await {
            let _ = latency.add(h);
            for (k, n) in e {
                *errors.entry(k).or_default() += n;
            }
            ended = ended.max(end);
        }
    }
    progress.abort();
    let mut report =
        Report::new(args.scenario, unit, latency, ended.saturating_duration_since(warm_until).as_secs_f64());
    report.errors = errors;
    meter.finish(&mut report).await;
    report
}

/// Merges the (latency, error count) of worker tasks.
pub async fn gather(tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>) -> (Histogram<u64>, u64) {
    let mut latency = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut errors = 0;
    for task in tasks {
        if let Ok((h, e)) = task.await {
            let _ = latency.add(h);
            errors += e;
        }
    }
    (latency, errors)
}

/// A progress line on a terminal (stderr), once a second.
fn spawn_progress(
    issued: Arc<AtomicU64>,
    start: Instant,
    duration: Duration,
    quiet: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet || !std::io::stderr().is_terminal() {
            return;
        }
        tokio::time::sleep_until(start).await;
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = issued.load(Ordering::Relaxed);
            let done = start.elapsed().as_secs_f64() / duration.as_secs_f64();
            let bar = "#".repeat((done.min(1.0) * 30.0) as usize);
            eprint!("\r[{bar:<30}] {:>8} req/s ", now - last);
            last = now;
        }
    })
}

/// The gRPC code name of a failed call.
pub fn code(status: tonic::Status) -> String {
    format!("{:?}", status.code())
}

/// `coord bench`.
pub async fn run(client: &ClientArgs, args: BenchArgs) -> Result<std::process::ExitCode, CliError> {
    if args.concurrency == 0 || args.connections == 0 {
        return Err(CliError::Usage("--concurrency and --connections must be at least 1".into()));
    }
    let one_script = matches!(
        args.scenario,
        Scenario::Ratelimit | Scenario::BoardSubmit | Scenario::BoardTop | Scenario::BoardAround
    );
    if args.vs_redis && !one_script {
        // A lock cycle is two scripts, keepalive a stream, pub/sub a fan-out:
        // redis-benchmark has no single command to compare them with.
        return Err(CliError::Usage("--vs-redis applies to ratelimit and board-* (one script per request)".into()));
    }
    if args.vs_redis && args.redis_url.is_none() {
        return Err(CliError::Usage("--vs-redis needs --redis-url (the Redis coord uses)".into()));
    }
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(client.channel().await?);
    }
    // --vs-redis names coord's keys, so it needs the namespace they are in.
    let namespace = client.namespace.clone().unwrap_or_else(|| crate::redis::keys::DEFAULT_NAMESPACE.to_owned());
    let pool = Pool { channels, namespace, metadata: client.metadata() };
    let cpu_before = args.server_pid.and_then(proc_cpu_ticks);
    let wall = Instant::now();
    let mut report = scenarios::run(&args, &pool).await?;
    if let (Some(pid), Some(before)) = (args.server_pid, cpu_before) {
        if let Some(after) = proc_cpu_ticks(pid) {
            let cpu = (after - before) as f64 / 100.0 / wall.elapsed().as_secs_f64();
            report.notes.insert("server_cpu_cores", json!((cpu * 100.0).round() / 100.0));
        }
        if let Some(rss) = proc_rss_kib(pid) {
            report.notes.insert("server_rss_mib", json!(rss / 1024));
        }
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        print!("{}", report.to_text());
    }
    Ok(if report.errors.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

/// Connections the workers share, and the namespace and credentials to send.
#[derive(Clone)]
pub struct Pool {
    channels: Vec<Channel>,
    namespace: String,
    metadata: tonic::metadata::MetadataMap,
}

impl Pool {
    pub fn channel(&self, worker: usize) -> Channel {
        self.channels[worker % self.channels.len()].clone()
    }

    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }
}

/// CPU counters at one moment: coord's (`/proc`, with `--server-pid`) and
/// Redis's own accounting (`INFO cpu`, `INFO commandstats`, with
/// `--redis-url`).
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    coord_ticks: Option<u64>,
    redis_cpu_us: Option<f64>,
    redis_script_us: Option<u64>,
}

async fn sample(pid: Option<u32>, url: Option<&str>) -> Sample {
    let mut s = Sample { coord_ticks: pid.and_then(proc_cpu_ticks), ..Default::default() };
    let Some(url) = url else { return s };
    let Ok(client) = redis::Client::open(url) else { return s };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return s };
    let info: String =
        redis::cmd("INFO").arg("cpu").arg("commandstats").query_async(&mut conn).await.unwrap_or_default();
    let field = |line: &str, name: &str| line.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok());
    let cpu: f64 = info.lines().filter_map(|l| field(l, "used_cpu_sys:").or_else(|| field(l, "used_cpu_user:"))).sum();
    // Script time includes the commands a script calls, which commandstats
    // also lists on their own: count the scripts only, not those again.
    let script = ["cmdstat_eval", "cmdstat_evalsha", "cmdstat_evalsha_ro", "cmdstat_eval_ro", "cmdstat_fcall"];
    let cmd: u64 = info
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|name| script.contains(&name)))
        .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("usec=")).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    s.redis_cpu_us = Some(cpu * 1e6);
    s.redis_script_us = Some(cmd);
    s
}

/// Samples CPU when a scenario starts measuring and when it ends, and
/// reports coord's and Redis's CPU µs per request.
pub struct Meter {
    start: tokio::task::JoinHandle<Sample>,
    pid: Option<u32>,
    url: Option<String>,
}

impl Meter {
    /// Takes the first sample at `at` (the end of the warm-up).
    pub fn start_at(args: &BenchArgs, at: Instant) -> Meter {
        let (pid, url) = (args.server_pid, args.redis_url.clone());
        let start = tokio::spawn({
            let url = url.clone();
            async move {
                tokio::time::sleep_until(at).await;
                sample(pid, url.as_deref()).await
            }
        });
        Meter { start, pid, url }
    }

    /// Adds `coord_cpu_us_per_op`, `redis_cpu_us_per_op` (the whole Redis
    /// process) and `redis_script_us_per_op` (script time, with the commands
    /// scripts call) to `report`.
    pub async fn finish(self, report: &mut Report) {
        let end = sample(self.pid, self.url.as_deref()).await;
        let Ok(start) = self.start.await else { return };
        let ops = report.requests.max(1) as f64;
        let round = |us: f64| (us / ops * 10.0).round() / 10.0;
        if let (Some(a), Some(b)) = (start.coord_ticks, end.coord_ticks) {
            // Clock ticks are 10 ms (USER_HZ 100).
            report.notes.insert("coord_cpu_us_per_op", json!(round(b.saturating_sub(a) as f64 * 10_000.0)));
        }
        if let (Some(a), Some(b)) = (start.redis_cpu_us, end.redis_cpu_us) {
            report.notes.insert("redis_cpu_us_per_op", json!(round(b - a)));
        }
        if let (Some(a), Some(b)) = (start.redis_script_us, end.redis_script_us) {
            report.notes.insert("redis_script_us_per_op", json!(round(b.saturating_sub(a) as f64)));
        }
    }
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which ends with ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Runs redis-benchmark with EVALSHA `sha` and `words` (keys count, keys,
/// args) at `concurrency`, `requests` times; `__rand_int__` in the words is
/// replaced by redis-benchmark with numbers below `range`.
pub fn redis_benchmark(
    redis_url: &str,
    concurrency: usize,
    requests: u64,
    range: u64,
    sha: &str,
    words: &[String],
) -> Result<RedisFigures, CliError> {
    let url = url::Url::parse(redis_url).map_err(|e| CliError::Usage(format!("--redis-url: {e}")))?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(6379).to_string();
    let mut cmd = std::process::Command::new("redis-benchmark");
    cmd.args(["-h", &host, "-p", &port, "-c", &concurrency.to_string(), "-n", &requests.to_string()]);
    cmd.args(["-r", &range.max(1).to_string()]);
    if !url.password().unwrap_or("").is_empty() {
        cmd.args(["-a", url.password().unwrap_or("")]);
    }
    cmd.arg("EVALSHA").arg(sha).args(words);
    let out = cmd.output().map_err(|e| CliError::Usage(format!("redis-benchmark: {e} (install redis-tools)")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.rsplit("Summary:").next().unwrap_or("");
    let throughput: f64 = summary
        .split("throughput summary:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            CliError::Usage(format!("redis-benchmark printed no summary: {}", String::from_utf8_lossy(&out.stderr)))
        })?;
    // "avg min p50 p95 p99 max" in ms on the summary's last line.
    let cols: Vec<f64> =
        summary.lines().last().unwrap_or("").split_whitespace().filter_map(|s| s.parse().ok()).collect();
    Ok(RedisFigures {
        command: format!("redis-benchmark -c {concurrency} -n {requests} EVALSHA {sha} {}", words.join(" ")),
        throughput,
        p50_ms: cols.get(2).copied().unwrap_or(0.0),
        p99_ms: cols.get(4).copied().unwrap_or(0.0),
    })
}
