//! LockService's Redis store: one method per script call. Keys of a lock
//! share its name's hash tag; keys of a lease share the lease id's.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use redis::cluster_routing::Slot;

use redis::{FromRedisValue, ParsingError, Value};

use super::{GrantEnd, LeaseId, LockInfo, LockState, NodeResult, PermitRef, semaphore::PermitRenewal};
use crate::{
    error::{Error, Result},
    redis::{EventChannel, KeyBuilder, Name, Namespace, Redis, ResourceKey, Topology, scripts},
};

/// Fence counters outlive grants by this much; tokens stay monotonic after
/// it expires because they never fall below Redis TIME (see acquire.lua).
const FENCE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// The arguments of one acquire attempt.
#[derive(Debug, Clone, Copy)]
pub struct Try<'a> {
    pub lease: &'a LeaseId,
    /// TTL for the lock under a private lease; 0 = re-enter only. A shared
    /// lease gives the lock its own remaining TTL (this is ignored).
    pub ttl_ms: u64,
    pub owner: &'a str,
    /// Waiter id: deregistered on success; queued until `queue` (ms since
    /// the epoch) when the lock is held by another.
    pub waiter: Option<&'a str>,
    pub queue: Option<i64>,
    /// The Acquire call (the client's request id, else `instance`): its
    /// tries never take a second hold.
    pub call: &'a str,
    /// This execution of the call (random hex), and the try's place among
    /// its tries (increasing): together the try id, by which an undo
    /// removes exactly what this try left.
    pub instance: &'a str,
    pub seq: u64,
}

impl Try<'_> {
    pub fn attempt(&self) -> String {
        format!("{}.{}", self.instance, self.seq)
    }
}
/// One Acquire attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// `lease` holds it: the caller's, or for a replayed request id the
    /// lease of the original grant. `validity_ms` is 0 outside Redlock mode.
    /// `attempt`: the try that holds it, for an exact undo.
    Acquired { token: u64, count: u32, ttl_ms: i64, lease: String, validity_ms: i64, attempt: String },
    /// `nodes`: Redlock mode only.
    Held { owner: String, ttl_ms: i64, nodes: Vec<NodeResult> },
    /// A private lease tried to re-enter a lock it no longer holds.
    LeaseGone,
    /// Redlock mode: no majority could be reached.
    NoQuorum { nodes: Vec<NodeResult> },
    /// Redlock mode: the node is not the one coord confirmed (it restarted);
    /// nothing was written.
    WrongNode { run_id: String, uptime_s: u64 },
}

/// acquire.lua's reply. `attempt` is the caller's (not in the reply).
impl FromRedisValue for Attempt {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = list(v, "acquire")?;
        Ok(match (int(items.first())?, items.as_slice()) {
            (1, [_, token, count, ttl, lease]) => Attempt::Acquired {
                token: uint(token)?,
                count: uint(count)?,
                ttl_ms: int(Some(ttl))?,
                lease: text(lease)?,
                validity_ms: 0,
                attempt: String::new(),
            },
            (0, [_, owner, ttl]) => Attempt::Held { owner: text(owner)?, ttl_ms: int(Some(ttl))?, nodes: Vec::new() },
            (-1, [_]) => Attempt::LeaseGone,
            (-2, [_, run_id, uptime]) => Attempt::WrongNode { run_id: text(run_id)?, uptime_s: uint(uptime)? },
            _ => return Err(malformed("acquire", &items)),
        })
    }
}

/// What a release removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release<'a> {
    /// One hold, by the lease that holds the lock.
    Hold,
    /// Exactly what this try left (its hold, or the hold that created the
    /// grant), and nothing if a later try's grant holds the lock.
    Try(&'a str),
    /// The grant `id`, only if `latest` is still its latest try: a release
    /// that ended it on other nodes, repaired where it did not arrive.
    Grant { id: &'a str, latest: &'a str },
}

/// Release outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseReply {
    /// `grant` and `latest`: the grant's id and its latest try before this
    /// release, which a repair of it on another node must match.
    Released {
        remaining: u32,
        grant: String,
        latest: String,
        token: u64,
    },
    NotHeld,
    HeldByOther,
}

