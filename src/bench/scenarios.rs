//! The bench scenarios. Each returns a [`Report`]; those with a single
//! script per request also know the EVALSHA line redis-benchmark runs for
//! `--vs-redis`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

use super::{Algo, BenchArgs, Meter, Pool, Report, Scenario, code, drive, gather, redis_benchmark};
use crate::{
    cli::CliError,
    leaderboard::codec,
    pb::{
        self, AcquireRequest, AcquireStatus, AroundRequest, CheckRequest, CreateBoardRequest, GrantRequest,
        KeepAliveRequest, Limit, PublishRequest, ReleaseRequest, SubmitRequest, SubscribeRequest, TopRequest,
        leaderboard_service_client::LeaderboardServiceClient, limit::Algorithm, lock_service_client::LockServiceClient,
        pub_sub_service_client::PubSubServiceClient, rate_limit_service_client::RateLimitServiceClient,
    },
    ratelimit,
    redis::scripts,
};

pub async fn run(args: &BenchArgs, pool: &Pool) -> Result<Report, CliError> {
    match args.scenario {
        Scenario::Lock => Ok(lock_cycles(args, pool, false).await),
        Scenario::LockContended => Ok(lock_cycles(args, pool, true).await),
        Scenario::LockShared => Ok(lock_shared(args, pool).await),
        Scenario::Semaphore => Ok(semaphore_cycles(args, pool).await),
        Scenario::ReadLock => Ok(read_lock_cycles(args, pool).await),
        Scenario::LockHandoff | Scenario::ElectionFailover => Ok(handoff(args, pool).await),
        Scenario::Keepalive => keepalive(args, pool).await,
        Scenario::Ratelimit => rate_limit(args, pool).await,
        Scenario::Rls => Ok(rls(args, pool).await),
        Scenario::BoardSubmit | Scenario::BoardTop | Scenario::BoardAround => board(args, pool).await,
        Scenario::Pubsub => pubsub(args, pool).await,
    }
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

async fn lock_cycles(args: &BenchArgs, pool: &Pool, contended: bool) -> Report {
    let pool = pool.clone();
    drive(args, "acquire+release cycles", move |w, i| {
        let pool = pool.clone();
        async move {
            let mut c = LockServiceClient::new(pool.channel(w));
            let name = if contended { "bench-contended".to_owned() } else { format!("bench-{w}-{}", i % 1000) };
            let wait_ms = if contended { 30_000 } else { 0 };
            let req = AcquireRequest { name: name.clone(), ttl_ms: 30_000, wait_ms, ..Default::default() };
            let got = c.acquire(pool.request(req)).await.map_err(code)?.into_inner();
            if got.status() != AcquireStatus::Acquired {
                return Err("NotAcquired".into());
            }
            c.release(pool.request(ReleaseRequest { name, lease_id: got.lease_id, ..Default::default() }))
                .await
                .map_err(code)?;
            Ok(())
        }
    })
    .await
}

/// Acquire+release of one permit under a private lease, like `lock`'s
/// cycles: one semaphore per worker and cycle slot (as `lock` uses one
/// lock), each of size 4.
async fn semaphore_cycles(args: &BenchArgs, pool: &Pool) -> Report {
    let pool = pool.clone();
    drive(args, "acquire+release cycles", move |w, i| {
        let pool = pool.clone();
        async move {
            let mut c = pb::semaphore_service_client::SemaphoreServiceClient::new(pool.channel(w));
            let name = format!("bench-{w}-{}", i % 1000);
            let req = pb::SemaphoreServiceAcquireRequest {
                name: name.clone(),
                permits: 1,
                size: 4,
                ttl_ms: 30_000,
                ..Default::default()
            };
            let got = c.acquire(pool.request(req)).await.map_err(code)?.into_inner();
            if got.status() != pb::SemaphoreAcquireStatus::Acquired {
                return Err("NotAcquired".into());
            }
            let rel = pb::SemaphoreServiceReleaseRequest { name, permit_id: got.permit_id, lease_id: got.lease_id };
            c.release(pool.request(rel)).await.map_err(code)?;
            Ok(())
        }
    })
    .await
}

/// Every worker takes and gives back a read hold of one read/write lock
/// (all readers share it); with `--writer`, worker 0 takes write holds
/// instead (waiting for readers, and making them wait).
async fn read_lock_cycles(args: &BenchArgs, pool: &Pool) -> Report {
    let pool = pool.clone();
    let writer = args.writer;
    drive(args, "read (or write) lock cycles", move |w, _| {
        let pool = pool.clone();
        async move {
            let mut c = LockServiceClient::new(pool.channel(w));
            let mode = if writer && w == 0 { pb::LockMode::Exclusive } else { pb::LockMode::Shared };
            let req = AcquireRequest {
                name: "bench-rw".into(),
                ttl_ms: 30_000,
                wait_ms: 30_000,
                mode: mode as i32,
                ..Default::default()
            };
            let got = c.acquire(pool.request(req)).await.map_err(code)?.into_inner();
            if got.status() != AcquireStatus::Acquired {
                return Err("NotAcquired".into());
            }
            let rel = ReleaseRequest { name: "bench-rw".into(), lease_id: got.lease_id, mode: mode as i32 };
            c.release(pool.request(rel)).await.map_err(code)?;
            Ok(())
        }
    })
    .await
}

/// The etcd pattern: one lease per worker, granted on first use (before the
/// measured window), holding each lock it takes in turn.
async fn lock_shared(args: &BenchArgs, pool: &Pool) -> Report {
    let pool = pool.clone();
    let leases: Arc<Vec<tokio::sync::OnceCell<String>>> =
        Arc::new((0..args.concurrency).map(|_| tokio::sync::OnceCell::new()).collect());
    drive(args, "acquire+release cycles", move |w, i| {
        let (pool, leases) = (pool.clone(), leases.clone());
        async move {
            let mut c = LockServiceClient::new(pool.channel(w));
            let lease_id = leases[w]
                .get_or_try_init(|| {
                    let mut c = c.clone();
                    let grant = pool.request(GrantRequest { ttl_ms: 600_000, owner: format!("bench-{w}") });
                    async move { c.grant(grant).await.map(|r| r.into_inner().lease_id).map_err(code) }
                })
                .await?
                .clone();
            let name = format!("bench-{w}-{}", i % 1000);
            let req = AcquireRequest { name: name.clone(), lease_id: lease_id.clone(), ..Default::default() };
            let got = c.acquire(pool.request(req)).await.map_err(code)?.into_inner();
            if got.status() != AcquireStatus::Acquired {
                return Err("NotAcquired".into());
            }
            c.release(pool.request(ReleaseRequest { name, lease_id, ..Default::default() })).await.map_err(code)?;
            Ok(())
        }
    })
    .await
}

/// Every worker waits for one lock; each holder records how long after the
/// previous holder's release it got the lock, then releases it. For
/// elections: every worker campaigns under a lease of its own; each leader
/// records how long after the previous leader's lease was revoked its
/// Campaign returned, then revokes its lease.
async fn handoff(args: &BenchArgs, pool: &Pool) -> Report {
    let epoch = Instant::now();
    let released_at = Arc::new(AtomicU64::new(u64::MAX));
    let deadline = epoch + args.warmup + args.duration;
    let measure_from = epoch + args.warmup;
    let meter = Meter::start_at(args, measure_from);
    let election = args.scenario == Scenario::ElectionFailover;
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (pool, released_at) = (pool.clone(), released_at.clone());
        workers.push(tokio::spawn(async move {
            let mut c = LockServiceClient::new(pool.channel(w));
            let mut latency = Histogram::<u64>::new(3).expect("valid");
            let mut errors = 0u64;
            if election {
                let mut e = pb::election_service_client::ElectionServiceClient::new(pool.channel(w));
                while Instant::now() < deadline {
                    let Ok(lease) = c.grant(pool.request(GrantRequest { ttl_ms: 30_000, owner: String::new() })).await
                    else {
                        errors += 1;
                        continue;
                    };
                    let lease_id = lease.into_inner().lease_id;
                    let req = pb::ElectionServiceCampaignRequest {
                        election: "bench-election".into(),
                        lease_id: lease_id.clone(),
                        wait_ms: 30_000,
                        ..Default::default()
                    };
                    match e.campaign(pool.request(req)).await {
                        Ok(r) if r.get_ref().status() == pb::CampaignStatus::Elected => {}
                        _ => {
                            errors += 1;
                            continue;
                        }
                    }
                    let now = epoch.elapsed().as_micros() as u64;
                    let previous = released_at.load(Ordering::Relaxed);
                    if previous != u64::MAX && Instant::now() > measure_from {
                        let _ = latency.record(now.saturating_sub(previous));
                    }
                    released_at.store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if c.revoke(pool.request(pb::RevokeRequest { lease_id })).await.is_err() {
                        errors += 1;
                    }
                }
                return (latency, errors);
            }
            while Instant::now() < deadline {
                let req = AcquireRequest {
                    name: "bench-handoff".into(),
                    ttl_ms: 30_000,
                    wait_ms: 30_000,
                    ..Default::default()
                };
                let got = match c.acquire(pool.request(req)).await {
                    Ok(r) => r.into_inner(),
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                let now = epoch.elapsed().as_micros() as u64;
                let previous = released_at.load(Ordering::Relaxed);
                if previous != u64::MAX && Instant::now() > measure_from {
                    let _ = latency.record(now.saturating_sub(previous));
                }
                released_at.store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
                let rel = ReleaseRequest { name: "bench-handoff".into(), lease_id: got.lease_id, ..Default::default() };
                if c.release(pool.request(rel)).await.is_err() {
                    errors += 1;
                }
            }
            (latency, errors)
        }));
    }
    let (latency, errors) = gather(workers).await;
    let unit = if election { "failovers" } else { "handoffs" };
    let mut report = Report::new(args.scenario, unit, latency, args.duration.as_secs_f64());
    meter.finish(&mut report).await;
    report.error("Failed", errors);
    report.notes.insert(if election { "candidates" } else { "waiters" }, json!(args.concurrency.saturating_sub(1)));
    report
}

/// `--leases` leases, each holding a lock, renewed every third of the TTL
/// on `--concurrency` KeepAlive streams; latency is one renewal's round trip.
async fn keepalive(args: &BenchArgs, pool: &Pool) -> Result<Report, CliError> {
    let ttl_ms = args.lease_ttl.as_millis() as i64;
    let streams = args.concurrency.clamp(1, args.leases.max(1));
    // Each stream grants its own leases, then renews them; granting them all
    // first would let the first ones expire before renewals start.
    let setup = |s: usize| {
        let pool = pool.clone();
        let count = (args.leases + streams - 1 - s) / streams;
        async move {
            let mut c = LockServiceClient::new(pool.channel(s));
            let mut mine = Vec::with_capacity(count);
            for i in 0..count {
                let lease =
                    c.grant(pool.request(GrantRequest { ttl_ms, owner: "bench".into() })).await?.into_inner().lease_id;
                let name = format!("bench-ka-{s}-{i}");
                c.acquire(pool.request(AcquireRequest { name, lease_id: lease.clone(), ..Default::default() })).await?;
                mine.push(lease);
            }
            Ok::<_, tonic::Status>(mine)
        }
    };
    let interval = Duration::from_millis((ttl_ms / 3).max(1) as u64);
    let start = Instant::now() + args.warmup;
    let deadline = start + args.duration;
    let meter = Meter::start_at(args, start);
    let mut tasks = Vec::new();
    for s in 0..streams {
        let pool = pool.clone();
        let setup = setup(s);
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("valid");
            let mut errors = 0u64;
            let Ok(mine) = setup.await else { return (latency, 1) };
            let (tx, rx) = mpsc::channel(mine.len().max(1));
            let mut c = LockServiceClient::new(pool.channel(s));
            let Ok(reply) = c.keep_alive(ReceiverStream::new(rx)).await else { return (latency, 1) };
            let mut events = reply.into_inner();
            while Instant::now() < deadline {
                let tick = Instant::now();
                for lease in &mine {
                    let _ = tx.send(KeepAliveRequest { lease_id: lease.clone() }).await;
                }
                let mut answered = 0;
                while answered < mine.len() {
                    match events.next().await {
                        Some(Ok(pb::KeepAliveResponse { event: Some(pb::keep_alive_response::Event::Renewed(r)) })) => {
                            answered += 1;
                            if r.ttl_ms <= 0 {
                                errors += 1;
                            } else if tick >= start {
                                let _ = latency.record(tick.elapsed().as_micros() as u64);
                            }
                        }
                        Some(Ok(_)) => errors += 1,
                        _ => return (latency, errors + 1),
                    }
                }
                tokio::time::sleep_until(tick + interval).await;
            }
            (latency, errors)
        }));
    }
    let (latency, errors) = gather(tasks).await;
    let mut report = Report::new(args.scenario, "renewals", latency, args.duration.as_secs_f64());
    meter.finish(&mut report).await;
    report.error("LeaseLostOrStreamFailed", errors);
    report.notes.insert("leases", json!(args.leases));
    report.notes.insert("streams", json!(streams));
    Ok(report)
}

