//! LockService: leases, locks held under them, fencing tokens, and the
//! KeepAlive stream.
//!
//! - A **lease** is a TTL in Redis. A *shared* lease (Grant) can hold many
//!   locks; its keys are `lease:{id}` and `lease:{id}:locks` (the index of
//!   its locks). A *private* lease (Acquire with a TTL) holds exactly one
//!   lock and has no keys of its own: the lock's hash is the lease, and its
//!   id embeds the lock name, so any instance can renew it in one call.
//! - A **lock** is a hash `lock:{name}` with the holding lease, a hold
//!   count, the fencing token and the lock's TTL; `lock:{name}:fence` keeps
//!   the last token and `lock:{name}:waiters` who waits. A lock never
//!   outlives its lease: it is granted with the lease's remaining TTL and
//!   renewed with it.
//! - When a grant ends, the hash stays as a tombstone for one TTL saying how
//!   (released, forced, revoked), so the holder's KeepAlive reports the
//!   right reason; a tombstone counts as free.
//!
//! Module layout: `store` (the `LockStore` contract and its one-Redis
//! implementation, one method per script call, with the replies it decodes),
//! `redlock` (the contract on N nodes, decided by majority, and its vote
//! types), `events` (pub/sub fan-out), `keepalive` (the stream), `grpc` (the
//! adapter); this file holds the vocabulary every layer shares (`LeaseId`,
//! `GrantEnd`, `LockState`, `LostReason`, `LockInfo`, the outcomes) and the
//! operations.

mod election;
pub mod election_grpc;
mod events;
pub mod grpc;
mod keepalive;
mod redlock;
mod semaphore;
pub mod semaphore_grpc;
mod store;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

pub use self::events::LockEvents;
pub use self::redlock::{NodeResult, Redlock, Vote};
pub use self::semaphore::{
    MAX_SEM_SIZE, PermitHolder, PermitRef, RW_SIZE, RwMode, SemAcquire, SemInfo, SemKind, SemOutcome, SemReleaseOutcome,
};
use self::store::{Attempt, LockStore, Release, ReleaseReply, Store, Try};
use crate::{
    backend::Backend,
    config::LockConfig,
    error::{Error, Result},
    redis::{EventChannel, Name, Namespace},
};

/// Lock names: 1–512 bytes.
pub const MAX_LOCK_NAME_BYTES: usize = 512;
/// Owner labels and request ids: up to 256 bytes.
pub const MAX_OWNER_BYTES: usize = 256;

// === domain types ===

/// A lease id as the client sees it: opaque, with ≥ 128 random bits.
/// Shared: `l<32 hex>`. Private to a lock: `p<32 hex>.<lock name>`. Private
/// to a semaphore or read/write lock grant: `q<32 hex>.<tag>.<name>`
/// ([`SemKind::tag`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseId {
    Shared(String),
    Private { id: String, name: Name },
    Permit { id: String, kind: SemKind, name: Name },
}

impl LeaseId {
    /// 128 bits from the thread's CSPRNG (ChaCha12 seeded and reseeded
    /// from the OS): unguessable like the OS generator, without a system
    /// call per id on the Acquire path.
    fn random_hex() -> String {
        use rand::Rng as _;
        format!("{:032x}", rand::rng().random::<u128>())
    }

    pub fn new_shared() -> Self {
        LeaseId::Shared(format!("l{}", Self::random_hex()))
    }

    pub fn new_private(name: &Name) -> Self {
        LeaseId::Private { id: format!("p{}.{}", Self::random_hex(), name.as_str()), name: name.clone() }
    }

    pub fn new_permit(kind: SemKind, name: &Name) -> Self {
        let id = format!("q{}.{}.{}", Self::random_hex(), kind.tag() as char, name.as_str());
        LeaseId::Permit { id, kind, name: name.clone() }
    }

