//! Lock safety under faults, checked from outside as users see it: three
//! coord processes, 16 workers contending for 8 locks (private leases, one
//! KeepAlive stream each, a fencing resource that rejects lower tokens), and
//! a nemesis that kills and restarts coord (-9), pauses Redis (SIGSTOP /
//! SIGCONT), restarts it empty, and in Redlock mode pauses a minority of
//! nodes and restarts one empty while locks are held.
//!
//! The checker holds coord to the README's promises:
//! - no two holders of one name are both inside their validity (what the
//!   holder last learned from Acquire and renewals, counted from when it
//!   sent the request) unless the older was told (LockLost) first — except
//!   across an empty restart of the single Redis, which the README documents;
//! - fencing tokens strictly increase per name (no exception), and the
//!   resource never rejects a holder inside its validity;
//! - a holder whose validity runs out hears LockLost on a stream that
//!   tracked the lock (unless a late renewal shows it survived);
//! - a fresh private lease is granted once (hold count 1);
//! - after the faults end, every lock is acquirable within one TTL.
//!
//! The same run with semaphores (SemaphoreService, size 2, one permit per
//! grant, private leases renewed on KeepAlive) holds them to the same
//! promises with "two holders" read as "more holders than the size"; and
//! with elections (ElectionService, one leader per election, terms as
//! fencing tokens on the resource, Resign to step down) to the lock's.
//!
//! `COORD_CHAOS_SECS` (default 20) sets each mode's run time for soak runs;
//! `COORD_CHAOS_SEED` replays a nemesis schedule. Counts are printed.