fn algorithm(algo: Algo) -> Algorithm {
    const BIG: u64 = 1_000_000_000;
    match algo {
        Algo::Fixed => Algorithm::FixedWindow(pb::FixedWindow { limit: BIG, window_ms: 60_000 }),
        Algo::Slide => Algorithm::SlidingWindow(pb::SlidingWindow { limit: BIG, window_ms: 60_000 }),
        Algo::Log => Algorithm::SlidingLog(pb::SlidingLog { limit: 10_000, window_ms: 10 }),
        Algo::Bucket => {
            Algorithm::TokenBucket(pb::TokenBucket { capacity: BIG, refill_tokens: BIG, refill_period_ms: 1000 })
        }
        Algo::Gcra => Algorithm::Gcra(pb::Gcra { rate: BIG, period_ms: 1000, burst: BIG }),
    }
}

/// The domain's view of the same limit (for the script's exact arguments).
fn domain_algorithm(algo: Algo) -> (ratelimit::Algorithm, &'static str) {
    match algorithm(algo) {
        Algorithm::FixedWindow(f) => {
            (ratelimit::Algorithm::FixedWindow { limit: f.limit, window_ms: f.window_ms }, "fixed_window")
        }
        Algorithm::SlidingWindow(s) => {
            (ratelimit::Algorithm::SlidingWindow { limit: s.limit, window_ms: s.window_ms }, "sliding_window")
        }
        Algorithm::SlidingLog(s) => {
            (ratelimit::Algorithm::SlidingLog { limit: s.limit, window_ms: s.window_ms }, "sliding_log")
        }
        Algorithm::TokenBucket(t) => (
            ratelimit::Algorithm::TokenBucket {
                capacity: t.capacity,
                refill_tokens: t.refill_tokens,
                refill_period_ms: t.refill_period_ms,
            },
            "token_bucket",
        ),
        Algorithm::Gcra(g) => {
            (ratelimit::Algorithm::Gcra { rate: g.rate, period_ms: g.period_ms, burst: g.burst }, "gcra")
        }
    }
}

