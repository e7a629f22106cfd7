//! Counting semaphores and read/write locks, held under the lock core's
//! leases.
//!
//! - A **semaphore** `sem:{name}` is a pool of `size` permits; a grant takes
//!   n of them, all or nothing, and its id is its fencing token (keys and
//!   fairness rule: see sem_acquire.lua).
//! - A **read/write lock** `rwlock:{name}` is a semaphore of [`RW_SIZE`]
//!   permits: a reader takes one, a writer all of them, and a lease holds
//!   at most one grant (no re-entry, no upgrade: refused at once, never a
//!   deadlock). FIFO makes it writer-preferring: readers that arrive after a
//!   waiting writer queue behind it.
//! - Grants are held under leases. A shared lease lists its grants in its
//!   permit index (`lease:{id}:permits`, entries `<tag><permit id> <name>`),
//!   so KeepAlive renews them and Revoke ends them. A private lease
//!   (`q<hex>.<tag>.<name>`, from Acquire with a TTL) holds one grant, which
//!   the scripts find by the lease id.
//! - A waiter is queued by the try that finds too few permits, with a place
//!   that lapses [`QUEUE_HEARTBEAT`] after its last try, so the waiters of a
//!   crashed coord instance leave the head of the queue by themselves. A
//!   release publishes the ids of the waiters that now fit; the hub wakes
//!   them by id ([`super::LockEvents::permit_waiter`]).

use std::{collections::HashMap, time::Duration};

use redis::{FromRedisValue, ParsingError, Value};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    GrantEnd, Holder, LeaseId, LockInfo, LockState, Locks, epoch_ms,
    events::GrantEnded,
    store::{Store, int, list, malformed, text, uint},
};
use crate::{
    error::{Error, Result},
    redis::{Name, Namespace, ResourceKey, scripts},
};

/// The largest semaphore.
pub const MAX_SEM_SIZE: u32 = 1_000_000;
/// A read/write lock's permits: a writer takes them all.
pub const RW_SIZE: u32 = 1 << 20;
/// A waiter's place in the queue lapses this long after its last try.
const QUEUE_HEARTBEAT: Duration = Duration::from_secs(5);
/// A waiter tries again at least this often (keeping its place).
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// The semaphore hash (its size) and fence outlive the last acquire by this
/// much; tokens stay monotonic after it expires (they are ≥ Redis TIME).
const SEM_KEY_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Which counted lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SemKind {
    Semaphore,
    RwLock,
    /// An election: a semaphore of one permit whose grant is the
    /// leadership (see `election`).
    Election,
}

impl SemKind {
    /// The kind segment of its keys.
    pub const fn key_kind(self) -> &'static str {
        match self {
            SemKind::Semaphore => "sem",
            SemKind::RwLock => "rwlock",
            SemKind::Election => "election",
        }
    }

    /// Its letter in lease ids and permit index entries.
    pub const fn tag(self) -> u8 {
        match self {
            SemKind::Semaphore => b's',
            SemKind::RwLock => b'r',
            SemKind::Election => b'e',
        }
    }

    const ALL: [SemKind; 3] = [SemKind::Semaphore, SemKind::RwLock, SemKind::Election];

    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.tag() == tag)
    }

    pub fn from_key_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key_kind() == kind)
    }
}

/// Read/write lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RwMode {
    Shared,
    Exclusive,
}

/// One grant held under a lease: what KeepAlive tracks and renews.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PermitRef {
    pub kind: SemKind,
    pub name: String,
    /// The permit id (its fencing token); 0 = not known yet (the one grant
    /// of a private lease, found by the lease).
    pub id: u64,
}

impl PermitRef {
    /// Its entry in a shared lease's permit index: `<tag><id> <name>`.
    pub fn entry(kind: SemKind, id: &str, name: &Name) -> String {
        let (before, after) = Self::entry_around(kind, name);
        format!("{before}{id}{after}")
    }

    /// The entry's text before and after the permit id, for the scripts
    /// (which learn the id when they grant).
    fn entry_around(kind: SemKind, name: &Name) -> (String, String) {
        ((kind.tag() as char).to_string(), format!(" {}", name.as_str()))
    }