mod support;

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use coord::pb::{
    AcquireRequest, AcquireStatus, CampaignStatus, ElectionServiceCampaignRequest, ElectionServiceResignRequest,
    KeepAliveRequest, KeepAliveResponse, Leadership, ReleaseRequest, SemaphoreAcquireStatus,
    SemaphoreServiceAcquireRequest, SemaphoreServiceReleaseRequest, election_service_client::ElectionServiceClient,
    keep_alive_response::Event, lock_service_client::LockServiceClient,
    semaphore_service_client::SemaphoreServiceClient,
};
use support::{
    process::{free_port_pair, spawn_serve},
    redis::{RedisNodes, RedisServer},
    rng::Rng,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const TTL_MS: i64 = 1_000;
const TTL: Duration = Duration::from_millis(TTL_MS as u64);
const NAMES: usize = 8;
const WORKERS: usize = 16;
const COORDS: usize = 3;
/// lock.max_ttl: also how long a Redlock node restarted empty stays out.
const MAX_TTL: Duration = Duration::from_secs(3);
/// Semaphore mode: each name's size (workers take one permit).
const SEM_SIZE: usize = 2;

/// What the workers contend for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Lock,
    Semaphore,
    Election,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_keeps_its_promises_under_faults() {
    let redis = Arc::new(RedisServer::start());
    let run = Run::start(&["--redis-url".into(), redis.url()], Backend::Single(redis.clone()), Kind::Lock).await;
    run.exercise().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_semaphores_keep_their_promises_under_faults() {
    let redis = Arc::new(RedisServer::start());
    let run = Run::start(&["--redis-url".into(), redis.url()], Backend::Single(redis.clone()), Kind::Semaphore).await;
    run.exercise().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_elections_keep_their_promises_under_faults() {
    let redis = Arc::new(RedisServer::start());
    let run = Run::start(&["--redis-url".into(), redis.url()], Backend::Single(redis.clone()), Kind::Election).await;
    run.exercise().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_keeps_its_promises_under_faults() {
    let main = RedisServer::start();
    let nodes = Arc::new(RedisNodes::start(5));
    let args = ["--redis-url".into(), main.url(), "--redlock-nodes".into(), nodes.urls().join(",")];
    let run = Run::start(&args, Backend::Redlock(nodes.clone()), Kind::Lock).await;
    run.exercise().await;
    drop(main);
}

// === the system under test ===

#[derive(Clone)]
enum Backend {
    Single(Arc<RedisServer>),
    Redlock(Arc<RedisNodes>),
}

/// A coord process that the nemesis kills (-9) and restarts on its port.
struct CoordProc {
    args: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    channel: Channel,
}

impl CoordProc {
    fn start(base: &[String], dir: &std::path::Path, i: usize) -> CoordProc {
        let (port, _) = free_port_pair();
        let mut args: Vec<String> = base.to_vec();
        args.extend(
            [
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-enabled",
                "false",
                "--health-interval",
                "100ms",
                "--lock-max-ttl",
                &format!("{}s", MAX_TTL.as_secs()),
            ]
            .map(String::from),
        );
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy();
        let proc = CoordProc { args, log: dir.join(format!("coord{i}.log")), child: Mutex::new(None), channel };
        proc.spawn();
        proc
    }

    fn spawn(&self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        *self.child.lock().unwrap() = Some(spawn_serve(&args, &self.log));
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    async fn wait_serving(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let mut health = HealthClient::new(self.channel.clone());
            let status = health.check(HealthCheckRequest { service: "coord.v1.LockService".into() }).await;
            if status.is_ok_and(|s| s.into_inner().status == ServingStatus::Serving as i32) {
                return;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            assert!(start.elapsed() < within, "coord not serving after {within:?}; log:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for CoordProc {
    fn drop(&mut self) {
        self.kill();
    }
}

// === what happened ===

/// One grant as its holder saw it.
#[derive(Debug, Clone)]
struct Grant {
    name: usize,
    worker: usize,
    token: u64,
    hold_count: u32,
    /// When the Acquire was sent, and its reply received.
    sent: Instant,
    got: Instant,
    /// The end of validity as the holder last learned it.
    valid_until: Instant,
    released: Option<Instant>,
    lost: Option<(Instant, i32)>,
}

impl Grant {
    /// Until when the holder may believe it holds the lock.
    fn end(&self) -> Instant {
        let mut end = self.valid_until;
        if let Some(at) = self.released {
            end = end.min(at);
        }
        if let Some((at, _)) = self.lost {
            end = end.min(at);
        }
        end
    }
}

#[derive(Default)]
struct History {
    grants: Vec<Grant>,
    /// (name, token, when, grant received): writes the resource rejected
    /// while the writer was inside its validity.
    rejected: Vec<(usize, u64, Instant, Instant)>,
    /// Windows in which the single Redis restarted empty.
    empty_restarts: Vec<(Instant, Instant)>,
    faults: BTreeMap<&'static str, usize>,
    errors: BTreeMap<String, usize>,
    lost: BTreeMap<i32, usize>,
    /// Holders whose validity ran out on a stream that tracked the lock and
    /// stayed open, yet heard nothing within 2 s; and the latest LockLost
    /// after validity ran out.
    unnoticed: usize,
    notice_late: Duration,
}

impl History {
    fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    /// An empty restart of the single Redis between `from` and `to`.
    fn restarted_between(&self, from: Instant, to: Instant) -> bool {
        self.empty_restarts.iter().any(|(begin, end)| *end >= from && *begin <= to)
    }
}

/// The protected resource: accepts a write only with a token at least as
/// high as any it has seen.
struct Resource(Mutex<[u64; NAMES]>);

impl Resource {
    fn write(&self, name: usize, token: u64) -> bool {
        let mut max = self.0.lock().unwrap();
        if token < max[name] {
            return false;
        }
        max[name] = token;
        true
    }
}

// === the run ===

struct Run {
    backend: Backend,
    kind: Kind,
    coords: Arc<Vec<CoordProc>>,
    history: Arc<Mutex<History>>,
    resource: Arc<Resource>,
    seed: u64,
    _dir: tempfile::TempDir,
}

impl Run {
    async fn start(base: &[String], backend: Backend, kind: Kind) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        let coords: Vec<CoordProc> = (0..COORDS).map(|i| CoordProc::start(base, dir.path(), i)).collect();
        for c in &coords {
            c.wait_serving(Duration::from_secs(30)).await;
        }
        let seed = Rng::seed_from_env("COORD_CHAOS_SEED");
        Run {
            backend,
            kind,
            coords: Arc::new(coords),
            history: Arc::default(),
            resource: Arc::new(Resource(Mutex::new([0; NAMES]))),
            seed,
            _dir: dir,
        }
    }

    async fn exercise(self) {
        let started = Instant::now();
        let secs = std::env::var("COORD_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|id| {
                let w = Worker {
                    id,
                    kind: self.kind,
                    coords: self.coords.clone(),
                    history: self.history.clone(),
                    resource: self.resource.clone(),
                    rng: Rng(self.seed.wrapping_mul(id as u64 + 7) | 1),
                    pick: id % COORDS,
                };
                tokio::spawn(w.run(stop.clone()))
            })
            .collect();
        let nemesis = {
            let (backend, coords, history, stop) =
                (self.backend.clone(), self.coords.clone(), self.history.clone(), stop.clone());
            let rng = Rng(self.seed);
            let until = Instant::now() + Duration::from_secs(secs);
            tokio::task::spawn_blocking(move || nemesis(backend, coords, history, rng, until, stop))
        };
        nemesis.await.expect("nemesis");
        // Faults are over (healed by the nemesis): let the workers finish.
        let healed = Instant::now();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.expect("worker");
        }
        for c in self.coords.iter() {
            c.wait_serving(Duration::from_secs(30)).await;
        }
        let acquirable = self.every_lock_acquirable().await;
        self.check(started, healed, acquirable);
    }

    /// Every lock is acquirable within one TTL (plus timer slack) now that
    /// the faults are over; returns the longest wait.
    async fn every_lock_acquirable(&self) -> Duration {
        let mut longest = Duration::ZERO;
        for name in 0..NAMES {
            if self.kind == Kind::Election {
                // A candidate is elected: no leadership outlived its lease.
                let mut c = ElectionServiceClient::new(self.coords[0].channel.clone());
                let start = Instant::now();
                let got = c
                    .campaign(ElectionServiceCampaignRequest {
                        election: format!("chaos-{name}"),
                        ttl_ms: TTL_MS,
                        wait_ms: TTL_MS + 1_000,
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("chaos-{name} after the faults: {e:?}"))
                    .into_inner();
                assert_eq!(got.status, CampaignStatus::Elected as i32, "chaos-{name}: nobody elected");
                longest = longest.max(start.elapsed());
                c.resign(ElectionServiceResignRequest { leadership: got.leadership }).await.unwrap();
                continue;
            }
            if self.kind == Kind::Semaphore {
                // Every permit: nothing leaked.
                let mut c = SemaphoreServiceClient::new(self.coords[0].channel.clone());
                let start = Instant::now();
                let got = c
                    .acquire(SemaphoreServiceAcquireRequest {
                        name: format!("chaos-{name}"),
                        permits: SEM_SIZE as u32,
                        size: SEM_SIZE as u32,
                        ttl_ms: TTL_MS,
                        wait_ms: TTL_MS + 1_000,
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("chaos-{name} after the faults: {e:?}"))
                    .into_inner();
                assert_eq!(got.status, SemaphoreAcquireStatus::Acquired as i32, "chaos-{name}: permits leaked");
                longest = longest.max(start.elapsed());
                c.release(SemaphoreServiceReleaseRequest {
                    name: format!("chaos-{name}"),
                    permit_id: got.permit_id,
                    lease_id: got.lease_id,
                })
                .await
                .unwrap();
                continue;
            }
            let mut c = LockServiceClient::new(self.coords[0].channel.clone());
            let start = Instant::now();
            let got = c
                .acquire(AcquireRequest {
                    name: format!("chaos-{name}"),
                    ttl_ms: TTL_MS,
                    wait_ms: TTL_MS + 1_000,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("chaos-{name} after the faults: {e:?}"))
                .into_inner();
            assert_eq!(got.status, AcquireStatus::Acquired as i32, "chaos-{name} not acquirable after the faults");
            longest = longest.max(start.elapsed());
            c.release(ReleaseRequest { name: format!("chaos-{name}"), lease_id: got.lease_id, ..Default::default() })
                .await
                .unwrap();
        }
        longest
    }

    fn check(&self, started: Instant, healed: Instant, acquirable: Duration) {
        let h = self.history.lock().unwrap();
        let single = matches!(self.backend, Backend::Single(_));
        let mut violations = Vec::new();
        let mut excused = 0;
        for name in 0..NAMES {
            let mut grants: Vec<&Grant> = h.grants.iter().filter(|g| g.name == name).collect();
            grants.sort_by_key(|g| g.got);
            let room = if self.kind == Kind::Semaphore { SEM_SIZE } else { 1 };
            for (i, a) in grants.iter().enumerate() {
                // Grants inside their validity when `a` was granted, the
                // holders not told: at most the size minus one (besides a).
                let inside: Vec<&&Grant> = grants[..i].iter().filter(|o| a.got < o.end()).collect();
                if inside.len() >= room {
                    if single && inside.iter().any(|o| h.restarted_between(o.got, a.got)) {
                        excused += 1;
                    } else {
                        violations.push(format!(
                            "over-admission of {name}: w{} (token {}) granted while {} others held it: {:?}",
                            a.worker,
                            a.token,
                            inside.len(),
                            inside.iter().map(|o| (o.worker, o.token)).collect::<Vec<_>>()
                        ));
                    }
                }
                for b in &grants[i + 1..] {
                    // Tokens: a grant answered before another was asked for
                    // has the lower token.
                    if a.got < b.sent && a.token >= b.token {
                        violations.push(format!("token regression on {name}: {a:?} then {b:?}"));
                    }
                    // Two holders inside validity, the older not told
                    // (semaphores: counted above).
                    if room == 1 && b.got < a.end() {
                        if single && h.restarted_between(a.got, b.got) {
                            excused += 1;
                        } else {
                            violations.push(format!(
                                "double grant of {name}: w{} (token {}) held until +{:?} when w{} (token {}) was granted",
                                a.worker,
                                a.token,
                                a.end() - b.got,
                                b.worker,
                                b.token
                            ));
                        }
                    }
                }
            }
        }
        for g in h.grants.iter().filter(|g| g.hold_count != 1) {
            violations.push(format!("fresh private lease granted with hold count {}: {g:?}", g.hold_count));
        }
        for (name, token, at, got) in &h.rejected {
            if single && h.restarted_between(*got, *at) {
                excused += 1;
            } else {
                violations.push(format!("resource rejected token {token} of {name} inside its validity"));
            }
        }
        if h.unnoticed > 0 {
            violations.push(format!("{} holders were never told their lock expired", h.unnoticed));
        }
        if acquirable > TTL + Duration::from_millis(1_000) {
            violations.push(format!("a lock took {acquirable:?} to become acquirable after the faults"));
        }
        let releases = h.grants.iter().filter(|g| g.released.is_some()).count();
        eprintln!(
            "{:?} chaos ({}; seed {}): {} grants, {releases} releases, lost {:?}, errors {:?}, faults {:?}, \
             {excused} overlaps excused by an empty restart, LockLost at most {:?} after validity ran out, \
             acquirable {acquirable:?} after healing, \
             {} violations; {:?} in all ({:?} of faults)",
            self.kind,
            if single { "single Redis" } else { "Redlock, 5 nodes" },
            self.seed,
            h.grants.len(),
            h.lost,
            h.errors,
            h.faults,
            h.notice_late,
            violations.len(),
            started.elapsed(),
            healed - started,
        );
        assert!(
            violations.is_empty(),
            "{} violations, e.g.:\n{}",
            violations.len(),
            violations[..violations.len().min(10)].join("\n")
        );
        assert!(h.grants.len() >= 100, "only {} grants", h.grants.len());
        assert!(h.faults.values().sum::<usize>() >= 5, "only {:?} faults", h.faults);
    }
}

// === the workers ===

struct Worker {
    id: usize,
    kind: Kind,
    coords: Arc<Vec<CoordProc>>,
    history: Arc<Mutex<History>>,
    resource: Arc<Resource>,
    rng: Rng,
    /// The coord this worker talks to; the next one after a failure.
    pick: usize,
}

impl Worker {
    fn client(&self) -> LockServiceClient<Channel> {
        LockServiceClient::new(self.coords[self.pick].channel.clone())
    }

    fn error(&mut self, what: &str, code: tonic::Code) {
        *self.history.lock().unwrap().errors.entry(format!("{what} {code:?}")).or_default() += 1;
        self.pick = (self.pick + 1) % COORDS;
    }

    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let name = self.rng.below(NAMES as u64) as usize;
            if self.kind == Kind::Semaphore {
                self.take_permit(name).await;
                continue;
            }
            if self.kind == Kind::Election {
                self.lead(name).await;
                continue;
            }
            let mut request = tonic::Request::new(AcquireRequest {
                name: format!("chaos-{name}"),
                ttl_ms: TTL_MS,
                wait_ms: 1_500,
                owner: format!("w{}", self.id),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(4));
            let sent = Instant::now();
            let got = match self.client().acquire(request).await {
                Ok(reply) => reply.into_inner(),
                Err(e) => {
                    self.error("acquire", e.code());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if got.status != AcquireStatus::Acquired as i32 {
                continue;
            }
            let validity = if got.validity_ms > 0 { got.validity_ms } else { got.ttl_ms };
            let mut grant = Grant {
                name,
                worker: self.id,
                token: got.fencing_token,
                hold_count: got.hold_count,
                sent,
                got: Instant::now(),
                valid_until: sent + Duration::from_millis(validity.max(0) as u64),
                released: None,
                lost: None,
            };
            self.hold(&mut grant, &got.lease_id).await;
            self.history.lock().unwrap().grants.push(grant);
        }
    }

    /// One permit of semaphore `name` under a private lease, held like a lock.
    async fn take_permit(&mut self, name: usize) {
        let mut request = tonic::Request::new(SemaphoreServiceAcquireRequest {
            name: format!("chaos-{name}"),
            permits: 1,
            size: SEM_SIZE as u32,
            ttl_ms: TTL_MS,
            wait_ms: 1_500,
            owner: format!("w{}", self.id),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(4));
        let sent = Instant::now();
        let got = match SemaphoreServiceClient::new(self.coords[self.pick].channel.clone()).acquire(request).await {
            Ok(reply) => reply.into_inner(),
            Err(e) => {
                self.error("acquire", e.code());
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        if got.status != SemaphoreAcquireStatus::Acquired as i32 {
            return;
        }
        let mut grant = Grant {
            name,
            worker: self.id,
            token: got.permit_id,
            hold_count: 1,
            sent,
            got: Instant::now(),
            valid_until: sent + Duration::from_millis(got.ttl_ms.max(0) as u64),
            released: None,
            lost: None,
        };
        self.hold(&mut grant, &got.lease_id).await;
        self.history.lock().unwrap().grants.push(grant);
    }

    /// Leads election `name` under a private lease, held like a lock (the
    /// term is the fencing token the resource checks).
    async fn lead(&mut self, name: usize) {
        let mut request = tonic::Request::new(ElectionServiceCampaignRequest {
            election: format!("chaos-{name}"),
            ttl_ms: TTL_MS,
            wait_ms: 1_500,
            value: format!("w{}", self.id).into_bytes(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(4));
        let sent = Instant::now();
        let got = match ElectionServiceClient::new(self.coords[self.pick].channel.clone()).campaign(request).await {
            Ok(reply) => reply.into_inner(),
            Err(e) => {
                self.error("campaign", e.code());
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let Some(leadership) = got.leadership.filter(|_| got.status == CampaignStatus::Elected as i32) else {
            return;
        };
        let mut grant = Grant {
            name,
            worker: self.id,
            token: leadership.term,
            hold_count: 1,
            sent,
            got: Instant::now(),
            valid_until: sent + Duration::from_millis(got.ttl_ms.max(0) as u64),
            released: None,
            lost: None,
        };
        self.hold(&mut grant, &leadership.lease_id).await;
        self.history.lock().unwrap().grants.push(grant);
    }

    /// Uses the lock for a while, renewing it every TTL/3 on a KeepAlive
    /// stream (moving to another coord when one fails), then releases it —
    /// unless it was lost or its validity ran out first.
    async fn hold(&mut self, grant: &mut Grant, lease: &str) {
        // Mostly short critical sections; some outlive several renewals.
        let hold = if self.rng.below(10) < 9 { self.rng.between(0, 50) } else { self.rng.between(400, 1_600) };
        let until = Instant::now() + hold;
        let mut stream: Option<(mpsc::Sender<KeepAliveRequest>, Streaming<KeepAliveResponse>)> = None;
        let mut inflight: VecDeque<Instant> = VecDeque::new();
        // A renewal succeeded on the current stream: it tracks the lock, so
        // it must say when the lock is gone.
        let mut confirmed = false;
        let mut next_renewal = Instant::now() + TTL / 3;
        loop {
            let now = Instant::now();
            if grant.lost.is_some() || now >= grant.valid_until || now >= until {
                break;
            }
            // A semaphore's holders work side by side: no single-writer resource.
            if self.kind != Kind::Semaphore && !self.resource.write(grant.name, grant.token) {
                if grant.lost.is_none() && Instant::now() < grant.valid_until {
                    self.history.lock().unwrap().rejected.push((grant.name, grant.token, Instant::now(), grant.got));
                }
                break;
            }
            if now >= next_renewal {
                next_renewal = now + TTL / 3;
                if stream.is_none() {
                    let (tx, rx) = mpsc::channel(8);
                    match self.client().keep_alive(ReceiverStream::new(rx)).await {
                        Ok(s) => stream = Some((tx, s.into_inner())),
                        Err(e) => self.error("keepalive", e.code()),
                    }
                    inflight.clear();
                    confirmed = false;
                }
                if let Some((tx, _)) = &stream {
                    inflight.push_back(Instant::now());
                    let _ = tx.send(KeepAliveRequest { lease_id: lease.to_owned() }).await;
                }
            }
            let wake = next_renewal.min(until).min(grant.valid_until).min(Instant::now() + Duration::from_millis(50));
            let message = async {
                match &mut stream {
                    Some((_, s)) => s.message().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                message = message => match message {
                    Ok(Some(KeepAliveResponse { event: Some(Event::Renewed(r)) })) if r.lease_id == lease => {
                        let sent = inflight.pop_front();
                        match (r.ttl_ms, sent) {
                            (0, _) => grant.lost = Some((Instant::now(), -1)),
                            (ttl, Some(sent)) => {
                                grant.valid_until = grant.valid_until.max(sent + Duration::from_millis(ttl as u64));
                                confirmed = true;
                            }
                            _ => {}
                        }
                    }
                    Ok(Some(KeepAliveResponse { event: Some(Event::LockLost(l)) })) if l.lease_id == lease => {
                        grant.lost = Some((Instant::now(), l.reason));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        let code = message.err().map_or(tonic::Code::Ok, |e| e.code());
                        self.error("keepalive stream", code);
                        stream = None;
                    }
                },
            }
        }
        // Validity ran out without a word: a stream that tracked the lock
        // must push LockLost about now (no later than one TTL after the last
        // successful renewal), unless a late renewal shows it survived.
        if grant.lost.is_none()
            && Instant::now() >= grant.valid_until
            && confirmed
            && let Some((_, s)) = &mut stream
        {
            let expired = grant.valid_until;
            let notice = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match s.message().await {
                        Ok(Some(KeepAliveResponse { event: Some(Event::LockLost(l)) })) if l.lease_id == lease => {
                            return Some(l.reason);
                        }
                        Ok(Some(KeepAliveResponse { event: Some(Event::Renewed(r)) })) if r.lease_id == lease => {
                            if r.ttl_ms == 0 {
                                return Some(-1);
                            }
                            return None; // renewed late: it was never lost
                        }
                        Ok(Some(_)) => {}
                        // The stream broke (coord killed): nobody to tell.
                        Ok(None) | Err(_) => return None,
                    }
                }
            })
            .await;
            let mut h = self.history.lock().unwrap();
            match notice {
                Ok(Some(reason)) => {
                    grant.lost = Some((Instant::now(), reason));
                    let late = Instant::now().saturating_duration_since(expired);
                    h.notice_late = h.notice_late.max(late);
                }
                Ok(None) => {}
                Err(_) => h.unnoticed += 1,
            }
        }
        if let Some((_, reason)) = grant.lost {
            *self.history.lock().unwrap().lost.entry(reason).or_default() += 1;
            return;
        }
        grant.released = Some(Instant::now());
        if self.kind == Kind::Election {
            let leadership =
                Leadership { election: format!("chaos-{}", grant.name), lease_id: lease.to_owned(), term: grant.token };
            let mut request = tonic::Request::new(ElectionServiceResignRequest { leadership: Some(leadership) });
            request.set_timeout(Duration::from_secs(2));
            if let Err(e) = ElectionServiceClient::new(self.coords[self.pick].channel.clone()).resign(request).await {
                self.error("resign", e.code());
            }
            return;
        }
        if self.kind == Kind::Semaphore {
            let mut request = tonic::Request::new(SemaphoreServiceReleaseRequest {
                name: format!("chaos-{}", grant.name),
                permit_id: grant.token,
                lease_id: lease.to_owned(),
            });
            request.set_timeout(Duration::from_secs(2));
            if let Err(e) = SemaphoreServiceClient::new(self.coords[self.pick].channel.clone()).release(request).await {
                self.error("release", e.code());
            }
            return;
        }
        let mut request = tonic::Request::new(ReleaseRequest {
            name: format!("chaos-{}", grant.name),
            lease_id: lease.to_owned(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(2));
        if let Err(e) = self.client().release(request).await {
            // It ends with its TTL.
            self.error("release", e.code());
        }
    }
}

// === the nemesis ===

/// Injects faults until `until`, then heals everything.
fn nemesis(
    backend: Backend,
    coords: Arc<Vec<CoordProc>>,
    history: Arc<Mutex<History>>,
    mut rng: Rng,
    until: Instant,
    stop: Arc<AtomicBool>,
) {
    let mut last_node_restart: Option<Instant> = None;
    let mut empty_restarts = 0;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(rng.between(300, 900));
        let roll = rng.below(100);
        match (&backend, roll) {
            (_, 0..30) => {
                let c = &coords[rng.below(COORDS as u64) as usize];
                c.kill();
                history.lock().unwrap().fault("coord killed");
                std::thread::sleep(rng.between(200, 600));
                c.spawn();
            }
            (Backend::Single(redis), 30..65) => {
                redis.stop();
                history.lock().unwrap().fault("redis paused");
                // Sometimes past a TTL: holders must hear of it.
                std::thread::sleep(rng.between(200, 1_500));
                redis.cont();
            }
            (Backend::Single(redis), 65..75) if empty_restarts < 2 => {
                empty_restarts += 1;
                let begin = Instant::now();
                redis.kill();
                redis.restart();
                let mut h = history.lock().unwrap();
                h.empty_restarts.push((begin, Instant::now()));
                h.fault("redis restarted empty");
            }
            (Backend::Redlock(nodes), 30..75) => {
                let first = rng.below(5) as usize;
                let paused: Vec<usize> =
                    if rng.below(2) == 0 { vec![first] } else { vec![first, (first + 1 + rng.below(4) as usize) % 5] };
                for i in &paused {
                    nodes.node(*i).stop();
                }
                history.lock().unwrap().fault(if paused.len() == 1 { "node paused" } else { "two nodes paused" });
                std::thread::sleep(rng.between(200, 1_500));
                for i in &paused {
                    nodes.node(*i).cont();
                }
            }
            // One node at a time, the previous one out of quarantine.
            (Backend::Redlock(nodes), 75..90)
                if last_node_restart.is_none_or(|t| t.elapsed() > MAX_TTL + Duration::from_secs(1)) =>
            {
                let node = nodes.node(rng.below(5) as usize);
                node.kill();
                node.restart();
                last_node_restart = Some(Instant::now());
                history.lock().unwrap().fault("node restarted empty");
            }
            _ => {}
        }
    }
    // Heal: everything running and reachable.
    for c in coords.iter().filter(|c| !c.running()) {
        c.spawn();
    }
}