async fn rate_limit(args: &BenchArgs, pool: &Pool) -> Result<Report, CliError> {
    let algo = algorithm(args.algorithm);
    let subjects = args.subjects.max(1);
    let pool2 = pool.clone();
    let mut report = drive(args, "checks", move |w, i| {
        let pool = pool2.clone();
        async move {
            let mut c = RateLimitServiceClient::new(pool.channel(w));
            let limit = Limit { name: String::new(), algorithm: Some(algo) };
            let req = CheckRequest {
                subject: format!("s{:012}", (w as u64 * 7919 + i) % subjects),
                limits: vec![limit],
                cost: Some(1),
                ..Default::default()
            };
            let reply = c.check(pool.request(req)).await.map_err(code)?.into_inner();
            if reply.allowed { Ok(()) } else { Err("Denied".into()) }
        }
    })
    .await;
    report.notes.insert("algorithm", json!(format!("{:?}", args.algorithm).to_lowercase()));
    report.notes.insert("subjects", json!(subjects));
    if args.vs_redis
        && let Some(url) = &args.redis_url
    {
        let (domain, name) = domain_algorithm(args.algorithm);
        let (kind, a, b) = domain.script_args();
        let key = format!("{}:{}:rl:{{s__rand_int__}}:{}:{name}", args.key_prefix, pool.namespace, domain.code());
        // One key; a batch of one request: cost 1, consume, id, one limit.
        let words: Vec<String> = ["1", &key, "1", "1", "consume", "bench", "1", kind, &a.to_string(), &b.to_string()]
            .map(str::to_owned)
            .into();
        report.redis = Some(redis_benchmark(
            url,
            args.concurrency,
            report.requests.max(10_000),
            1000,
            &scripts::RATELIMIT.sha(),
            &words,
        )?);
    }
    Ok(report)
}

