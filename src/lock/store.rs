//! LockService's Redis store: one method per script call. Keys of a lock
//! share its name's hash tag; keys of a lease share the lease id's.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use redis::cluster_routing::Slot;

use super::{LeaseId, LockInfo};
use crate::{
    error::{Error, Result},
    redis::{KeyBuilder, Name, Namespace, Redis, ResourceKey, Topology, scripts},
};

/// Fence counters outlive grants by this much; tokens stay monotonic after
/// it expires because they never fall below Redis TIME (see acquire.lua).
const FENCE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// How a grant ended, as kept in the lock's tombstone and published in its
/// event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndState {
    /// By its holder: not a loss.
    Released,
    Forced,
    Revoked,
}

impl EndState {
    fn as_str(self) -> &'static str {
        match self {
            EndState::Released => "released",
            EndState::Forced => "forced",
            EndState::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [EndState::Released, EndState::Forced, EndState::Revoked].into_iter().find(|s| s.as_str() == text)
    }
}

/// The arguments of one acquire attempt.
#[derive(Debug, Clone, Copy)]
pub struct Try<'a> {
    pub lease: &'a str,
    /// TTL for the lock; 0 = re-enter only (a private lease).
    pub ttl_ms: u64,
    pub owner: &'a str,
    /// Waiter id to deregister on success.
    pub waiter: Option<&'a str>,
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

/// One Redlock node's answer to an acquire attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResult {
    pub node: String,
    pub vote: Vote,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Acquired,
    Held,
    Timeout,
    Error,
    Quarantined,
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
        held_ms: i64,
        grant: String,
        latest: String,
        token: u64,
    },
    NotHeld,
    HeldByOther,
}

/// A grant ended by someone other than its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub lease: String,
    pub owner: String,
    pub token: u64,
}

/// What renew.lua reports about one lock of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Held,
    /// Gone: expired (or re-granted with no trace of this lease).
    Gone,
    Released,
    Forced,
    Revoked,
    /// Redlock mode: still held on some nodes, but not on a majority.
    QuorumLost,
}