/// release.lua's reply.
impl FromRedisValue for ReleaseReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = list(v, "release")?;
        Ok(match (int(items.first())?, items.as_slice()) {
            (1, [_, remaining, grant, token, latest]) => ReleaseReply::Released {
                remaining: uint(remaining)?,
                grant: text(grant)?,
                latest: text(latest)?,
                token: uint(token)?,
            },
            (0, [_]) => ReleaseReply::NotHeld,
            (2, [_]) => ReleaseReply::HeldByOther,
            _ => return Err(malformed("release", &items)),
        })
    }
}

/// A grant ended by someone other than its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub lease: String,
    pub owner: String,
    pub token: u64,
}

/// lock_end.lua's reply when it ended a grant (nil, read as None, when not).
impl FromRedisValue for Ended {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match list(v, "lock_end")?.as_slice() {
            [lease, owner, token] => Ok(Ended { lease: text(lease)?, owner: text(owner)?, token: uint(token)? }),
            items => Err(malformed("lock_end", items)),
        }
    }
}

/// The result of renewing one lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Remaining lease TTL; 0 = the lease is gone.
    pub ttl_ms: i64,
    /// Lock names the lease's index lists (shared leases).
    pub index: Vec<String>,
    /// One entry per lock name given.
    pub locks: Vec<LockRenewal>,
    /// Grants the lease's permit index lists (shared leases).
    pub permit_index: Vec<PermitRef>,
    /// Grants renewed with the lease (filled by `Locks::renew_lease`).
    pub permits: Vec<PermitRenewal>,
}

/// What renewing a lease found for one of its locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRenewal {
    pub name: String,
    pub state: LockState,
    /// The grant's fencing token (0 when the lock is gone).
    pub token: u64,
    /// The lock's TTL after renewal.
    pub ttl_ms: i64,
}

/// One lock of renew.lua's reply, `{state, token, TTL}`; the name is the
/// caller's (its keys were given in order).
impl FromRedisValue for LockRenewal {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match list(v, "renew")?.as_slice() {
            [state, token, ttl] => Ok(LockRenewal {
                name: String::new(),
                state: LockState::from_redis_value_ref(state)?,
                token: uint(token)?,
                ttl_ms: int(Some(ttl))?,
            }),
            items => Err(malformed("renew", items)),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pub(super) redis: Redis,
    pub(super) keys: KeyBuilder,
    /// Pub/sub channel(s) for release and lock-end events.
    pub channel: EventChannel,
}

/// What the lock domain needs from where locks live: one Redis, a node or a
/// cluster ([`Store`]), or a majority of independent nodes
/// ([`super::Redlock`]). Each operation is one atomic script per node.
#[async_trait]
pub trait LockStore: Send + Sync {
    /// Creates a shared lease of `ttl_ms` with an owner label.
    async fn grant(&self, ns: &Namespace, ttl_ms: u64, owner: &str) -> Result<LeaseId>;
    /// A shared lease's remaining TTL and owner; None when it is gone.
    async fn lease_info(&self, ns: &Namespace, lease: &str) -> Result<Option<(i64, String)>>;
    /// One try at lock `name` (`replicas`: acknowledgements to wait for).
    /// Under a shared lease the lock gets the lease's remaining TTL and is
    /// recorded in the lease's index ([`Attempt::LeaseGone`] when the lease
    /// is gone); held by another, the try's waiter is queued.
    async fn acquire(
        &self,
        ns: &Namespace,
        name: &Name,
        t: Try<'_>,
        replicas: Option<(u32, Duration)>,
    ) -> Result<Attempt>;
    /// Forgets locks of a shared lease (they ended without its holder).
    async fn detach(&self, ns: &Namespace, lease: &str, names: &[&str]) -> Result<()>;
    /// Releases a hold, undoes a try or repairs a grant ([`Release`]); a
    /// grant that ends leaves its shared lease's index.
    async fn release(&self, ns: &Namespace, name: &Name, lease: &str, what: Release<'_>) -> Result<ReleaseReply>;
    /// Ends a grant whatever its holds (force-release, revocation).
    async fn end(&self, ns: &Namespace, name: &Name, lease: Option<&str>, how: GrantEnd) -> Result<Option<Ended>>;
    /// Ends a shared lease: the names of the locks it held, and its permit
    /// index entries.
    async fn revoke(&self, ns: &Namespace, lease: &str) -> Result<(Vec<String>, Vec<String>)>;
    /// Renews a lease and the locks it holds.
    async fn renew(&self, ns: &Namespace, lease: &LeaseId, names: &[String]) -> Result<Renewal>;
    /// Removes waiter `id` of lock `name` (queued by [`LockStore::acquire`]).
    async fn unqueue(&self, ns: &Namespace, name: &Name, id: &str) -> Result<()>;
    async fn describe(&self, ns: &Namespace, name: &Name) -> Result<LockInfo>;
    /// A page of locks whose names start with `prefix`, and the next cursor.
    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<LockInfo>, Option<String>)>;
}

impl Store {
    pub fn new(redis: Redis, keys: KeyBuilder, channel: EventChannel) -> Self {
        Store { redis, keys, channel }
    }