    /// Parses a client-supplied id; malformed ids are INVALID_ARGUMENT.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::invalid("lease_id", "not a lease id issued by coord");
        let hex = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        match text.as_bytes().first() {
            Some(b'l') if hex(&text[1..]) => Ok(LeaseId::Shared(text.to_owned())),
            Some(b'p') if text.len() > 34 && hex(&text[1..33]) && text.as_bytes()[33] == b'.' => {
                let name = Name::parse("lease_id", &text[34..]).map_err(|_| bad())?;
                Ok(LeaseId::Private { id: text.to_owned(), name })
            }
            Some(b'q')
                if text.len() > 36
                    && hex(&text[1..33])
                    && text.as_bytes()[33] == b'.'
                    && text.as_bytes()[35] == b'.' =>
            {
                let kind = SemKind::from_tag(text.as_bytes()[34]).ok_or_else(bad)?;
                let name = Name::parse("lease_id", &text[36..]).map_err(|_| bad())?;
                Ok(LeaseId::Permit { id: text.to_owned(), kind, name })
            }
            _ => Err(bad()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LeaseId::Shared(id) => id,
            LeaseId::Private { id, .. } => id,
            LeaseId::Permit { id, .. } => id,
        }
    }
}

/// What a lease holds and a KeepAlive stream reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldKind {
    Lock,
    Semaphore,
    RwLock,
    Leadership,
}

impl HoldKind {
    /// The counted lock behind a semaphore or read/write hold.
    pub fn sem(self) -> Option<SemKind> {
        match self {
            HoldKind::Lock => None,
            HoldKind::Semaphore => Some(SemKind::Semaphore),
            HoldKind::RwLock => Some(SemKind::RwLock),
            HoldKind::Leadership => Some(SemKind::Election),
        }
    }
}

impl From<SemKind> for HoldKind {
    fn from(kind: SemKind) -> Self {
        match kind {
            SemKind::Semaphore => HoldKind::Semaphore,
            SemKind::RwLock => HoldKind::RwLock,
            SemKind::Election => HoldKind::Leadership,
        }
    }
}

/// Why a holder lost a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LostReason {
    Expired,
    ForceReleased,
    LeaseRevoked,
    BackendUnavailable,
    /// Redlock mode: no longer held on a majority of nodes.
    QuorumLost,
}

impl LostReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LostReason::Expired => "expired",
            LostReason::ForceReleased => "force_released",
            LostReason::LeaseRevoked => "lease_revoked",
            LostReason::BackendUnavailable => "backend_unavailable",
            LostReason::QuorumLost => "quorum_lost",
        }
    }
}

/// How a grant ended, other than by expiry. The scripts spell it in the
/// lock's tombstone (`state`), in its event and in renew.lua's reply with
/// [`GrantEnd::as_str`]; ordered by which end a Redlock renewal reports when
/// nodes disagree (the strongest claim wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantEnd {
    /// By its holder: not a loss.
    Released,
    Revoked,
    Forced,
}

impl GrantEnd {
    pub const fn as_str(self) -> &'static str {
        match self {
            GrantEnd::Released => "released",
            GrantEnd::Revoked => "revoked",
            GrantEnd::Forced => "forced",
        }
    }

    pub fn parse(text: &[u8]) -> Option<Self> {
        [GrantEnd::Released, GrantEnd::Revoked, GrantEnd::Forced].into_iter().find(|s| s.as_str().as_bytes() == text)
    }

    /// What the holder lost, or None when it released the lock itself.
    pub fn lost(self) -> Option<LostReason> {
        match self {
            GrantEnd::Released => None,
            GrantEnd::Revoked => Some(LostReason::LeaseRevoked),
            GrantEnd::Forced => Some(LostReason::ForceReleased),
        }
    }
}

/// What renewing a lease found for one of its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Held by the lease (and renewed with it).
    Held,
    /// Expired, or re-granted with no trace of this lease.
    Gone,
    /// The lease's grant ended this way (its tombstone says so).
    Ended(GrantEnd),
    /// Redlock mode: still held on some nodes, but not on a majority.
    QuorumLost,
}

impl LockState {
    /// What the holder lost, or None while it holds the lock or released
    /// it itself.
    pub fn lost(self) -> Option<LostReason> {
        match self {
            LockState::Held => None,
            LockState::Gone => Some(LostReason::Expired),
            LockState::Ended(end) => end.lost(),
            LockState::QuorumLost => Some(LostReason::QuorumLost),
        }
    }
}