/// Envoy's ShouldRateLimit on the same subjects as `rate_limit`, one
/// descriptor per call, as Envoy's filter sends it.
async fn rls(args: &BenchArgs, pool: &Pool) -> Report {
    use crate::envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
        service::ratelimit::v3::{
            RateLimitRequest, rate_limit_response::Code, rate_limit_service_client::RateLimitServiceClient,
        },
    };
    let subjects = args.subjects.max(1);
    let (pool2, domain) = (pool.clone(), args.domain.clone());
    let mut report = drive(args, "checks", move |w, i| {
        let (pool, domain) = (pool2.clone(), domain.clone());
        async move {
            let mut c = RateLimitServiceClient::new(pool.channel(w));
            let entry = Entry { key: "subject".into(), value: format!("s{:012}", (w as u64 * 7919 + i) % subjects) };
            let req = RateLimitRequest {
                domain,
                descriptors: vec![RateLimitDescriptor { entries: vec![entry], ..Default::default() }],
                hits_addend: 1,
            };
            let reply = c.should_rate_limit(pool.request(req)).await.map_err(code)?.into_inner();
            match reply.statuses.first() {
                Some(s) if s.current_limit.is_none() => Err("NoRule".into()),
                _ if reply.overall_code() == Code::OverLimit => Err("OverLimit".into()),
                _ => Ok(()),
            }
        }
    })
    .await;
    report.notes.insert("subjects", json!(subjects));
    report
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn member(i: u64) -> String {
    format!("m{i:012}")
}