    pub fn parse_entry(entry: &str) -> Option<Self> {
        let kind = SemKind::from_tag(*entry.as_bytes().first()?)?;
        let (id, name) = entry[1..].split_once(' ')?;
        Some(PermitRef { kind, name: name.to_owned(), id: id.parse().ok()? })
    }
}

/// What renewing found for one grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitRenewal {
    pub permit: PermitRef,
    pub state: LockState,
    pub ttl_ms: i64,
}

/// An Acquire of permits.
#[derive(Debug, Clone)]
pub struct SemAcquire {
    pub name: Name,
    /// Permits wanted (a semaphore); ignored for read/write locks.
    pub permits: u32,
    /// Size of a semaphore created by this call.
    pub size: u32,
    pub mode: RwMode,
    pub holder: Holder,
    pub wait: Duration,
    pub owner: String,
    /// An election candidate's value (elections only).
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SemOutcome {
    Acquired { permit: u64, lease: String, ttl_ms: i64, size: u32, available: i64 },
    NotAcquired { size: u32, available: i64, ahead: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemReleaseOutcome {
    Released { available: i64 },
    NotHeld,
    HeldByOther,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermitHolder {
    pub permit: u64,
    pub permits: u32,
    pub lease: String,
    pub owner: String,
    pub ttl_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SemInfo {
    pub name: String,
    /// 0: no such semaphore.
    pub size: u32,
    pub used: u32,
    pub waiters: u32,
    /// Soonest expiry first.
    pub holders: Vec<PermitHolder>,
}

// === replies ===

/// One sem_acquire.lua try.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SemAttempt {
    Granted { permit: u64, ttl_ms: i64, size: u32, free: i64 },
    Queued { size: u32, free: i64, ahead: u32, retry_ms: u64 },
    TooMany { size: u32 },
    AlreadyHolds { permit: u64 },
    LeaseGone,
}

impl FromRedisValue for SemAttempt {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = list(v, "sem_acquire")?;
        Ok(match (int(items.first())?, items.as_slice()) {
            (1, [_, id, ttl, size, free]) => SemAttempt::Granted {
                permit: uint(id)?,
                ttl_ms: int(Some(ttl))?,
                size: uint(size)?,
                free: int(Some(free))?,
            },
            (0, [_, size, free, ahead, retry]) => SemAttempt::Queued {
                size: uint(size)?,
                free: int(Some(free))?,
                ahead: uint(ahead)?,
                retry_ms: uint(retry)?,
            },
            (-1, [_, size]) => SemAttempt::TooMany { size: uint(size)? },
            (-2, [_, id]) => SemAttempt::AlreadyHolds { permit: uint(id)? },
            (-3, [_]) => SemAttempt::LeaseGone,
            _ => return Err(malformed("sem_acquire", &items)),
        })
    }
}

/// sem_release.lua's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SemEnded {
    Ended { free: i64, permit: u64, lease: String, owner: String, permits: u32 },
    NotHeld,
    HeldByOther,
}

impl FromRedisValue for SemEnded {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = list(v, "sem_release")?;
        Ok(match (int(items.first())?, items.as_slice()) {
            (1, [_, free, _woken, id, lease, owner, n]) => SemEnded::Ended {
                free: int(Some(free))?,
                permit: uint(id)?,
                lease: text(lease)?,
                owner: text(owner)?,
                permits: uint(n)?,
            },
            (0, [_]) => SemEnded::NotHeld,
            (2, [_]) => SemEnded::HeldByOther,
            _ => return Err(malformed("sem_release", &items)),
        })
    }
}

/// One permit of sem_renew.lua's reply, `{state, id, TTL}`.
struct RenewedPermit(LockState, u64, i64);

impl FromRedisValue for RenewedPermit {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match list(v, "sem_renew")?.as_slice() {
            [state, id, ttl] => Ok(RenewedPermit(LockState::from_redis_value_ref(state)?, uint(id)?, int(Some(ttl))?)),
            items => Err(malformed("sem_renew", items)),
        }
    }
}