    pub fn lock_key(&self, ns: &Namespace, name: &Name) -> ResourceKey {
        self.keys.resource(ns, "lock", name)
    }

    pub(super) fn lease_key(&self, ns: &Namespace, lease: &str) -> Result<ResourceKey> {
        Ok(self.keys.resource(ns, "lease", &Name::parse("lease_id", lease)?))
    }

    /// Creates the lease `id`; false when it already exists.
    pub async fn grant_id(&self, ns: &Namespace, id: &str, ttl_ms: u64, owner: &str) -> Result<bool> {
        let key = self.lease_key(ns, id)?;
        let created: i64 = self
            .redis
            .invoke(&scripts::LEASE_GRANT, |inv| {
                inv.key(key.as_str()).arg(ttl_ms).arg(owner);
            })
            .await?;
        Ok(created == 1)
    }

    /// Redlock mode: raises this node's fence (and the lock's token) to
    /// `token`, the grant's token across the majority.
    pub async fn raise_fence(&self, ns: &Namespace, name: &Name, lease: &str, token: u64) -> Result<()> {
        let key = self.lock_key(ns, name);
        let fence = key.sub("fence");
        let _: i64 = self
            .redis
            .invoke(&scripts::FENCE_RAISE, |inv| {
                inv.key(&fence).key(key.as_str()).arg(token).arg(FENCE_TTL_MS).arg(lease);
            })
            .await?;
        Ok(())
    }

    /// The key of `principal`'s live-lease set (auth quota `leases`).
    fn lease_quota_key(&self, principal: &str) -> String {
        self.keys.internal("lease-quota", principal).as_str().to_owned()
    }

    /// Members of `principal`'s lease set whose leases may have expired.
    pub async fn lease_quota_due(&self, principal: &str, limit: usize) -> Result<Vec<String>> {
        let key = self.lease_quota_key(principal);
        self.redis
            .invoke(&scripts::LEASE_QUOTA, |inv| {
                inv.key(&key).arg("due").arg(limit);
            })
            .await
    }

    /// Counts `member` against `max` (settling the checked `due` members
    /// first); false when the principal is at its quota.
    pub async fn lease_quota_take(
        &self,
        principal: &str,
        member: &str,
        ttl_ms: u64,
        max: u32,
        checked: &[(String, i64)],
    ) -> Result<(bool, u64)> {
        let key = self.lease_quota_key(principal);
        let (taken, count): (i64, u64) = self
            .redis
            .invoke(&scripts::LEASE_QUOTA, |inv| {
                inv.key(&key).arg("take").arg(member).arg(ttl_ms).arg(max);
                for (m, ttl) in checked {
                    inv.arg(m).arg(*ttl);
                }
            })
            .await?;
        Ok((taken == 1, count))
    }

    /// Stops counting `member` (its lease was revoked).
    pub async fn lease_quota_drop(&self, principal: &str, member: &str) -> Result<()> {
        let key = self.lease_quota_key(principal);
        let _: i64 = self
            .redis
            .invoke(&scripts::LEASE_QUOTA, |inv| {
                inv.key(&key).arg("drop").arg(member);
            })
            .await?;
        Ok(())
    }