/// renew.lua's word for a lock: `held`, `gone` or a [`GrantEnd`].
impl redis::FromRedisValue for LockState {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let redis::Value::BulkString(word) = &v else {
            return Err(format!("lock state: expected a word, got {v:?}").into());
        };
        match word.as_slice() {
            b"held" => Ok(LockState::Held),
            b"gone" => Ok(LockState::Gone),
            other => GrantEnd::parse(other)
                .map(LockState::Ended)
                .ok_or_else(|| format!("lock state: unknown {:?}", String::from_utf8_lossy(other)).into()),
        }
    }
}

/// A lock's state for Describe and List.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockInfo {
    pub name: String,
    pub held: bool,
    pub lease: String,
    pub owner: String,
    pub token: u64,
    pub ttl_ms: i64,
    pub hold_count: u32,
    pub waiters: u32,
}

/// describe.lua's reply, `{state, lease, owner, token, count, TTL, waiters}`
/// (the name is the caller's). Anything but a held lock reads as free.
impl redis::FromRedisValue for LockInfo {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        use store::{int, list, malformed, text, uint};
        let items = list(v, "describe")?;
        let [state, lease, owner, token, count, ttl, waiters] = items.as_slice() else {
            return Err(malformed("describe", &items));
        };
        let waiters = uint(waiters)?;
        if text(state)? != "held" {
            return Ok(LockInfo { waiters, ..LockInfo::default() });
        }
        Ok(LockInfo {
            name: String::new(),
            held: true,
            lease: text(lease)?,
            owner: text(owner)?,
            token: uint(token)?,
            hold_count: uint(count)?,
            ttl_ms: int(Some(ttl))?.max(0),
            waiters,
        })
    }
}

/// Under which lease an Acquire holds the lock.
#[derive(Debug, Clone)]
pub enum Holder {
    Lease(LeaseId),
    /// A new private lease with this requested TTL.
    Ttl(i64),
}

#[derive(Debug, Clone)]
pub struct AcquireParams {
    pub name: Name,
    pub holder: Holder,
    pub wait: Duration,
    pub owner: String,
    /// Makes retries safe: a request id that was already granted returns
    /// that grant (and its lease) instead of taking another hold.
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// `validity_ms`: Redlock mode only (else 0). `attempt`: the try that
    /// holds it, for [`Locks::undo`] when the caller never hears of it.
    Acquired { lease: String, token: u64, hold_count: u32, ttl_ms: i64, validity_ms: i64, attempt: String },
    /// `nodes`: Redlock mode only.
    NotAcquired { holder_owner: String, holder_ttl_ms: i64, nodes: Vec<NodeResult> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released { remaining: u32 },
    NotHeld,
    HeldByOther,
}

/// Settings of the lock service, from `[lock]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub max_wait: Duration,
    pub replicas: Option<(u32, Duration)>,
}

impl From<&LockConfig> for Settings {
    fn from(c: &LockConfig) -> Self {
        Settings {
            min_ttl: c.min_ttl,
            max_ttl: c.max_ttl,
            max_wait: c.max_wait,
            replicas: (c.min_replicas > 0).then_some((c.min_replicas, c.replica_ack_timeout)),
        }
    }
}

// === operations ===

/// The lock service's domain: everything but gRPC.
pub struct Locks {
    /// Where locks live: one Redis (node or cluster), or Redlock nodes.
    store: Arc<dyn LockStore>,
    /// Keys and channel; the same on every Redlock node.
    keys: Store,
    hub: Arc<LockEvents>,
    settings: Settings,
    shutdown: CancellationToken,
    /// Redlock mode: semaphores and read/write locks are refused.
    redlock: bool,
}

/// A lease in a principal's live-lease set.
fn lease_member(ns: &Namespace, lease: &LeaseId) -> String {
    format!("{}\n{}", ns.as_str(), lease.as_str())
}