impl FromRedisValue for SemInfo {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = list(v, "sem_describe")?;
        let [size, used, waiters, holders] = items.as_slice() else {
            return Err(malformed("sem_describe", &items));
        };
        let holders = Vec::<Value>::from_redis_value_ref(holders)?
            .into_iter()
            .map(|h| match list(h, "sem_describe")?.as_slice() {
                [id, n, lease, owner, ttl] => Ok(PermitHolder {
                    permit: uint(id)?,
                    permits: uint(n)?,
                    lease: text(lease)?,
                    owner: text(owner)?,
                    ttl_ms: int(Some(ttl))?.max(0),
                }),
                items => Err(malformed("sem_describe", items)),
            })
            .collect::<Result<_, ParsingError>>()?;
        Ok(SemInfo { name: String::new(), size: uint(size)?, used: uint(used)?, waiters: uint(waiters)?, holders })
    }
}

// === keys and script calls ===

/// A semaphore's keys, in the scripts' KEYS order.
pub(super) struct SemKeys {
    pub(super) base: ResourceKey,
    rest: [String; 5],
}

impl SemKeys {
    /// base, permits, expiry, queue, wants (and the fence when `fence`).
    pub(super) fn push(&self, inv: &mut redis::ScriptInvocation<'_>, upto: usize) {
        inv.key(self.base.as_str());
        for k in self.rest.iter().take(upto - 1) {
            inv.key(k);
        }
    }
}

/// One try's arguments.
struct SemTry<'a> {
    n: u32,
    size: u32,
    lease: &'a LeaseId,
    ttl_ms: u64,
    owner: &'a str,
    waiter: Option<&'a str>,
    queue_until: Option<i64>,
    once: bool,
    /// Elections: the candidate's value.
    value: Option<&'a [u8]>,
}

impl Store {
    pub(super) fn sem_keys(&self, ns: &Namespace, kind: SemKind, name: &Name) -> SemKeys {
        let base = self.keys.resource(ns, kind.key_kind(), name);
        let rest = ["permits", "expiry", "queue", "wants", "fence"].map(|s| base.sub(s));
        SemKeys { base, rest }
    }

    /// A shared lease's permit index (same hash tag as the lease).
    fn permit_index(&self, ns: &Namespace, lease: &str) -> Result<String> {
        Ok(self.lease_key(ns, lease)?.sub("permits"))
    }