async fn board(args: &BenchArgs, pool: &Pool) -> Result<Report, CliError> {
    let size = args.board_size.max(1);
    let mut c = LeaderboardServiceClient::new(pool.channel(0));
    let board = pb::Board { name: "bench".into(), operator: pb::Operator::Set.into(), ..Default::default() };
    c.create_board(pool.request(CreateBoardRequest { board: Some(board) })).await?;
    let keys = BoardKeys::load(args, pool).await?;
    preload(args, pool, &keys, size).await?;

    let scenario = args.scenario;
    let pool2 = pool.clone();
    let unit = match scenario {
        Scenario::BoardSubmit => "submits",
        Scenario::BoardTop => "top-100 pages",
        _ => "around-5 windows",
    };
    let mut report = drive(args, unit, move |w, i| {
        let pool = pool2.clone();
        async move {
            let mut c = LeaderboardServiceClient::new(pool.channel(w));
            let mut seed = (w as u64 + 1) * 0x9E37_79B9 + i;
            let m = member(xorshift(&mut seed) % size);
            match scenario {
                Scenario::BoardSubmit => {
                    let score = (xorshift(&mut seed) % 1_000_000_000_000) as i64;
                    let req = SubmitRequest { board: "bench".into(), member: m, score, ..Default::default() };
                    c.submit(pool.request(req)).await.map_err(code)?;
                }
                Scenario::BoardTop => {
                    let req = TopRequest { board: "bench".into(), limit: 100, ..Default::default() };
                    c.top(pool.request(req)).await.map_err(code)?;
                }
                _ => {
                    let req =
                        AroundRequest { board: "bench".into(), member: m, before: 5, after: 5, ..Default::default() };
                    c.around(pool.request(req)).await.map_err(code)?;
                }
            }
            Ok(())
        }
    })
    .await;
    report.notes.insert("board_size", json!(size));
    if args.vs_redis
        && let (Some(url), Some(k)) = (&args.redis_url, &keys)
    {
        let (script, mut words) = match scenario {
            Scenario::BoardSubmit => (
                &scripts::LB_SUBMIT,
                vec!["4", &k.meta, &k.z, &k.r, &k.seen, &k.inc, "m__rand_int__", "set", "desc", "0000__rand_int__"]
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            Scenario::BoardTop => {
                (&scripts::LB_TOP, vec!["3".into(), k.meta.clone(), k.z.clone(), k.r.clone(), k.inc.clone()])
            }
            _ => (&scripts::LB_AROUND, vec!["3".into(), k.meta.clone(), k.z.clone(), k.r.clone(), k.inc.clone()]),
        };
        let tail: &[&str] = match scenario {
            Scenario::BoardSubmit => &["8000000000000000", "0", "", "", "600000", "0", "0", "0"],
            Scenario::BoardTop => &["100", "", "0"],
            _ => &["m__rand_int__", "5", "5", "0"],
        };
        words.extend(tail.iter().map(|s| s.to_string()));
        let n = report.requests.max(10_000);
        report.redis = Some(redis_benchmark(url, args.concurrency, n, size, &script.sha(), &words)?);
    }
    Ok(report)
}

/// The bench board's keys in Redis (when --redis-url is given).
struct BoardKeys {
    meta: String,
    z: String,
    r: String,
    seen: String,
    inc: String,
    redis: redis::aio::MultiplexedConnection,
}

impl BoardKeys {
    async fn load(args: &BenchArgs, pool: &Pool) -> Result<Option<BoardKeys>, CliError> {
        let Some(url) = &args.redis_url else { return Ok(None) };
        let redis_err = |e: redis::RedisError| CliError::Usage(format!("--redis-url: {e}"));
        let client = redis::Client::open(url.as_str()).map_err(redis_err)?;
        let mut redis = client.get_multiplexed_async_connection().await.map_err(redis_err)?;
        let meta = format!("{}:{}:lb:{{bench}}", args.key_prefix, pool.namespace);
        let inc: String = redis::cmd("HGET").arg(&meta).arg("inc").query_async(&mut redis).await.map_err(redis_err)?;
        Ok(Some(BoardKeys {
            z: format!("{meta}:z:{inc}.all"),
            r: format!("{meta}:r:{inc}.all"),
            seen: format!("{meta}:seen:"),
            meta,
            inc,
            redis,
        }))
    }
}

/// Fills the bench board to `size` members: straight into Redis with
/// pipelined EVALSHA of the submit script when --redis-url is given (fast),
/// else through Submit calls.
async fn preload(args: &BenchArgs, pool: &Pool, keys: &Option<BoardKeys>, size: u64) -> Result<(), CliError> {
    let mut c = LeaderboardServiceClient::new(pool.channel(0));
    let count =
        c.count(pool.request(pb::CountRequest { board: "bench".into(), period: None })).await?.into_inner().count;
    if count >= size {
        return Ok(());
    }
    let started = Instant::now();
    match keys {
        Some(k) => {
            let mut redis = k.redis.clone();
            let redis_err = |e: redis::RedisError| CliError::Usage(format!("preload: {e}"));
            let _: String =
                scripts::LB_SUBMIT.script().prepare_invoke().load_async(&mut redis).await.map_err(redis_err)?;
            let sha = scripts::LB_SUBMIT.sha();
            let mut seed = 42u64;
            for chunk in (0..size).collect::<Vec<_>>().chunks(5000) {
                let mut pipe = redis::pipe();
                for i in chunk {
                    pipe.cmd("EVALSHA").arg(&sha).arg(4).arg(&k.meta).arg(&k.z).arg(&k.r).arg(&k.seen);
                    pipe.arg(&k.inc).arg(member(*i)).arg("set").arg("desc");
                    pipe.arg(codec::biased((xorshift(&mut seed) % 1_000_000_000_000) as i64)).arg(codec::biased(0));
                    pipe.arg("0").arg("").arg("").arg(600_000).arg(0).arg(0).arg(0).ignore();
                }
                let _: () = pipe.query_async(&mut redis).await.map_err(redis_err)?;
            }
        }
        None => {
            let next = Arc::new(AtomicU64::new(count));
            let mut tasks = Vec::new();
            for w in 0..args.concurrency.min(64) {
                let (pool, next) = (pool.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let mut c = LeaderboardServiceClient::new(pool.channel(w));
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= size {
                            return Ok::<_, tonic::Status>(());
                        }
                        let score = (i.wrapping_mul(0x9E37_79B9) % 1_000_000_000_000) as i64;
                        c.submit(pool.request(SubmitRequest {
                            board: "bench".into(),
                            member: member(i),
                            score,
                            ..Default::default()
                        }))
                        .await?;
                    }
                }));
            }
            for t in tasks {
                t.await.map_err(|e| CliError::Usage(e.to_string()))??;
            }
        }
    }
    if !args.json {
        eprintln!("preloaded the bench board to {size} members in {:.1?}", started.elapsed());
    }
    Ok(())
}