    /// Whether one script may touch both keys: always on one Redis, on a
    /// cluster only when they hash to the same slot.
    pub(super) fn same_node(&self, a: &str, b: &str) -> bool {
        match self.redis.topology() {
            Topology::Single => true,
            Topology::Cluster => Slot::for_key(a) == Slot::for_key(b),
        }
    }

    /// One attempt on a node that must be `node_id` (its run_id; '' = any).
    /// Under a shared lease on the lock's node this is one acquire.lua call
    /// that also reads and records the lease.
    pub async fn acquire_on(
        &self,
        ns: &Namespace,
        name: &Name,
        t: Try<'_>,
        replicas: Option<(u32, Duration)>,
        node_id: &str,
    ) -> Result<Attempt> {
        let key = self.lock_key(ns, name);
        let LeaseId::Shared(id) = t.lease else {
            return self.acquire_call(ns, name, &key, None, t, replicas, node_id).await;
        };
        let lease = self.lease_key(ns, id)?;
        if self.same_node(lease.as_str(), key.as_str()) {
            return self.acquire_call(ns, name, &key, Some(&lease), t, replicas, node_id).await;
        }
        // Another cluster slot: read the lease, grant, then record the grant.
        let Some((ttl, lease_owner)) = self.lease_info(ns, id).await? else { return Ok(Attempt::LeaseGone) };
        let owner = if t.owner.is_empty() { lease_owner.as_str() } else { t.owner };
        let t = Try { ttl_ms: ttl.max(1) as u64, owner, ..t };
        let attempt = self.acquire_call(ns, name, &key, None, t, replicas, node_id).await?;
        if matches!(&attempt, Attempt::Acquired { lease, .. } if lease == id) {
            let index = lease.sub("locks");
            let recorded: Result<i64> = self
                .redis
                .invoke(&scripts::LEASE_ATTACH, |inv| {
                    inv.key(lease.as_str()).key(&index).arg(name.as_str());
                })
                .await;
            match recorded {
                Ok(ttl) if ttl >= 0 => {}
                // It expired meanwhile: a lock must not outlive its lease.
                Ok(_) => {
                    let _ = self.end(ns, name, Some(id), GrantEnd::Revoked).await;
                    return Ok(Attempt::LeaseGone);
                }
                // Unrecorded locks would not be renewed: give it back.
                Err(e) => {
                    let _ = self.release(ns, name, id, Release::Try(&t.attempt())).await;
                    return Err(e);
                }
            }
        }
        Ok(attempt)
    }

    /// One acquire.lua call; with `replicas`, the grant must be acknowledged
    /// by that many replicas (else it is undone and the call is UNAVAILABLE).
    #[allow(clippy::too_many_arguments)]
    async fn acquire_call(
        &self,
        ns: &Namespace,
        name: &Name,
        key: &ResourceKey,
        lease: Option<&ResourceKey>,
        t: Try<'_>,
        replicas: Option<(u32, Duration)>,
        node_id: &str,
    ) -> Result<Attempt> {
        let (fence, waiters) = (key.sub("fence"), key.sub("waiters"));
        let index = lease.map(|l| l.sub("locks"));
        let attempt = t.attempt();
        let queue = t.queue.map(|d| d.to_string()).unwrap_or_default();
        let prepare = |inv: &mut redis::ScriptInvocation<'_>| {
            inv.key(key.as_str()).key(&fence).key(&waiters);
            if let (Some(lease), Some(index)) = (lease, &index) {
                inv.key(lease.as_str()).key(index);
            }
            inv.arg(t.lease.as_str())
                .arg(t.ttl_ms)
                .arg(t.owner)
                .arg(t.waiter.unwrap_or(""))
                .arg(FENCE_TTL_MS)
                .arg(t.call)
                .arg(&attempt)
                .arg(node_id)
                .arg(&queue)
                .arg(name.as_str());
        };
        let (mut reply, acked) = match replicas {
            None => (self.redis.invoke::<Attempt>(&scripts::ACQUIRE, prepare).await?, None),
            Some((want, timeout)) => {
                let (reply, acked) = self.redis.invoke_and_wait(&scripts::ACQUIRE, prepare, want, timeout).await?;
                (reply, Some((acked, want, timeout)))
            }
        };
        if let Attempt::Acquired { attempt: of, .. } = &mut reply {
            *of = attempt;
            if let Some((acked, want, timeout)) = acked
                && acked < i64::from(want)
            {
                // Not durable enough: a failover could hand the lock out again.
                let _ = self.release(ns, name, t.lease.as_str(), Release::Try(of)).await;
                return Err(Error::Unavailable(format!(
                    "only {acked} of {want} replicas acknowledged the grant within {timeout:?}"
                )));
            }
        }
        Ok(reply)
    }