    async fn sem_try(
        &self,
        ns: &Namespace,
        kind: SemKind,
        name: &Name,
        t: SemTry<'_>,
        replicas: Option<(u32, Duration)>,
    ) -> Result<SemAttempt> {
        let keys = self.sem_keys(ns, kind, name);
        let entry = PermitRef::entry_around(kind, name);
        // A shared lease's keys go into the call when they are on its node;
        // else the lease is read first and the grant recorded after.
        let (lease_keys, apart) = match t.lease {
            LeaseId::Shared(id) => {
                let key = self.lease_key(ns, id)?;
                if self.same_node(key.as_str(), keys.base.as_str()) {
                    (Some((key.as_str().to_owned(), key.sub("permits"))), None)
                } else {
                    (None, Some(id.as_str()))
                }
            }
            _ => (None, None),
        };
        let (mut ttl_ms, mut owner) = (t.ttl_ms, t.owner.to_owned());
        if let Some(id) = apart {
            let Some((ttl, lease_owner)) = super::LockStore::lease_info(self, ns, id).await? else {
                return Ok(SemAttempt::LeaseGone);
            };
            ttl_ms = ttl.max(1) as u64;
            if owner.is_empty() {
                owner = lease_owner;
            }
        }
        let queue = t.queue_until.map(|d| d.to_string()).unwrap_or_default();
        let prepare = |inv: &mut redis::ScriptInvocation<'_>| {
            keys.push(inv, 6);
            if let Some((lease, index)) = &lease_keys {
                inv.key(lease).key(index);
            }
            inv.arg(t.n)
                .arg(t.size)
                .arg(t.lease.as_str())
                .arg(ttl_ms)
                .arg(&owner)
                .arg(t.waiter.unwrap_or(""))
                .arg(&queue)
                .arg(SEM_KEY_TTL_MS)
                .arg(if t.once { "1" } else { "0" })
                .arg(&entry.0)
                .arg(&entry.1);
            if let Some(value) = t.value {
                inv.arg(value).arg(&*self.channel.for_key(keys.base.as_str())).arg(keys.base.as_str());
            }
        };
        let attempt = match replicas {
            None => self.redis.invoke::<SemAttempt>(&scripts::SEM_ACQUIRE, prepare).await?,
            Some((want, timeout)) => {
                let (attempt, acked) =
                    self.redis.invoke_and_wait(&scripts::SEM_ACQUIRE, prepare, want, timeout).await?;
                if let SemAttempt::Granted { permit, .. } = &attempt
                    && acked < i64::from(want)
                {
                    // Not durable enough: a failover could grant it again.
                    let _ = self.sem_end(ns, kind, name, Some(*permit), t.lease.as_str(), GrantEnd::Released).await;
                    return Err(Error::Unavailable(format!(
                        "only {acked} of {want} replicas acknowledged the grant within {timeout:?}"
                    )));
                }
                attempt
            }
        };
        if let (Some(id), SemAttempt::Granted { permit, .. }) = (apart, &attempt) {
            let index = self.permit_index(ns, id)?;
            let lease = self.lease_key(ns, id)?;
            let entry = PermitRef::entry(kind, &permit.to_string(), name);
            let recorded: Result<i64> = self
                .redis
                .invoke(&scripts::LEASE_ATTACH, |inv| {
                    inv.key(lease.as_str()).key(&index).arg(&entry);
                })
                .await;
            match recorded {
                Ok(ttl) if ttl >= 0 => {}
                // Gone meanwhile: a grant must not outlive its lease.
                Ok(_) => {
                    let _ = self.sem_end(ns, kind, name, Some(*permit), id, GrantEnd::Revoked).await;
                    return Ok(SemAttempt::LeaseGone);
                }
                Err(e) => {
                    let _ = self.sem_end(ns, kind, name, Some(*permit), id, GrantEnd::Released).await;
                    return Err(e);
                }
            }
        }
        Ok(attempt)
    }

    /// Ends a grant: permit `id` (None: the one `lease` holds here), held by
    /// `lease` ('' = whichever, an admin's force).
    pub(super) async fn sem_end(
        &self,
        ns: &Namespace,
        kind: SemKind,
        name: &Name,
        id: Option<u64>,
        lease: &str,
        how: GrantEnd,
    ) -> Result<SemEnded> {
        let keys = self.sem_keys(ns, kind, name);
        let index = match LeaseId::parse(lease) {
            Ok(LeaseId::Shared(l)) => Some(self.permit_index(ns, &l)?),
            _ => None,
        };
        let (folded, apart) = match index {
            Some(index) if self.same_node(&index, keys.base.as_str()) => (Some(index), None),
            other => (None, other),
        };
        let entry = PermitRef::entry_around(kind, name);
        let ended: SemEnded = self
            .redis
            .invoke(&scripts::SEM_RELEASE, |inv| {
                keys.push(inv, 5);
                if let Some(index) = &folded {
                    inv.key(index);
                }
                inv.arg(id.map(|i| i.to_string()).unwrap_or_default())
                    .arg(lease)
                    .arg(&*self.channel.for_key(keys.base.as_str()))
                    .arg(keys.base.as_str())
                    .arg(how.as_str())
                    .arg(&entry.0)
                    .arg(&entry.1)
                    .arg(if kind == SemKind::Election { "1" } else { "0" });
            })
            .await?;
        if let (Some(index), SemEnded::Ended { permit, .. }) = (apart, &ended) {
            // Best effort: a stale entry renews as "gone".
            let entry = PermitRef::entry(kind, &permit.to_string(), name);
            let _ = self.redis.query::<i64>(redis::cmd("SREM").arg(&index).arg(entry)).await;
        }
        Ok(ended)
    }

    async fn sem_leave(&self, ns: &Namespace, kind: SemKind, name: &Name, waiter: &str) -> Result<()> {
        let keys = self.sem_keys(ns, kind, name);
        let _: i64 = self
            .redis
            .invoke(&scripts::SEM_LEAVE, |inv| {
                keys.push(inv, 5);
                inv.arg(waiter).arg(&*self.channel.for_key(keys.base.as_str())).arg(keys.base.as_str());
            })
            .await?;
        Ok(())
    }

    /// Renews (`ttl`: ms, "0" = each grant's own, "-1" = report only) the
    /// grants `ids` (0 = the lease's one grant) of one semaphore.
    async fn sem_renew(
        &self,
        ns: &Namespace,
        kind: SemKind,
        name: &str,
        lease: &str,
        ttl: &str,
        ids: &[u64],
    ) -> Result<Vec<PermitRenewal>> {
        let Ok(parsed) = Name::parse("name", name) else { return Ok(Vec::new()) };
        let keys = self.sem_keys(ns, kind, &parsed);
        let states: Vec<RenewedPermit> = self
            .redis
            .invoke(&scripts::SEM_RENEW, |inv| {
                keys.push(inv, 3);
                inv.arg(lease).arg(ttl);
                for id in ids {
                    inv.arg(if *id == 0 { String::new() } else { id.to_string() });
                }
            })
            .await?;
        if states.len() != ids.len() {
            return Err(Error::Internal(format!("sem_renew.lua: {} states for {} permits", states.len(), ids.len())));
        }
        Ok(states
            .into_iter()
            .zip(ids)
            .map(|(RenewedPermit(state, id, ttl_ms), asked)| PermitRenewal {
                permit: PermitRef { kind, name: name.to_owned(), id: if id != 0 { id } else { *asked } },
                state,
                ttl_ms,
            })
            .collect())
    }

    async fn sem_describe(&self, ns: &Namespace, kind: SemKind, name: &Name, limit: u32) -> Result<SemInfo> {
        let keys = self.sem_keys(ns, kind, name);
        let info: SemInfo = self
            .redis
            .invoke(&scripts::SEM_DESCRIBE, |inv| {
                keys.push(inv, 5);
                inv.arg(limit);
            })
            .await?;
        Ok(SemInfo { name: name.as_str().to_owned(), ..info })
    }

    async fn sem_resize(&self, ns: &Namespace, name: &Name, size: u32) -> Result<(u32, u32, u32)> {
        let keys = self.sem_keys(ns, SemKind::Semaphore, name);
        self.redis
            .invoke(&scripts::SEM_RESIZE, |inv| {
                keys.push(inv, 5);
                inv.arg(size)
                    .arg(&*self.channel.for_key(keys.base.as_str()))
                    .arg(keys.base.as_str())
                    .arg(SEM_KEY_TTL_MS);
            })
            .await
    }
}