impl Locks {
    /// Locks on the backend's Redis, or on `redlock`'s nodes when given.
    pub fn new(
        backend: &Backend,
        redlock: Option<Arc<Redlock>>,
        hub: Arc<LockEvents>,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Self {
        let keys =
            Store::new(backend.redis.clone(), backend.keys.clone(), Self::events_for(&backend.redis, &backend.keys));
        let is_redlock = redlock.is_some();
        let store: Arc<dyn LockStore> = match redlock {
            Some(r) => r,
            None => Arc::new(keys.clone()),
        };
        Locks { store, keys, hub, settings, shutdown, redlock: is_redlock }
    }

    /// The longest wait an Acquire or Campaign may ask for.
    pub fn max_wait(&self) -> Duration {
        self.settings.max_wait
    }

    /// The pub/sub channel the scripts publish on (on a single node, and on
    /// each Redlock node).
    pub fn channel_for(keys: &crate::redis::KeyBuilder) -> String {
        format!("{}:_:lock-events", keys.prefix())
    }

    /// The channel(s) scripts on `redis` publish on: one per slot with
    /// sharded pub/sub.
    pub fn events_for(redis: &crate::redis::Redis, keys: &crate::redis::KeyBuilder) -> EventChannel {
        let name = Self::channel_for(keys);
        if redis.sharded() { EventChannel::PerSlot(name.into()) } else { EventChannel::One(name.into()) }
    }

    /// Clamps a requested TTL into the configured bounds; ≤ 0 is invalid.
    pub fn clamp_ttl(&self, field: &str, ttl_ms: i64) -> Result<u64> {
        if ttl_ms <= 0 {
            return Err(Error::invalid(field, format!("must be > 0 (ms), got {ttl_ms}")));
        }
        let min = self.settings.min_ttl.as_millis() as u64;
        let max = self.settings.max_ttl.as_millis() as u64;
        Ok((ttl_ms as u64).clamp(min, max))
    }

    pub async fn grant(&self, ns: &Namespace, ttl_ms: i64, owner: &str) -> Result<(LeaseId, u64)> {
        let ttl = self.clamp_ttl("ttl_ms", ttl_ms)?;
        check_owner(owner)?;
        let lease = self.store.grant(ns, ttl, owner).await?;
        metrics::counter!("coord_lock_leases_granted_total").increment(1);
        Ok((lease, ttl))
    }

    /// [`Locks::grant`] for a principal that may hold at most `max` live
    /// leases (its quota): RESOURCE_EXHAUSTED, and no lease, when it holds
    /// that many. The count lives in a sorted set on the main Redis; members
    /// whose leases may have expired are checked against the leases first,
    /// so expired and revoked leases free their places.
    pub async fn grant_capped(
        &self,
        ns: &Namespace,
        ttl_ms: i64,
        owner: &str,
        principal: &str,
        max: u32,
    ) -> Result<(LeaseId, u64)> {
        let (lease, ttl) = self.grant(ns, ttl_ms, owner).await?;
        let taken = async {
            let mut checked = Vec::new();
            for member in self.keys.lease_quota_due(principal, 100).await? {
                let remaining = match member.rsplit_once('\n') {
                    Some((ns, id)) => match Namespace::parse(ns) {
                        Ok(ns) => self.store.lease_info(&ns, id).await?.map_or(0, |(ttl, _)| ttl),
                        Err(_) => 0,
                    },
                    None => 0,
                };
                checked.push((member, remaining));
            }
            self.keys.lease_quota_take(principal, &lease_member(ns, &lease), ttl, max, &checked).await
        };
        match taken.await {
            Ok((true, _)) => Ok((lease, ttl)),
            outcome => {
                // Over the quota, or it could not be counted: no lease.
                let _ = self.revoke(ns, &lease).await;
                match outcome {
                    Ok((_, count)) => Err(Error::ResourceExhausted(format!(
                        "principal {principal:?} holds {count} live leases, its quota of {max}; revoke one first"
                    ))),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Stops counting a revoked lease against `principal`'s quota.
    pub async fn uncount_lease(&self, ns: &Namespace, lease: &LeaseId, principal: &str) -> Result<()> {
        self.keys.lease_quota_drop(principal, &lease_member(ns, lease)).await
    }

    /// Ends a lease and every lock and grant held under it; returns the
    /// released lock, semaphore and read/write lock names. Idempotent.
    pub async fn revoke(&self, ns: &Namespace, lease: &LeaseId) -> Result<Vec<String>> {
        let (names, permits) = match lease {
            LeaseId::Private { name, .. } => (vec![name.as_str().to_owned()], Vec::new()),
            LeaseId::Shared(id) => self.store.revoke(ns, id).await?,
            LeaseId::Permit { .. } => (Vec::new(), Vec::new()),
        };
        let mut released = self.revoke_permits(ns, lease, &permits).await?;
        for name in names {
            let Ok(lock) = Name::parse("name", &name) else { continue };
            if let Some(ended) = self.store.end(ns, &lock, Some(lease.as_str()), GrantEnd::Revoked).await? {
                self.local_end(ns, &lock, &ended.lease, GrantEnd::Revoked, ended.token);
                released.push(name);
            }
        }
        Ok(released)
    }

    /// Acquires `params.name`, waiting up to `params.wait` but never past
    /// `deadline` (the call's). `cancel` fires when the caller goes away: a
    /// lock granted after that is released again, so nothing is left behind.
    pub async fn acquire(
        &self,
        ns: &Namespace,
        params: AcquireParams,
        deadline: Option<Instant>,
        cancel: CancellationToken,
    ) -> Result<AcquireOutcome> {
        let started = Instant::now();
        if params.wait > self.settings.max_wait {
            return Err(Error::invalid(
                "wait_ms",
                format!("must be at most {} ms, got {}", self.settings.max_wait.as_millis(), params.wait.as_millis()),
            ));
        }
        check_owner(&params.owner)?;
        if params.request_id.len() > MAX_OWNER_BYTES {
            return Err(Error::invalid("request_id", format!("must be at most {MAX_OWNER_BYTES} bytes")));
        }
        let name = &params.name;

        // The lease and the TTL the lock gets. A shared lease gives its
        // own remaining TTL (a lock never outlives its lease) and, unless
        // the request names one, its owner label.
        let (lease, ttl_ms) = match &params.holder {
            Holder::Ttl(ttl) => (LeaseId::new_private(name), self.clamp_ttl("ttl_ms", *ttl)?),
            Holder::Lease(lease @ LeaseId::Private { name: own, .. }) => {
                if own != name {
                    return Err(Error::invalid(
                        "lease_id",
                        "a private lease (from Acquire with ttl_ms) holds only its own lock; use Grant for a lease that holds several",
                    ));
                }
                // 0: re-enter only, keeping the lock's TTL.
                (lease.clone(), 0)
            }
            Holder::Lease(lease @ LeaseId::Shared(_)) => (lease.clone(), 0),
            Holder::Lease(LeaseId::Permit { .. }) => {
                return Err(Error::invalid(
                    "lease_id",
                    "a semaphore or read/write lock's private lease holds only its own grant; use Grant for a lease that holds several",
                ));
            }
        };
        // Every try of this call carries its id, so none takes a second hold.
        let instance = LeaseId::random_hex();
        let call = if params.request_id.is_empty() { instance.clone() } else { params.request_id.clone() };

        let until = {
            let wait_end = started + params.wait;
            deadline.map_or(wait_end, |d| d.min(wait_end))
        };
        // A caller that may wait is queued by the try that finds the lock
        // held, in the same call, so every later release wakes it.
        let waiter = (until > started).then(LeaseId::random_hex);
        let queue_until = epoch_ms() + until.saturating_duration_since(started).as_millis() as i64;
        let mut queued = false;
        // Only a caller that may wait parks on the lock's local Notify.
        let notify = waiter.as_ref().map(|_| self.hub.waiter(self.keys.lock_key(ns, name).as_str()));
        let mut tries: u64 = 0;
        let result = loop {
            // Enabled before the attempt, so a release between the attempt
            // and the wait still wakes us.
            let mut notified = std::pin::pin!(notify.as_deref().map(Notify::notified));
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }

            // Room for Redlock's rounds within one try (retry_count ≤ 100).
            let seq = tries * 1000;
            tries += 1;
            let t = Try {
                lease: &lease,
                ttl_ms,
                owner: &params.owner,
                waiter: waiter.as_deref(),
                queue: waiter.as_ref().filter(|_| !queued).map(|_| queue_until),
                call: &call,
                instance: &instance,
                seq,
            };
            let attempt = self.store.acquire(ns, name, t, self.settings.replicas).await;
            let (owner, holder_ttl, nodes) = match attempt {
                Err(e) => break Err(e),
                Ok(Attempt::LeaseGone) => break Err(Error::NotFound(format!("lease_id {}", lease.as_str()))),
                Ok(Attempt::NoQuorum { nodes }) => {
                    let detail: Vec<String> = nodes
                        .iter()
                        .map(|n| {
                            format!(
                                "{} {:?}{}",
                                n.node,
                                n.vote,
                                if n.detail.is_empty() { String::new() } else { format!(" ({})", n.detail) }
                            )
                        })
                        .collect();
                    break Err(Error::Unavailable(format!("no majority of Redlock nodes: {}", detail.join(", "))));
                }
                Ok(Attempt::WrongNode { run_id, .. }) => {
                    break Err(Error::Internal(format!("identity check on a single Redis ({run_id})")));
                }
                Ok(Attempt::Acquired { token, count, ttl_ms, lease: holder, validity_ms, attempt }) => {
                    let granted = AcquireOutcome::Acquired {
                        lease: holder,
                        token,
                        hold_count: count,
                        ttl_ms,
                        validity_ms,
                        attempt,
                    };
                    // A grant its caller will not hear of is given back:
                    // the call was cancelled, or the answer would arrive
                    // after the call's deadline (whose margin a slow round
                    // trip to Redis can eat), when the caller has left but
                    // coord may not know it yet.
                    if cancel.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                        self.undo(ns, name, &granted).await;
                        break Err(Error::DeadlineExceeded(started.elapsed()));
                    }
                    break Ok(granted);
                }
                Ok(Attempt::Held { owner, ttl_ms, nodes }) => {
                    queued |= t.queue.is_some();
                    (owner, ttl_ms, nodes)
                }
            };
            let now = Instant::now();
            if now >= until {
                metrics::counter!("coord_lock_not_acquired_total").increment(1);
                break Ok(AcquireOutcome::NotAcquired { holder_owner: owner, holder_ttl_ms: holder_ttl.max(0), nodes });
            }
            // Expiry publishes nothing: also wake when the holder's TTL ends.
            let holder_left = Duration::from_millis(holder_ttl.max(1) as u64);
            let sleep = tokio::time::sleep_until(until.min(now + holder_left));
            let woken = async {
                match notified.as_mut().as_pin_mut() {
                    Some(n) => n.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = woken => {}
                _ = sleep => {}
                _ = cancel.cancelled() => break Err(Error::DeadlineExceeded(started.elapsed())),
                _ = self.shutdown.cancelled() => break Err(Error::ShuttingDown),
            }
        };
        if let Some(id) = waiter.filter(|_| queued) {
            // Detached from the caller: a cancelled call still cleans up.
            let (store, ns, name) = (self.store.clone(), ns.clone(), name.clone());
            tokio::spawn(async move {
                let _ = store.unqueue(&ns, &name, &id).await;
            });
            metrics::histogram!("coord_lock_wait_seconds").record(started.elapsed().as_secs_f64());
        }
        let outcome = match &result {
            Ok(AcquireOutcome::Acquired { .. }) => "acquired",
            Ok(AcquireOutcome::NotAcquired { .. }) => "not_acquired",
            Err(_) => "error",
        };
        metrics::histogram!("coord_lock_acquire_seconds", "outcome" => outcome).record(started.elapsed().as_secs_f64());
        result
    }

    /// Takes back a grant whose caller never heard of it (it cancelled, or
    /// its deadline passed): exactly the hold that call's try took, never a
    /// later grant or another call's hold. Best effort.
    pub async fn undo(&self, ns: &Namespace, name: &Name, granted: &AcquireOutcome) {
        let AcquireOutcome::Acquired { lease, attempt, .. } = granted else { return };
        match self.store.release(ns, name, lease, Release::Try(attempt)).await {
            Ok(ReleaseReply::Released { remaining, token, .. }) => {
                metrics::counter!("coord_lock_grants_undone_total").increment(1);
                if remaining == 0 {
                    self.local_end(ns, name, lease, GrantEnd::Released, token);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, lock = name.as_str(), "could not undo a grant nobody heard of; it ends with its TTL")
            }
        }
    }

    pub async fn release(&self, ns: &Namespace, name: &Name, lease: &LeaseId) -> Result<ReleaseOutcome> {
        Ok(match self.store.release(ns, name, lease.as_str(), Release::Hold).await? {
            ReleaseReply::Released { remaining, token, .. } => {
                if remaining == 0 {
                    // Same-instance waiters and streams need not wait for
                    // the pub/sub echo.
                    self.local_end(ns, name, lease.as_str(), GrantEnd::Released, token);
                    // The token is the grant's Redis TIME in µs (see
                    // acquire.lua), against our clock: enough for a histogram.
                    let held_ms = (epoch_ms() - (token / 1000) as i64).max(0);
                    metrics::histogram!("coord_lock_hold_seconds").record(held_ms as f64 / 1000.0);
                }
                ReleaseOutcome::Released { remaining }
            }
            ReleaseReply::NotHeld => ReleaseOutcome::NotHeld,
            ReleaseReply::HeldByOther => ReleaseOutcome::HeldByOther,
        })
    }

    pub async fn describe(&self, ns: &Namespace, name: &Name) -> Result<LockInfo> {
        self.store.describe(ns, name).await
    }

    pub async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<LockInfo>, Option<String>)> {
        if prefix.len() > MAX_LOCK_NAME_BYTES {
            return Err(Error::invalid("prefix", format!("must be at most {MAX_LOCK_NAME_BYTES} bytes")));
        }
        self.store.list(ns, prefix, cursor, limit).await
    }

    /// Administrative release; returns the removed holder's (lease, owner).
    pub async fn force_release(&self, ns: &Namespace, name: &Name) -> Result<Option<(String, String)>> {
        let ended = self.store.end(ns, name, None, GrantEnd::Forced).await?;
        Ok(ended.map(|e| {
            self.local_end(ns, name, &e.lease, GrantEnd::Forced, e.token);
            if let Ok(LeaseId::Shared(lease)) = LeaseId::parse(&e.lease) {
                let (store, ns, name) = (self.store.clone(), ns.clone(), name.clone());
                tokio::spawn(async move {
                    let _ = store.detach(&ns, &lease, &[name.as_str()]).await;
                });
            }
            (e.lease, e.owner)
        }))
    }

    /// Renews a lease with the locks and grants a stream knows it holds,
    /// and the ones its indexes list.
    async fn renew_lease(
        &self,
        ns: &Namespace,
        lease: &LeaseId,
        locks: &[String],
        permits: &[PermitRef],
    ) -> Result<store::Renewal> {
        if let LeaseId::Permit { kind, name, .. } = lease {
            // Its one grant, found by the lease until the stream knows its id.
            let known = match permits {
                [] => vec![PermitRef { kind: *kind, name: name.as_str().to_owned(), id: 0 }],
                known => known.to_vec(),
            };
            let permits = self.renew_permits(ns, lease, 0, &known, &[]).await?;
            let ttl_ms = permits.iter().find(|p| p.state == LockState::Held).map_or(0, |p| p.ttl_ms);
            return Ok(store::Renewal { ttl_ms, permits, ..store::Renewal::default() });
        }
        let mut renewal = self.store.renew(ns, lease, locks).await?;
        if !permits.is_empty() || !renewal.permit_index.is_empty() {
            renewal.permits = self.renew_permits(ns, lease, renewal.ttl_ms, permits, &renewal.permit_index).await?;
        }
        Ok(renewal)
    }

    /// Tells this instance's waiters and streams at once; other instances
    /// hear it through pub/sub (duplicates are ignored by the streams).
    fn local_end(&self, ns: &Namespace, name: &Name, lease: &str, state: GrantEnd, token: u64) {
        let key = self.keys.lock_key(ns, name);
        self.hub.released(key.as_str());
        self.hub.ended(ns.as_str(), lease, || events::GrantEnded {
            kind: HoldKind::Lock,
            key: key.as_str().to_owned(),
            ns: ns.as_str().to_owned(),
            lease: lease.to_owned(),
            name: name.as_str().to_owned(),
            state,
            token,
        });
    }
}

fn check_owner(owner: &str) -> Result<()> {
    if owner.len() > MAX_OWNER_BYTES {
        return Err(Error::invalid("owner", format!("must be at most {MAX_OWNER_BYTES} bytes, got {}", owner.len())));
    }
    Ok(())
}

/// Validates a lock name (1–512 bytes).
pub fn lock_name(value: &str) -> Result<Name> {
    if value.len() > MAX_LOCK_NAME_BYTES {
        return Err(Error::invalid(
            "name",
            format!("must be at most {MAX_LOCK_NAME_BYTES} bytes, got {}", value.len()),
        ));
    }
    Name::parse("name", value)
}

fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_round_trip_and_reject_garbage() {
        let shared = LeaseId::new_shared();
        assert_eq!(LeaseId::parse(shared.as_str()).unwrap(), shared);
        let name = Name::parse("name", "a.b:{c}").unwrap();
        let private = LeaseId::new_private(&name);
        assert_eq!(LeaseId::parse(private.as_str()).unwrap(), private);
        for bad in ["", "l", "lxyz", "p0123", "q0123456789abcdef0123456789abcdef", &format!("{}x", shared.as_str())] {
            let err = LeaseId::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("lease_id:"), "{bad:?}: {err}");
        }
        assert_ne!(LeaseId::new_shared(), LeaseId::new_shared());
    }

    #[test]
    fn renewal_states_decode_from_the_scripts_words_and_nothing_else() {
        use redis::{FromRedisValue, Value};
        let word = |w: &str| Value::BulkString(w.as_bytes().to_vec());
        for end in [GrantEnd::Released, GrantEnd::Revoked, GrantEnd::Forced] {
            assert_eq!(GrantEnd::parse(end.as_str().as_bytes()), Some(end));
            assert_eq!(LockState::from_redis_value(word(end.as_str())).unwrap(), LockState::Ended(end));
        }
        assert_eq!(LockState::from_redis_value(word("held")).unwrap(), LockState::Held);
        assert_eq!(LockState::from_redis_value(word("gone")).unwrap(), LockState::Gone);
        for bad in [word("expired"), word(""), Value::Int(1), Value::Nil] {
            assert!(LockState::from_redis_value(bad.clone()).is_err(), "{bad:?} is not a state");
        }
        assert_eq!(LockState::Ended(GrantEnd::Released).lost(), None);
        assert_eq!(LockState::Ended(GrantEnd::Forced).lost(), Some(LostReason::ForceReleased));
        assert_eq!(LockState::Gone.lost(), Some(LostReason::Expired));
        // Redlock reports the strongest end any node kept.
        assert!(GrantEnd::Forced > GrantEnd::Revoked && GrantEnd::Revoked > GrantEnd::Released);
    }

    #[test]
    fn malformed_lock_replies_are_errors_not_defaults() {
        use redis::{FromRedisValue, Value};
        let reply = |items: Vec<Value>| Value::Array(items);
        assert!(store::Attempt::from_redis_value(reply(vec![Value::Int(1), Value::Int(5)])).is_err());
        assert!(store::Attempt::from_redis_value(reply(vec![Value::Int(7)])).is_err());
        assert!(store::Attempt::from_redis_value(Value::Int(1)).is_err());
        assert!(LockInfo::from_redis_value(reply(vec![Value::Nil; 3])).is_err());
        let negative = reply(vec![Value::Int(1), Value::Int(-1), Value::Nil, Value::Int(1), Value::Nil]);
        assert!(store::ReleaseReply::from_redis_value(negative).is_err(), "a negative hold count");
        let free = reply(vec![
            Value::Nil,
            Value::Nil,
            Value::Nil,
            Value::Int(0),
            Value::Int(0),
            Value::Int(-2),
            Value::Int(3),
        ]);
        assert_eq!(LockInfo::from_redis_value(free).unwrap(), LockInfo { waiters: 3, ..LockInfo::default() });
    }

    #[test]
    fn lock_names_are_bounded() {
        assert!(lock_name("").unwrap_err().to_string().starts_with("name:"));
        assert!(lock_name(&"x".repeat(512)).is_ok());
        assert!(lock_name(&"x".repeat(513)).unwrap_err().to_string().contains("512"));
    }
}