    /// One renew.lua call. `lock_ttl` applies without lease keys: 0 = each
    /// lock's own TTL, -1 = report only. With lease keys, the lease's permit
    /// index is renewed and read too.
    async fn renew_call(
        &self,
        lease: &str,
        lease_key: Option<&ResourceKey>,
        locks: &[(String, ResourceKey)],
        lock_ttl: i64,
    ) -> Result<(i64, Vec<String>, Vec<LockRenewal>, Vec<String>)> {
        let index = lease_key.map(|k| (k.sub("locks"), k.sub("permits")));
        let (ttl, names, mut states, permits): (i64, Vec<String>, Vec<LockRenewal>, Vec<String>) = self
            .redis
            .invoke(&scripts::RENEW, |inv| {
                if let (Some(key), Some((index, permits))) = (lease_key, &index) {
                    inv.key(key.as_str()).key(index).key(permits);
                }
                for (_, key) in locks {
                    inv.key(key.as_str());
                }
                inv.arg(lease).arg(if lease_key.is_some() { "2" } else { "0" }).arg(lock_ttl);
            })
            .await?;
        // One state per lock given, in order.
        if states.len() != locks.len() {
            return Err(Error::Internal(format!("renew.lua: {} states for {} locks", states.len(), locks.len())));
        }
        for (state, (name, _)) in states.iter_mut().zip(locks) {
            state.name.clone_from(name);
        }
        Ok((ttl, names, states, permits))
    }

    /// Names of lock keys (held, or tombstones) starting with `prefix`.
    pub async fn list_names(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>)> {
        let pattern = self.keys.scan_pattern(ns, "lock", prefix);
        let mut names = Vec::new();
        let mut cursor = cursor.map(str::to_owned);
        // Bounded work per page: a sparse keyspace yields short pages.
        for _ in 0..16 {
            let (keys, next) = self.redis.scan(&pattern, cursor.as_deref(), limit).await?;
            names.extend(keys.iter().filter_map(|k| crate::redis::keys::name_of(k)));
            cursor = next;
            if cursor.is_none() || names.len() >= limit as usize {
                break;
            }
        }
        names.sort();
        names.dedup();
        Ok((names, cursor))
    }
}

#[async_trait]
impl LockStore for Store {
    async fn grant(&self, ns: &Namespace, ttl_ms: u64, owner: &str) -> Result<LeaseId> {
        for _ in 0..3 {
            let lease = LeaseId::new_shared();
            if self.grant_id(ns, lease.as_str(), ttl_ms, owner).await? {
                return Ok(lease);
            }
        }
        Err(Error::Internal("lease id collided three times".into()))
    }

    /// Remaining TTL and owner of a shared lease, None when it is gone.
    async fn lease_info(&self, ns: &Namespace, lease: &str) -> Result<Option<(i64, String)>> {
        let key = self.lease_key(ns, lease)?;
        let (ttl, owner): (i64, String) = self
            .redis
            .invoke(&scripts::LEASE_INFO, |inv| {
                inv.key(key.as_str());
            })
            .await?;
        Ok((ttl > 0).then_some((ttl, owner)))
    }

    async fn acquire(
        &self,
        ns: &Namespace,
        name: &Name,
        t: Try<'_>,
        replicas: Option<(u32, Duration)>,
    ) -> Result<Attempt> {
        self.acquire_on(ns, name, t, replicas, "").await
    }