/// `coord_semaphore_waiters{kind}`: calls of this instance queued now.
struct WaiterGauge(SemKind);

impl WaiterGauge {
    fn new(kind: SemKind) -> Self {
        metrics::gauge!("coord_semaphore_waiters", "kind" => kind.key_kind()).increment(1.0);
        WaiterGauge(kind)
    }
}

impl Drop for WaiterGauge {
    fn drop(&mut self) {
        metrics::gauge!("coord_semaphore_waiters", "kind" => self.0.key_kind()).decrement(1.0);
    }
}

// === operations ===

impl Locks {
    /// Semaphores and read/write locks live on one Redis (a node or a
    /// cluster): permits counted on independent nodes cannot be reconciled
    /// by majority without over-admitting, so Redlock mode refuses them.
    pub(super) fn counted_locks_available(&self, kind: SemKind) -> Result<()> {
        if self.redlock {
            let what = match kind {
                SemKind::Semaphore => "semaphores",
                SemKind::RwLock => "read/write locks",
                SemKind::Election => "elections",
            };
            return Err(Error::FailedPrecondition(format!(
                "{what} are not available in Redlock mode: permits counted on independent nodes cannot be \
                 reconciled by majority without over-admitting; use a single Redis or a cluster"
            )));
        }
        Ok(())
    }