impl LockState {
    fn from_code(code: i64) -> Self {
        match code {
            1 => LockState::Held,
            2 => LockState::Released,
            3 => LockState::Forced,
            4 => LockState::Revoked,
            _ => LockState::Gone,
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

#[derive(Clone)]
pub struct Store {
    redis: Redis,
    keys: KeyBuilder,
    /// Pub/sub channel for release and lock-end events.
    pub channel: String,
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
    async fn acquire(
        &self,
        ns: &Namespace,
        name: &Name,
        t: Try<'_>,
        replicas: Option<(u32, Duration)>,
    ) -> Result<Attempt>;
    /// Records that lock `name` is held under shared lease `lease`; the
    /// lease's TTL, or None when the lease is gone.
    async fn attach(&self, ns: &Namespace, lease: &str, name: &Name) -> Result<Option<i64>>;
    /// Forgets locks of a lease (they ended).
    async fn detach(&self, ns: &Namespace, lease: &str, names: &[&str]) -> Result<()>;
    /// Releases a hold, undoes a try or repairs a grant ([`Release`]).
    async fn release(&self, ns: &Namespace, name: &Name, lease: &str, what: Release<'_>) -> Result<ReleaseReply>;
    /// Ends a grant whatever its holds (force-release, revocation).
    async fn end(&self, ns: &Namespace, name: &Name, lease: Option<&str>, state: EndState) -> Result<Option<Ended>>;
    /// Ends a shared lease; the names of the locks it held.
    async fn revoke(&self, ns: &Namespace, lease: &str) -> Result<Vec<String>>;
    /// Renews a lease and the locks it holds.
    async fn renew(&self, ns: &Namespace, lease: &LeaseId, names: &[String]) -> Result<Renewal>;
    /// Queues (or refreshes) waiter `id` of lock `name`.
    async fn waiter(&self, ns: &Namespace, name: &Name, id: &str, deadline_ms: Option<i64>) -> Result<()>;
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
    pub fn new(redis: Redis, keys: KeyBuilder, channel: String) -> Self {
        Store { redis, keys, channel }
    }

    pub fn lock_key(&self, ns: &Namespace, name: &Name) -> ResourceKey {
        self.keys.resource(ns, "lock", name)
    }

    fn lease_key(&self, ns: &Namespace, lease: &str) -> Result<ResourceKey> {
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

    /// One attempt on a node that must be `node_id` (its run_id; '' = any).
    pub async fn acquire_on(
        &self,
        ns: &Namespace,
        name: &Name,
        t: Try<'_>,
        replicas: Option<(u32, std::time::Duration)>,
        node_id: &str,
    ) -> Result<Attempt> {
        let key = self.lock_key(ns, name);
        let (fence, waiters) = (key.sub("fence"), key.sub("waiters"));
        let attempt = t.attempt();
        let prepare = |inv: &mut redis::ScriptInvocation<'_>| {
            inv.key(key.as_str())
                .key(&fence)
                .key(&waiters)
                .arg(t.lease)
                .arg(t.ttl_ms)
                .arg(t.owner)
                .arg(t.waiter.unwrap_or(""))
                .arg(FENCE_TTL_MS)
                .arg(t.call)
                .arg(&attempt)
                .arg(node_id);
        };
        let reply: Vec<redis::Value> = match replicas {
            None => self.redis.invoke(&scripts::ACQUIRE, prepare).await?,
            Some((want, timeout)) => {
                let (reply, acked): (Vec<redis::Value>, i64) =
                    self.redis.invoke_and_wait(&scripts::ACQUIRE, prepare, want, timeout).await?;
                let parsed = parse_attempt(reply, &attempt)?;
                if matches!(parsed, Attempt::Acquired { .. }) && acked < i64::from(want) {
                    // Not durable enough: a failover could hand the lock out again.
                    let _ = self.release(ns, name, t.lease, Release::Try(&attempt)).await;
                    return Err(Error::Unavailable(format!(
                        "only {acked} of {want} replicas acknowledged the grant within {timeout:?}"
                    )));
                }
                return Ok(parsed);
            }
        };
        parse_attempt(reply, &attempt)
    }

    /// One renew.lua call. `lock_ttl` applies without lease keys: 0 = each
    /// lock's own TTL, -1 = report only.
    async fn renew_call(
        &self,
        lease: &str,
        lease_key: Option<&ResourceKey>,
        locks: &[(String, ResourceKey)],
        lock_ttl: i64,
    ) -> Result<(i64, Vec<String>, Vec<LockRenewal>)> {
        let index = lease_key.map(|k| k.sub("locks"));
        let (ttl, names, codes): (i64, Vec<String>, Vec<i64>) = self
            .redis
            .invoke(&scripts::RENEW, |inv| {
                if let (Some(key), Some(index)) = (lease_key, &index) {
                    inv.key(key.as_str()).key(index);
                }
                for (_, key) in locks {
                    inv.key(key.as_str());
                }
                inv.arg(lease).arg(if lease_key.is_some() { "1" } else { "0" }).arg(lock_ttl);
            })
            .await?;
        // Three numbers per lock: a reply of another shape is an error.
        if codes.len() != 3 * locks.len() {
            return Err(Error::Internal(format!(
                "renew.lua: expected {} numbers for {} locks, got {}",
                3 * locks.len(),
                locks.len(),
                codes.len()
            )));
        }
        let states = locks
            .iter()
            .zip(codes.chunks_exact(3))
            .map(|((name, _), c)| LockRenewal {
                name: name.clone(),
                state: LockState::from_code(c[0]),
                token: c[1].max(0) as u64,
                ttl_ms: c[2],
            })
            .collect();
        Ok((ttl, names, states))
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

    /// One attempt; with `replicas`, the grant must be acknowledged by that
    /// many replicas (else it is undone and the call is UNAVAILABLE).
    async fn acquire(
        &self,
        ns: &Namespace,
        name: &Name,
        t: Try<'_>,
        replicas: Option<(u32, std::time::Duration)>,
    ) -> Result<Attempt> {
        self.acquire_on(ns, name, t, replicas, "").await
    }

    /// Records a granted lock in its shared lease's index; None when the
    /// lease is gone.
    async fn attach(&self, ns: &Namespace, lease: &str, name: &Name) -> Result<Option<i64>> {
        let key = self.lease_key(ns, lease)?;
        let index = key.sub("locks");
        let ttl: i64 = self
            .redis
            .invoke(&scripts::LEASE_ATTACH, |inv| {
                inv.key(key.as_str()).key(&index).arg(name.as_str());
            })
            .await?;
        Ok((ttl >= 0).then_some(ttl))
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
        let reply: Vec<redis::Value> = self
            .redis
            .invoke(&scripts::RELEASE, |inv| {
                inv.key(key.as_str()).arg(lease).arg(&self.channel).arg(id).arg(latest);
            })
            .await?;
        match reply.as_slice() {
            [flag, remaining, held_ms, grant, token, latest] if int(flag)? == 1 => Ok(ReleaseReply::Released {
                remaining: u32::try_from(int(remaining)?).map_err(|_| bad_reply("release", &reply))?,
                held_ms: int(held_ms)?,
                grant: text(grant)?,
                latest: text(latest)?,
                token: int(token)?.max(0) as u64,
            }),
            [flag] if int(flag)? == 2 => Ok(ReleaseReply::HeldByOther),
            [flag] if int(flag)? == 0 => Ok(ReleaseReply::NotHeld),
            _ => Err(bad_reply("release", &reply)),
        }
    }

    /// Ends a grant (held by `lease`, or by anyone when None).
    async fn end(&self, ns: &Namespace, name: &Name, lease: Option<&str>, state: EndState) -> Result<Option<Ended>> {
        let key = self.lock_key(ns, name);
        let reply: Vec<redis::Value> = self
            .redis
            .invoke(&scripts::LOCK_END, |inv| {
                inv.key(key.as_str()).arg(lease.unwrap_or("")).arg(state.as_str()).arg(&self.channel);
            })
            .await?;
        match reply.as_slice() {
            [flag, lease, owner, token] if int(flag)? == 1 => {
                Ok(Some(Ended { lease: text(lease)?, owner: text(owner)?, token: int(token)?.max(0) as u64 }))
            }
            [flag] if int(flag)? == 0 => Ok(None),
            _ => Err(bad_reply("lock_end", &reply)),
        }
    }

    /// Deletes a shared lease; returns the names its index listed.
    async fn revoke(&self, ns: &Namespace, lease: &str) -> Result<Vec<String>> {
        let key = self.lease_key(ns, lease)?;
        let index = key.sub("locks");
        let (_existed, names): (i64, Vec<String>) = self
            .redis
            .invoke(&scripts::LEASE_REVOKE, |inv| {
                inv.key(key.as_str()).key(&index);
            })
            .await?;
        Ok(names)
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
                let (_, _, mut locks) =
                    self.renew_call(lease.as_str(), None, &[(name.as_str().to_owned(), key)], 0).await?;
                let ttl_ms = match locks.first() {
                    Some(LockRenewal { state: LockState::Held, ttl_ms, .. }) => *ttl_ms,
                    _ => 0,
                };
                locks.truncate(1);
                Ok(Renewal { ttl_ms, index: Vec::new(), locks })
            }
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
                let (ttl_ms, index, mut locks) = self.renew_call(id, Some(&lease_key), &with_lease, 0).await?;
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
                Ok(Renewal { ttl_ms, index, locks })
            }
        }
    }

    /// Registers (deadline Some) or removes a waiter.
    async fn waiter(&self, ns: &Namespace, name: &Name, id: &str, deadline_ms: Option<i64>) -> Result<()> {
        let waiters = self.lock_key(ns, name).sub("waiters");
        let _: i64 = self
            .redis
            .invoke(&scripts::WAITER, |inv| {
                inv.key(&waiters);
                match deadline_ms {
                    Some(deadline) => inv.arg("add").arg(id).arg(deadline),
                    None => inv.arg("remove").arg(id).arg(0),
                };
            })
            .await?;
        Ok(())
    }

    async fn describe(&self, ns: &Namespace, name: &Name) -> Result<LockInfo> {
        let key = self.lock_key(ns, name);
        let waiters = key.sub("waiters");
        let reply: Vec<redis::Value> = self
            .redis
            .invoke(&scripts::DESCRIBE, |inv| {
                inv.key(key.as_str()).key(&waiters);
            })
            .await?;
        let [state, lease, owner, token, count, ttl, waiters] = reply.as_slice() else {
            return Err(bad_reply("describe", &reply));
        };
        let waiters = int(waiters)?.max(0) as u32;
        if text(state)? != "held" {
            return Ok(LockInfo { name: name.as_str().to_owned(), waiters, ..LockInfo::default() });
        }
        Ok(LockInfo {
            name: name.as_str().to_owned(),
            held: true,
            lease: text(lease)?,
            owner: text(owner)?,
            token: int(token)?.max(0) as u64,
            hold_count: int(count)?.max(0) as u32,
            ttl_ms: int(ttl)?.max(0),
            waiters,
        })
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

fn parse_attempt(reply: Vec<redis::Value>, attempt: &str) -> Result<Attempt> {
    match reply.as_slice() {
        [flag, token, count, ttl, lease] if int(flag)? == 1 => Ok(Attempt::Acquired {
            token: int(token)?.max(0) as u64,
            count: int(count)?.max(0) as u32,
            ttl_ms: int(ttl)?,
            lease: text(lease)?,
            validity_ms: 0,
            attempt: attempt.to_owned(),
        }),
        [flag, owner, ttl] if int(flag)? == 0 => {
            Ok(Attempt::Held { owner: text(owner)?, ttl_ms: int(ttl)?, nodes: Vec::new() })
        }
        [flag] if int(flag)? == -1 => Ok(Attempt::LeaseGone),
        [flag, run_id, uptime] if int(flag)? == -2 => {
            Ok(Attempt::WrongNode { run_id: text(run_id)?, uptime_s: int(uptime)?.max(0) as u64 })
        }
        _ => Err(bad_reply("acquire", &reply)),
    }
}

fn bad_reply(script: &str, reply: &[redis::Value]) -> Error {
    Error::Internal(format!("unexpected {script} reply {reply:?}"))
}

/// An integer reply; anything else is a malformed reply, never a default.
fn int(value: &redis::Value) -> Result<i64> {
    redis::from_redis_value_ref(value).map_err(|e| Error::Internal(format!("malformed script reply: {e}")))
}

/// A text reply (false/nil, from a missing hash field, reads as "").
fn text(value: &redis::Value) -> Result<String> {
    match value {
        redis::Value::Nil => Ok(String::new()),
        v => redis::from_redis_value_ref(v).map_err(|e| Error::Internal(format!("malformed script reply: {e}"))),
    }
}