    /// Removes lock names from a shared lease's index.
    async fn detach(&self, ns: &Namespace, lease: &str, names: &[&str]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let index = self.lease_key(ns, lease)?.sub("locks");
        let _: i64 = self.redis.query(redis::cmd("SREM").arg(&index).arg(names)).await?;
        Ok(())
    }

    /// Releases what `what` names of `lease`'s hold on the lock.
    async fn release(&self, ns: &Namespace, name: &Name, lease: &str, what: Release<'_>) -> Result<ReleaseReply> {
        let key = self.lock_key(ns, name);
        let (id, latest) = match what {
            Release::Hold => ("", ""),
            Release::Try(id) => (id, ""),
            Release::Grant { id, latest } => (id, latest),
        };
        // A shared lease's index on the lock's node is updated in the call.
        let index = match LeaseId::parse(lease) {
            Ok(LeaseId::Shared(lease)) => Some(self.lease_key(ns, &lease)?.sub("locks")),
            _ => None,
        };
        let (folded, apart) = match index {
            Some(index) if self.same_node(&index, key.as_str()) => (Some(index), None),
            other => (None, other),
        };
        let reply: ReleaseReply = self
            .redis
            .invoke(&scripts::RELEASE, |inv| {
                inv.key(key.as_str());
                if let Some(index) = &folded {
                    inv.key(index);
                }
                inv.arg(lease).arg(&*self.channel.for_key(key.as_str())).arg(id).arg(latest).arg(name.as_str());
            })
            .await?;
        if let (Some(index), ReleaseReply::Released { remaining: 0, .. }) = (apart, &reply) {
            // Best effort: a stale index entry reads as "released".
            let _ = self.redis.query::<i64>(redis::cmd("SREM").arg(&index).arg(name.as_str())).await;
        }
        Ok(reply)
    }

    /// Ends a grant (held by `lease`, or by anyone when None).
    async fn end(&self, ns: &Namespace, name: &Name, lease: Option<&str>, how: GrantEnd) -> Result<Option<Ended>> {
        let key = self.lock_key(ns, name);
        self.redis
            .invoke(&scripts::LOCK_END, |inv| {
                inv.key(key.as_str())
                    .arg(lease.unwrap_or(""))
                    .arg(how.as_str())
                    .arg(&*self.channel.for_key(key.as_str()));
            })
            .await
    }

    /// Deletes a shared lease; returns the names and permit index entries
    /// its indexes listed.
    async fn revoke(&self, ns: &Namespace, lease: &str) -> Result<(Vec<String>, Vec<String>)> {
        let key = self.lease_key(ns, lease)?;
        let (index, permits) = (key.sub("locks"), key.sub("permits"));
        let (_existed, names, entries): (i64, Vec<String>, Vec<String>) = self
            .redis
            .invoke(&scripts::LEASE_REVOKE, |inv| {
                inv.key(key.as_str()).key(&index).key(&permits);
            })
            .await?;
        Ok((names, entries))
    }