    /// Takes permits (or a read/write hold), waiting up to `p.wait` and
    /// never past `deadline`; a grant its caller will not hear of (cancelled,
    /// or past the deadline) is given back.
    pub async fn sem_acquire(
        &self,
        ns: &Namespace,
        kind: SemKind,
        p: SemAcquire,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
    ) -> Result<SemOutcome> {
        let started = Instant::now();
        self.counted_locks_available(kind)?;
        super::check_owner(&p.owner)?;
        if kind == SemKind::Election {
            super::election::check_value(&p.value)?;
        }
        if p.wait > self.settings.max_wait {
            return Err(Error::invalid(
                "wait_ms",
                format!("must be at most {} ms, got {}", self.settings.max_wait.as_millis(), p.wait.as_millis()),
            ));
        }
        let (n, size, once) = match (kind, p.mode) {
            (SemKind::Semaphore, _) => {
                if p.permits == 0 || p.permits > MAX_SEM_SIZE {
                    return Err(Error::invalid("permits", format!("must be 1…{MAX_SEM_SIZE}, got {}", p.permits)));
                }
                if p.size > MAX_SEM_SIZE {
                    return Err(Error::invalid("size", format!("must be 0…{MAX_SEM_SIZE}, got {}", p.size)));
                }
                (p.permits, p.size.max(1), false)
            }
            (SemKind::RwLock, RwMode::Shared) => (1, RW_SIZE, true),
            (SemKind::RwLock, RwMode::Exclusive) => (RW_SIZE, RW_SIZE, true),
            // One leader; a lease leads once (campaigning again while
            // leading is refused, not re-entered).
            (SemKind::Election, _) => (1, 1, true),
        };
        let name = &p.name;
        let (lease, ttl_ms) = match &p.holder {
            Holder::Ttl(ttl) => (LeaseId::new_permit(kind, name), self.clamp_ttl("ttl_ms", *ttl)?),
            Holder::Lease(lease @ LeaseId::Shared(_)) => (lease.clone(), 0),
            Holder::Lease(_) => {
                return Err(Error::invalid(
                    "lease_id",
                    "a private lease (from an Acquire with ttl_ms) holds only its own grant; use Grant for a lease that holds several",
                ));
            }
        };
        let until = {
            let wait_end = started + p.wait;
            deadline.map_or(wait_end, |d| d.min(wait_end))
        };
        let waiter = (until > started).then(LeaseId::random_hex);
        let registered = waiter.as_deref().map(|id| self.hub.permit_waiter(id));
        let notify = registered.as_ref().map(|w| w.notify.clone());
        let mut queued = false;
        let mut waiting = None;
        let result = loop {
            let mut notified = std::pin::pin!(notify.as_deref().map(Notify::notified));
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }
            let now = Instant::now();
            // A place in the queue lapses unless renewed by the next try.
            let queue_until = waiter.as_ref().map(|_| {
                let left = until.saturating_duration_since(now).min(QUEUE_HEARTBEAT);
                epoch_ms() + left.as_millis() as i64
            });
            let t = SemTry {
                n,
                size,
                lease: &lease,
                ttl_ms,
                owner: &p.owner,
                waiter: waiter.as_deref(),
                queue_until,
                once,
                value: (kind == SemKind::Election).then_some(p.value.as_slice()),
            };
            let retry_ms = match self.keys.sem_try(ns, kind, name, t, self.settings.replicas).await {
                Err(e) => break Err(e),
                Ok(SemAttempt::LeaseGone) => break Err(Error::NotFound(format!("lease_id {}", lease.as_str()))),
                Ok(SemAttempt::TooMany { size }) => {
                    break Err(Error::OutOfRange {
                        field: "permits".into(),
                        reason: format!("must be at most the semaphore's size {size}, got {n}"),
                    });
                }
                Ok(SemAttempt::AlreadyHolds { permit }) if kind == SemKind::Election => {
                    break Err(Error::FailedPrecondition(format!(
                        "lease {} already leads election {:?} (term {permit})",
                        lease.as_str(),
                        name.as_str()
                    )));
                }
                Ok(SemAttempt::AlreadyHolds { permit }) => {
                    break Err(Error::FailedPrecondition(format!(
                        "lease {} already holds read/write lock {:?} (fencing token {permit}); read/write locks are \
                         neither re-entrant nor upgradable: release it first",
                        lease.as_str(),
                        name.as_str()
                    )));
                }
                Ok(SemAttempt::Granted { permit, ttl_ms, size, free }) => {
                    let granted = SemOutcome::Acquired {
                        permit,
                        lease: lease.as_str().to_owned(),
                        ttl_ms,
                        size,
                        available: free,
                    };
                    if cancel.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                        let _ =
                            self.keys.sem_end(ns, kind, name, Some(permit), lease.as_str(), GrantEnd::Released).await;
                        metrics::counter!("coord_semaphore_grants_undone_total", "kind" => kind.key_kind())
                            .increment(1);
                        break Err(Error::DeadlineExceeded(started.elapsed()));
                    }
                    break Ok(granted);
                }
                Ok(SemAttempt::Queued { size, free, ahead, retry_ms }) => {
                    queued |= queue_until.is_some();
                    if queued && waiting.is_none() {
                        waiting = Some(WaiterGauge::new(kind));
                    }
                    if Instant::now() >= until {
                        break Ok(SemOutcome::NotAcquired { size, available: free, ahead });
                    }
                    retry_ms
                }
            };
            // Woken by id when enough permits are free; also try again when
            // a grant may have expired (expiry publishes nothing) and often
            // enough to keep the place in the queue.
            let now = Instant::now();
            let mut next = until.min(now + RETRY_EVERY);
            if retry_ms > 0 {
                next = next.min(now + Duration::from_millis(retry_ms));
            }
            tokio::select! {
                _ = async {
                    match notified.as_mut().as_pin_mut() {
                        Some(n) => n.await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tokio::time::sleep_until(next) => {}
                _ = cancel.cancelled() => break Err(Error::DeadlineExceeded(started.elapsed())),
                _ = self.shutdown.cancelled() => break Err(Error::ShuttingDown),
            }
        };
        if let Some(id) = waiter.filter(|_| queued) {
            // Granted calls left the queue in the same script; the rest
            // leave now, detached so a cancelled call still cleans up.
            if !matches!(result, Ok(SemOutcome::Acquired { .. })) {
                let (keys, ns, name) = (self.keys.clone(), ns.clone(), name.clone());
                tokio::spawn(async move {
                    let _ = keys.sem_leave(&ns, kind, &name, &id).await;
                });
            }
            metrics::histogram!("coord_semaphore_wait_seconds", "kind" => kind.key_kind())
                .record(started.elapsed().as_secs_f64());
        }
        let outcome = match &result {
            Ok(SemOutcome::Acquired { .. }) => "acquired",
            Ok(SemOutcome::NotAcquired { .. }) => "not_acquired",
            Err(_) => "error",
        };
        metrics::counter!("coord_semaphore_acquires_total", "kind" => kind.key_kind(), "outcome" => outcome)
            .increment(1);
        result
    }