/// `--subscribers` streams spread over `--channels` channels; `--publishers`
/// publish round-robin over the channels at `--rate` in all (0: as fast as
/// each publisher's replies come back); the latency is publish (wall clock
/// in the payload) to delivery.
async fn pubsub(args: &BenchArgs, pool: &Pool) -> Result<Report, CliError> {
    let channels = args.channels.max(1);
    let name = move |c: usize| if channels == 1 { "bench".to_owned() } else { format!("bench-{c}") };
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let deadline = Instant::now() + args.warmup + args.duration + Duration::from_secs(60);
    let mut subscribers = Vec::new();
    let mut listening = vec![0u64; channels];
    for s in 0..args.subscribers {
        let (pool, ready_tx, channel) = (pool.clone(), ready_tx.clone(), s % channels);
        listening[channel] += 1;
        subscribers.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("valid");
            let mut c = PubSubServiceClient::new(pool.channel(s));
            let req = SubscribeRequest {
                channels: vec![pb::ChannelSubscription { channel: name(channel), since: None }],
                patterns: vec![],
            };
            let Ok(reply) = c.subscribe(pool.request(req)).await else {
                let _ = ready_tx.send(Err(channel));
                return (latency, 1);
            };
            let mut stream = reply.into_inner();
            let _ = stream.next().await; // Subscribed
            let _ = ready_tx.send(Ok(channel));
            // One deadline for the whole stream: a timer per message would
            // cost more than the message at 10k subscribers.
            let _ = tokio::time::timeout_at(deadline, async {
                while let Some(Ok(event)) = stream.next().await {
                    if let Some(pb::subscribe_response::Event::Message(m)) = event.event {
                        if m.payload.as_ref() == b"end" {
                            break;
                        }
                        if let Some(sent) = std::str::from_utf8(&m.payload).ok().and_then(|t| t.parse::<u64>().ok()) {
                            let _ = latency.record(now_us().saturating_sub(sent));
                        }
                    }
                }
            })
            .await;
            (latency, 0)
        }));
    }
    drop(ready_tx);
    let mut failed = 0;
    for _ in 0..args.subscribers {
        match ready.recv().await {
            Some(Ok(_)) => {}
            Some(Err(channel)) => {
                listening[channel] -= 1;
                failed += 1;
            }
            None => failed += 1,
        }
    }
    let publishers = args.publishers.max(1);
    // Per publisher: a fixed schedule, or back to back with --rate 0.
    let gap = match args.rate.unwrap_or(10) {
        0 => None,
        rate => Some(Duration::from_secs_f64(publishers as f64 / rate as f64)),
    };
    let start = Instant::now();
    let meter = Meter::start_at(args, start);
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (pool, duration) = (pool.clone(), args.duration);
            tokio::spawn(async move {
                let mut c = PubSubServiceClient::new(pool.channel(p));
                let (mut sent, mut errors) = (vec![0u64; channels], 0u64);
                let mut n = 0u64;
                while start.elapsed() < duration {
                    let channel = (p + n as usize * publishers) % channels;
                    let req = PublishRequest {
                        channel: name(channel),
                        payload: now_us().to_string().into_bytes().into(),
                        ..Default::default()
                    };
                    match c.publish(pool.request(req)).await {
                        Ok(_) => sent[channel] += 1,
                        Err(_) => errors += 1,
                    }
                    n += 1;
                    if let Some(gap) = gap {
                        tokio::time::sleep_until(start + gap * n as u32).await;
                    }
                }
                (sent, errors)
            })
        })
        .collect();
    let (mut sent, mut errors) = (vec![0u64; channels], 0u64);
    for task in tasks {
        // A publisher that panicked left nothing to count.
        let Ok((s, e)) = task.await else { continue };
        sent.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        errors += e;
    }
    let published = start.elapsed().as_secs_f64();
    let mut c = PubSubServiceClient::new(pool.channel(0));
    for channel in 0..channels {
        let end = PublishRequest { channel: name(channel), payload: b"end".to_vec().into(), ..Default::default() };
        c.publish(pool.request(end)).await?;
    }
    let (latency, _) = gather(subscribers).await;
    let mut report = Report::new(args.scenario, "deliveries", latency, start.elapsed().as_secs_f64());
    meter.finish(&mut report).await;
    let expected: u64 = sent.iter().zip(&listening).map(|(s, l)| s * l).sum();
    report.error("NotDelivered", expected.saturating_sub(report.requests));
    report.error("PublishFailed", errors);
    report.error("SubscribeFailed", failed as u64);
    let publishes: u64 = sent.iter().sum();
    report.notes.insert("subscribers", json!(args.subscribers));
    report.notes.insert("channels", json!(channels));
    report.notes.insert("publishes", json!(publishes));
    report.notes.insert("publishes_per_s", json!((publishes as f64 / published).round()));
    Ok(report)
}