    /// Renews `lease` and the given locks held under it. A private lease is
    /// its lock; a shared lease's locks are renewed in the same call as the
    /// lease on a single node, and per cluster slot on Redis Cluster (a
    /// script may only touch keys of one slot there).
    async fn renew(&self, ns: &Namespace, lease: &LeaseId, names: &[String]) -> Result<Renewal> {
        let named: Vec<(String, ResourceKey)> = names
            .iter()
            .filter_map(|n| Name::parse("name", n).ok().map(|name| (n.clone(), self.lock_key(ns, &name))))
            .collect();
        match lease {
            LeaseId::Private { name, .. } => {
                let key = self.lock_key(ns, name);
                let (_, _, mut locks, _) =
                    self.renew_call(lease.as_str(), None, &[(name.as_str().to_owned(), key)], 0).await?;
                let ttl_ms = match locks.first() {
                    Some(LockRenewal { state: LockState::Held, ttl_ms, .. }) => *ttl_ms,
                    _ => 0,
                };
                locks.truncate(1);
                Ok(Renewal { ttl_ms, locks, ..Renewal::default() })
            }
            // Renewed by its grant's script (Locks::renew_lease).
            LeaseId::Permit { .. } => Ok(Renewal::default()),
            LeaseId::Shared(id) => {
                let lease_key = self.lease_key(ns, id)?;
                // Locks that may share the lease's call.
                let (with_lease, others): (Vec<_>, Vec<_>) = match self.redis.topology() {
                    Topology::Single => (named, Vec::new()),
                    Topology::Cluster => {
                        let slot = Slot::for_key(lease_key.as_str());
                        named.into_iter().partition(|(_, k)| Slot::for_key(k.as_str()) == slot)
                    }
                };
                let (ttl_ms, index, mut locks, permits) = self.renew_call(id, Some(&lease_key), &with_lease, 0).await?;
                if !others.is_empty() {
                    let mut by_slot: HashMap<Slot, Vec<(String, ResourceKey)>> = HashMap::new();
                    for (name, key) in others {
                        by_slot.entry(Slot::for_key(key.as_str())).or_default().push((name, key));
                    }
                    // A gone lease renews nothing: report only (-1).
                    let lock_ttl = if ttl_ms > 0 { ttl_ms } else { -1 };
                    let calls = by_slot.values().map(|group| self.renew_call(id, None, group, lock_ttl));
                    for result in futures_util::future::join_all(calls).await {
                        locks.extend(result?.2);
                    }
                }
                let permit_index = permits.iter().filter_map(|e| PermitRef::parse_entry(e)).collect();
                Ok(Renewal { ttl_ms, index, locks, permit_index, permits: Vec::new() })
            }
        }
    }

    async fn unqueue(&self, ns: &Namespace, name: &Name, id: &str) -> Result<()> {
        let waiters = self.lock_key(ns, name).sub("waiters");
        let _: i64 = self
            .redis
            .invoke(&scripts::WAITER, |inv| {
                inv.key(&waiters).arg(id);
            })
            .await?;
        Ok(())
    }

    async fn describe(&self, ns: &Namespace, name: &Name) -> Result<LockInfo> {
        let key = self.lock_key(ns, name);
        let waiters = key.sub("waiters");
        let info: LockInfo = self
            .redis
            .invoke(&scripts::DESCRIBE, |inv| {
                inv.key(key.as_str()).key(&waiters);
            })
            .await?;
        Ok(LockInfo { name: name.as_str().to_owned(), ..info })
    }

    /// Up to about `limit` held locks whose names start with `prefix`.
    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<LockInfo>, Option<String>)> {
        let (names, cursor) = self.list_names(ns, prefix, cursor, limit).await?;
        let described = futures_util::future::join_all(
            names
                .iter()
                .filter_map(|n| Name::parse("name", n).ok())
                .map(|name| async move { self.describe(ns, &name).await }),
        )
        .await;
        let mut locks = Vec::new();
        for info in described {
            let info = info?;
            if info.held {
                locks.push(info);
            }
        }
        Ok((locks, cursor))
    }
}

// Reply decoding: one failure rule, a malformed reply is an error (never a
// default), which `Redis::invoke` reports as INTERNAL.

pub(super) fn list(v: Value, script: &str) -> Result<Vec<Value>, ParsingError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(format!("{script}: expected a list, got {other:?}").into()),
    }
}

pub(super) fn malformed(script: &str, items: &[Value]) -> ParsingError {
    format!("unexpected {script} reply {items:?}").into()
}

pub(super) fn int(v: Option<&Value>) -> Result<i64, ParsingError> {
    match v {
        Some(v) => i64::from_redis_value_ref(v),
        None => Err("empty reply".into()),
    }
}

/// A count or token: never negative.
pub(super) fn uint<T: TryFrom<i64>>(v: &Value) -> Result<T, ParsingError> {
    let n = int(Some(v))?;
    T::try_from(n).map_err(|_| format!("{n} is out of range here").into())
}

/// Text; nil (a missing hash field) reads as "".
pub(super) fn text(v: &Value) -> Result<String, ParsingError> {
    Option::<String>::from_redis_value_ref(v).map(Option::unwrap_or_default)
}