    /// Gives back permit `id` (None: the one grant `lease` holds here).
    pub async fn sem_release(
        &self,
        ns: &Namespace,
        kind: SemKind,
        name: &Name,
        id: Option<u64>,
        lease: &LeaseId,
    ) -> Result<SemReleaseOutcome> {
        self.counted_locks_available(kind)?;
        Ok(match self.keys.sem_end(ns, kind, name, id, lease.as_str(), GrantEnd::Released).await? {
            SemEnded::Ended { free, permit, .. } => {
                self.local_permit_end(ns, kind, name, lease.as_str(), GrantEnd::Released, permit);
                SemReleaseOutcome::Released { available: free }
            }
            SemEnded::NotHeld => SemReleaseOutcome::NotHeld,
            SemEnded::HeldByOther => SemReleaseOutcome::HeldByOther,
        })
    }

    /// Administrative release of one grant; its (lease, owner, permits).
    pub async fn sem_force_release(
        &self,
        ns: &Namespace,
        kind: SemKind,
        name: &Name,
        id: Option<u64>,
    ) -> Result<Option<(String, String, u32)>> {
        self.counted_locks_available(kind)?;
        Ok(match self.keys.sem_end(ns, kind, name, id, "", GrantEnd::Forced).await? {
            SemEnded::Ended { permit, lease, owner, permits, .. } => {
                self.local_permit_end(ns, kind, name, &lease, GrantEnd::Forced, permit);
                Some((lease, owner, permits))
            }
            _ => None,
        })
    }

    pub async fn sem_describe(&self, ns: &Namespace, kind: SemKind, name: &Name, limit: u32) -> Result<SemInfo> {
        self.counted_locks_available(kind)?;
        self.keys.sem_describe(ns, kind, name, limit).await
    }

    /// A read/write lock as a [`LockInfo`]: held in `mode`, by `holders`.
    pub async fn rw_describe(
        &self,
        ns: &Namespace,
        name: &Name,
    ) -> Result<(LockInfo, Option<RwMode>, Vec<PermitHolder>)> {
        let info = self.sem_describe(ns, SemKind::RwLock, name, 1000).await?;
        let mode = info.holders.first().map(|h| if h.permits >= RW_SIZE { RwMode::Exclusive } else { RwMode::Shared });
        let first = info.holders.first().cloned().unwrap_or_default();
        let lock = LockInfo {
            name: info.name,
            held: !info.holders.is_empty(),
            lease: first.lease,
            owner: first.owner,
            token: first.permit,
            ttl_ms: first.ttl_ms,
            hold_count: info.holders.len() as u32,
            waiters: info.waiters,
        };
        Ok((lock, mode, info.holders))
    }

    /// Sets a semaphore's size: (previous size, used, waiters woken).
    pub async fn sem_resize(&self, ns: &Namespace, name: &Name, size: u32) -> Result<(u32, u32, u32)> {
        self.counted_locks_available(SemKind::Semaphore)?;
        if size == 0 || size > MAX_SEM_SIZE {
            return Err(Error::invalid("size", format!("must be 1…{MAX_SEM_SIZE}, got {size}")));
        }
        self.keys.sem_resize(ns, name, size).await
    }

    /// Renews the grants a lease holds: `known` (tracked by the stream) and
    /// those its permit index lists. `lease_ttl`: the lease's TTL after its
    /// renewal (≤ 0: gone, report only); private leases renew to their own.
    pub(super) async fn renew_permits(
        &self,
        ns: &Namespace,
        lease: &LeaseId,
        lease_ttl: i64,
        known: &[PermitRef],
        index: &[PermitRef],
    ) -> Result<Vec<PermitRenewal>> {
        if self.redlock {
            return Ok(Vec::new());
        }
        let mut by_sem: HashMap<(SemKind, &str), Vec<u64>> = HashMap::new();
        for p in known.iter().chain(index) {
            let ids = by_sem.entry((p.kind, p.name.as_str())).or_default();
            if !ids.contains(&p.id) {
                ids.push(p.id);
            }
        }
        let ttl = match lease {
            LeaseId::Permit { .. } => "0".to_owned(),
            _ if lease_ttl > 0 => lease_ttl.to_string(),
            _ => "-1".to_owned(),
        };
        let calls =
            by_sem.iter().map(|((kind, name), ids)| self.keys.sem_renew(ns, *kind, name, lease.as_str(), &ttl, ids));
        let mut renewed = Vec::new();
        for result in futures_util::future::join_all(calls).await {
            renewed.extend(result?);
        }
        Ok(renewed)
    }

    /// Ends every grant a revoked lease held (`entries`: its permit index,
    /// or for a private lease its one grant).
    pub(super) async fn revoke_permits(
        &self,
        ns: &Namespace,
        lease: &LeaseId,
        entries: &[String],
    ) -> Result<Vec<String>> {
        let grants: Vec<(SemKind, String, Option<u64>)> = match lease {
            LeaseId::Permit { kind, name, .. } => vec![(*kind, name.as_str().to_owned(), None)],
            _ => {
                entries.iter().filter_map(|e| PermitRef::parse_entry(e)).map(|p| (p.kind, p.name, Some(p.id))).collect()
            }
        };
        let mut ended = Vec::new();
        for (kind, name, id) in grants {
            let Ok(parsed) = Name::parse("name", &name) else { continue };
            if let SemEnded::Ended { permit, .. } =
                self.keys.sem_end(ns, kind, &parsed, id, lease.as_str(), GrantEnd::Revoked).await?
            {
                self.local_permit_end(ns, kind, &parsed, lease.as_str(), GrantEnd::Revoked, permit);
                ended.push(name);
            }
        }
        Ok(ended)
    }

    /// Tells this instance's streams of a grant's end at once (others hear
    /// forced and revoked ends through pub/sub, and releases from renewal).
    pub(super) fn local_permit_end(
        &self,
        ns: &Namespace,
        kind: SemKind,
        name: &Name,
        lease: &str,
        state: GrantEnd,
        permit: u64,
    ) {
        let key = self.keys.keys.resource(ns, kind.key_kind(), name);
        self.hub.ended(ns.as_str(), lease, || GrantEnded {
            kind: kind.into(),
            key: key.as_str().to_owned(),
            ns: ns.as_str().to_owned(),
            lease: lease.to_owned(),
            name: name.as_str().to_owned(),
            state,
            token: permit,
        });
    }
}
