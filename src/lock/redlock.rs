//! Redlock mode: every lock and lease lives on N independent Redis masters,
//! and each operation runs the single-node scripts on all of them in
//! parallel and decides by majority (quorum = N/2 + 1).
//!
//! - **Acquire** counts votes, then checks validity = TTL − elapsed − drift
//!   (monotonic clock, drift = 1 % of the TTL + 2 ms); without a valid
//!   majority it releases on every node, including those that timed out.
//! - **Fencing tokens across majorities.** Plain Redlock cannot fence: each
//!   node's counter only sees the grants that reached it. Here, once a
//!   majority granted the lock, the token is the maximum of those nodes'
//!   counters (each already max(own + 1, own clock)), and it is written back
//!   with set-if-greater to a majority before replying, within validity.
//!   Any two majorities of the same N nodes share at least one node, so the
//!   next grant's majority includes a node that saw this token and answers
//!   at least token + 1. What remains is Redlock's timing assumption: the
//!   next grant can only start after this one's lock expired or was
//!   released, which holds while node clocks advance at about the same rate
//!   (drift within the allowance) and no node loses the lock early — hence
//!   the delayed restart below.
//! - **Delayed restart.** A node that lost its keys (restarted) must not
//!   help grant a lock that a majority still holds. Every acquire carries the
//!   node identity (`run_id`) coord confirmed, and the script refuses to
//!   vote from any other (so no vote races a background check); a node seen
//!   with a new `run_id` votes again only `lock.max_ttl` after its restart.
//!   A node coord meets for the first time (coord itself restarted) votes at
//!   once only if it carries coord's marker for its current `run_id`, has
//!   been up for `lock.max_ttl`, or no node of the deployment carries a
//!   marker yet (a fresh deployment); otherwise it waits out the rest of
//!   `lock.max_ttl` since its start.
//! - **Exact undo.** Each try has its own id, recorded on the holds it took;
//!   undoing a failed try, and repairing a release on nodes that missed it,
//!   remove exactly that try's (that grant's) hold and never a later one.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::future::join_all;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    GrantEnd, LeaseId, LockInfo, LockState,
    store::{Attempt, Ended, LockRenewal, LockStore, Release, ReleaseReply, Renewal, Store, Try},
};
use crate::{
    config::RedlockConfig,
    error::{Error, Result},
    redis::{ConnectOptions, EventChannel, KeyBuilder, Name, Namespace, Redis, RedisNodes},
};

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

/// One independent master.
struct Node {
    label: String,
    store: Store,
    redis: Redis,
    identity: Mutex<Identity>,
    up: AtomicBool,
}

#[derive(Debug, Default)]
struct Identity {
    /// The incarnation coord confirmed; votes count only from it.
    run_id: Option<String>,
    /// Not voting before then (restarted, or first seen young and unmarked).
    quarantined_until: Option<Instant>,
}

impl Node {
    /// The run_id a vote must come from; None while the node may not vote
    /// (never confirmed, or quarantined).
    fn voter(&self) -> Option<String> {
        let id = self.identity.lock().ok()?;
        match id.quarantined_until {
            Some(until) if Instant::now() < until => None,
            _ => id.run_id.clone(),
        }
    }

    fn votes(&self) -> bool {
        self.voter().is_some()
    }

    fn quarantine(&self, id: &mut Identity, until: Instant, why: &str) {
        let left = until.saturating_duration_since(Instant::now());
        tracing::warn!(node = %self.label, quarantine = ?left, "redlock node {why}; it will not vote until it has been up for the maximum TTL");
        id.quarantined_until = Some(id.quarantined_until.map_or(until, |t| t.max(until)));
    }
}

/// A node's reply, or why there is none.
enum Reply<T> {
    Ok(T),
    Timeout,
    Err(String),
    /// Not asked: the node may not vote.
    Skipped,
}

pub struct Redlock {
    nodes: Vec<Node>,
    quorum: usize,
    settings: RedlockConfig,
    max_ttl: Duration,
    /// coord's per-node marker key (documented owner: coord; no TTL).
    marker: String,
    /// Some node of this deployment carried or got coord's marker.
    marked: AtomicBool,
}

impl Redlock {
    pub fn connect(
        config: &RedlockConfig,
        opts: &ConnectOptions,
        keys: &KeyBuilder,
        channel: &str,
        max_ttl: Duration,
    ) -> Result<Self> {
        let pools = RedisNodes::connect(&config.nodes, opts)?;
        let mut nodes = Vec::new();
        for (url, redis) in config.nodes.iter().zip(pools.nodes()) {
            let redis = redis.clone();
            let label = url::Url::parse(url)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(6379))))
                .unwrap_or_else(|| url.clone());
            nodes.push(Node {
                label,
                store: Store::new(redis.clone(), keys.clone(), EventChannel::One(channel.into())),
                redis,
                identity: Mutex::new(Identity::default()),
                up: AtomicBool::new(false),
            });
        }
        if nodes.len() % 2 == 0 {
            tracing::warn!(
                nodes = nodes.len(),
                "an even number of Redlock nodes tolerates no more failures than one node fewer"
            );
        }
        let quorum = nodes.len() / 2 + 1;
        let marker = format!("{}:_:redlock-node", keys.prefix());
        Ok(Redlock { nodes, quorum, settings: config.clone(), max_ttl, marker, marked: AtomicBool::new(false) })
    }

    /// Clients for one pub/sub reader per node (a release publishes on each).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn pubsub_clients(&self) -> Vec<redis::Client> {
        self.nodes.iter().map(|n| n.redis.pubsub_client().clone()).collect()
    }

    fn drift(ttl: Duration) -> Duration {
        ttl / 100 + Duration::from_millis(2)
    }

    /// Per-node bound for an acquire: configured, else 10 % of the TTL
    /// within [50 ms, 500 ms]. Generous, because a loaded but healthy node
    /// must not fail calls; validity accounts for whatever time it took.
    fn node_timeout(&self, ttl_ms: u64) -> Duration {
        self.settings.node_timeout.unwrap_or_else(|| {
            Duration::from_millis(ttl_ms / 10).clamp(Duration::from_millis(50), Duration::from_millis(500))
        })
    }

    /// Bound for calls not tied to one TTL (release, renew, reads).
    fn op_timeout(&self) -> Duration {
        self.settings.node_timeout.unwrap_or(Duration::from_millis(250))
    }

    /// Runs `call` on every node in parallel, each bounded by `timeout`.
    async fn all<'a, T, F, Fut>(&'a self, timeout: Duration, call: F) -> Vec<Reply<T>>
    where
        F: Fn(&'a Store) -> Fut,
        Fut: Future<Output = Result<T>> + 'a,
    {
        self.each(timeout, |node| Some(call(&node.store))).await
    }

    /// Runs `call` on every node for which it returns a future (the others
    /// are `Skipped`), in parallel, each bounded by `timeout`.
    async fn each<'a, T, F, Fut>(&'a self, timeout: Duration, call: F) -> Vec<Reply<T>>
    where
        F: Fn(&'a Node) -> Option<Fut>,
        Fut: Future<Output = Result<T>> + 'a,
    {
        let calls = self.nodes.iter().map(|node| {
            let fut = call(node);
            async move {
                let Some(fut) = fut else { return Reply::Skipped };
                let started = Instant::now();
                let reply = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(v)) => Reply::Ok(v),
                    Ok(Err(e)) => Reply::Err(e.to_string()),
                    Err(_) => Reply::Timeout,
                };
                let outcome = match &reply {
                    Reply::Ok(_) => "ok",
                    Reply::Timeout => "timeout",
                    Reply::Err(_) | Reply::Skipped => "error",
                };
                metrics::counter!("coord_redlock_node_calls_total", "node" => node.label.clone(), "outcome" => outcome)
                    .increment(1);
                metrics::histogram!("coord_redlock_node_seconds", "node" => node.label.clone())
                    .record(started.elapsed().as_secs_f64());
                reply
            }
        });
        join_all(calls).await
    }

    /// Replies of voting nodes that answered.
    fn answered<'r, T>(&self, replies: &'r [Reply<T>]) -> Vec<&'r T> {
        replies
            .iter()
            .zip(&self.nodes)
            .filter(|(_, node)| node.votes())
            .filter_map(|(r, _)| match r {
                Reply::Ok(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    fn no_quorum<T>(&self, what: &str, replies: &[Reply<T>]) -> Error {
        let detail: Vec<String> = replies
            .iter()
            .zip(&self.nodes)
            .map(|(r, n)| match (r, n.votes()) {
                (Reply::Skipped, _) | (_, false) => format!("{} quarantined", n.label),
                (Reply::Ok(_), _) => format!("{} ok", n.label),
                (Reply::Timeout, _) => format!("{} timeout", n.label),
                (Reply::Err(e), _) => format!("{} error: {e}", n.label),
            })
            .collect();
        Error::Unavailable(format!("{what}: no majority of {} nodes ({})", self.nodes.len(), detail.join(", ")))
    }

    /// A node answered with another run_id than the one confirmed: it
    /// restarted and lost its keys.
    fn restarted(&self, node: &Node, run_id: &str, uptime_s: u64) {
        let Ok(mut id) = node.identity.lock() else { return };
        if id.run_id.as_deref() == Some(run_id) {
            return;
        }
        let known = id.run_id.is_some();
        id.run_id = Some(run_id.to_owned());
        if known && self.settings.delayed_restart {
            node.quarantine(&mut id, self.quarantine_end(uptime_s), "restarted (new run_id)");
        }
    }

    /// When a node up for `uptime_s` has outlived every lock it may have
    /// lost: `lock.max_ttl` after its start, plus the drift allowance and
    /// the second INFO's uptime may be short by.
    fn quarantine_end(&self, uptime_s: u64) -> Instant {
        let left = self.max_ttl.saturating_sub(Duration::from_secs(uptime_s));
        Instant::now() + left + Self::drift(self.max_ttl) + Duration::from_secs(1)
    }

    /// The value a majority reaches: the quorum-th largest of `values`
    /// (which has at least a quorum of entries).
    fn quorum_value<T: Ord + Copy + Default>(&self, mut values: Vec<T>) -> T {
        values.sort_unstable();
        values.len().checked_sub(self.quorum).and_then(|i| values.get(i).copied()).unwrap_or_default()
    }

    /// Validity left of a grant of `ttl` begun at `started`.
    fn valid(ttl: Duration, started: Instant) -> Duration {
        ttl.saturating_sub(started.elapsed()).saturating_sub(Self::drift(ttl))
    }

    /// Nodes that did not answer may still run an earlier acquire of this
    /// try, or keep the grant, when they come back (a paused process, a
    /// queued command): keep releasing `what` there until the node has
    /// answered twice (100 ms apart, so a command queued before the first
    /// answer ran by the second). `what` matches only that try or grant, so
    /// it is safe to repeat and never removes a later grant. Bounded by
    /// `lock.max_ttl`, after which any such grant has expired anyway.
    fn repair(&self, ns: &Namespace, name: &Name, lease: &str, what: Release<'_>, replies: &[Reply<ReleaseReply>]) {
        let (id, latest) = match what {
            Release::Hold => return,
            Release::Try(id) => (id.to_owned(), None),
            Release::Grant { id, latest } => (id.to_owned(), Some(latest.to_owned())),
        };
        for (reply, node) in replies.iter().zip(&self.nodes) {
            if matches!(reply, Reply::Ok(_)) {
                continue;
            }
            let (store, ns, name, lease, id, latest) =
                (node.store.clone(), ns.clone(), name.clone(), lease.to_owned(), id.clone(), latest.clone());
            let deadline = Instant::now() + self.max_ttl;
            tokio::spawn(async move {
                let mut answered = 0;
                while answered < 2 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let what = match &latest {
                        None => Release::Try(&id),
                        Some(latest) => Release::Grant { id: &id, latest },
                    };
                    let call = tokio::time::timeout(Duration::from_secs(1), store.release(&ns, &name, &lease, what));
                    if let Ok(Ok(_)) = call.await {
                        answered += 1;
                    }
                }
            });
        }
    }

    /// Watches every node: reachability and identity. A changed `run_id`
    /// (restarted empty) quarantines a node for `lock.max_ttl` after its
    /// start; a node met for the first time is confirmed by the rules in the
    /// module docs, and voting nodes get coord's marker. Sets `quorum_up`
    /// while a majority of voting nodes is reachable.
    pub async fn monitor(self: Arc<Self>, interval: Duration, quorum_up: Arc<AtomicBool>, shutdown: CancellationToken) {
        let this = self.as_ref();
        let bound = this.op_timeout().max(Duration::from_millis(250));
        loop {
            let checks = this.nodes.iter().map(|node| async move {
                let reply = tokio::time::timeout(bound, async {
                    let info: String = node.redis.query(redis::cmd("INFO").arg("server")).await?;
                    let marker: Option<String> = node.redis.query(redis::cmd("GET").arg(&this.marker)).await?;
                    Ok::<_, Error>((info, marker))
                })
                .await;
                let seen = match reply {
                    Ok(Ok((info, marker))) => info_field(&info, "run_id").map(str::to_owned).map(|id| {
                        let uptime = info_field(&info, "uptime_in_seconds").and_then(|u| u.parse().ok()).unwrap_or(0);
                        (id, uptime, marker)
                    }),
                    _ => None,
                };
                node.up.store(seen.is_some(), Ordering::Relaxed);
                seen
            });
            let seen = join_all(checks).await;
            // Decided before this round writes any marker of its own.
            let marked = this.marked.load(Ordering::Relaxed) || seen.iter().flatten().any(|(_, _, m)| m.is_some());
            for (node, seen) in this.nodes.iter().zip(seen) {
                if let Some((run_id, uptime, marker)) = seen {
                    this.observe(node, &run_id, uptime, marker.as_deref(), marked).await;
                }
                metrics::gauge!("coord_redlock_node_up", "node" => node.label.clone())
                    .set(if node.up.load(Ordering::Relaxed) { 1.0 } else { 0.0 });
                metrics::gauge!("coord_redlock_node_quarantined", "node" => node.label.clone()).set(if node.votes() {
                    0.0
                } else {
                    1.0
                });
            }
            let voters = this.nodes.iter().filter(|n| n.up.load(Ordering::Relaxed) && n.votes()).count();
            quorum_up.store(voters >= this.quorum, Ordering::Relaxed);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One sighting of `node` as `run_id`, up `uptime_s`, with coord's
    /// marker (the run_id it was written for) if present; `marked`: some
    /// node of the deployment carries a marker.
    async fn observe(&self, node: &Node, run_id: &str, uptime_s: u64, marker: Option<&str>, marked: bool) {
        {
            let Ok(mut id) = node.identity.lock() else { return };
            match id.run_id.as_deref() {
                Some(known) if known == run_id => {}
                Some(_) => {
                    id.run_id = Some(run_id.to_owned());
                    if self.settings.delayed_restart {
                        node.quarantine(&mut id, self.quarantine_end(uptime_s), "restarted (new run_id)");
                    }
                }
                None => {
                    id.run_id = Some(run_id.to_owned());
                    let trusted = !self.settings.delayed_restart
                        || marker == Some(run_id)
                        || Duration::from_secs(uptime_s) >= self.max_ttl
                        || !marked;
                    if !trusted {
                        let why = match marker {
                            Some(_) => "restarted since coord last confirmed it",
                            None => "is unknown to coord and younger than the maximum TTL",
                        };
                        node.quarantine(&mut id, self.quarantine_end(uptime_s), why);
                    }
                }
            }
        }
        // Mark voting nodes, so a coord that starts later knows this
        // incarnation was confirmed.
        if node.votes() && marker != Some(run_id) {
            let set = redis::cmd("SET").arg(&self.marker).arg(run_id).clone();
            if tokio::time::timeout(self.op_timeout(), node.redis.query::<()>(&set)).await.is_ok_and(|r| r.is_ok()) {
                self.marked.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A field of an INFO section.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).map(str::trim)
}

fn vote_name(vote: Vote) -> &'static str {
    match vote {
        Vote::Acquired => "acquired",
        Vote::Held => "held",
        Vote::Timeout => "timeout",
        Vote::Error => "error",
        Vote::Quarantined => "quarantined",
    }
}

/// A uniform random number in [0, 1) from the OS generator.
fn rand_unit() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

// Redlock nodes are independent masters: no replica WAIT, so `_replicas`
// is ignored.
#[async_trait]
impl LockStore for Redlock {
    async fn grant(&self, ns: &Namespace, ttl_ms: u64, owner: &str) -> Result<LeaseId> {
        let lease = LeaseId::new_shared();
        let replies = self.all(self.node_timeout(ttl_ms), |s| s.grant_id(ns, lease.as_str(), ttl_ms, owner)).await;
        if self.answered(&replies).iter().filter(|created| ***created).count() >= self.quorum {
            return Ok(lease);
        }
        let _ = self.revoke(ns, lease.as_str()).await;
        Err(self.no_quorum("grant", &replies))
    }

    /// The lease's TTL (and owner) if a majority still has it.
    async fn lease_info(&self, ns: &Namespace, lease: &str) -> Result<Option<(i64, String)>> {
        let replies = self.all(self.op_timeout(), |s| s.lease_info(ns, lease)).await;
        let answered = self.answered(&replies);
        if answered.len() < self.quorum {
            return Err(self.no_quorum("lease", &replies));
        }
        let live: Vec<&(i64, String)> = answered.iter().filter_map(|t| t.as_ref()).collect();
        if live.len() < self.quorum {
            return Ok(None);
        }
        let owner = live[0].1.clone();
        // A majority has at least this much left.
        Ok(Some((self.quorum_value(live.iter().map(|l| l.0).collect()), owner)))
    }

    async fn acquire(
        &self,
        ns: &Namespace,
        name: &Name,
        t: Try<'_>,
        _replicas: Option<(u32, Duration)>,
    ) -> Result<Attempt> {
        // A shared lease must live on a majority; each node's lock gets that
        // node's lease TTL, this one bounds the rounds.
        let t = match t.lease {
            LeaseId::Shared(id) => match self.lease_info(ns, id).await? {
                Some((ttl, _)) => Try { ttl_ms: ttl.max(1) as u64, ..t },
                None => return Ok(Attempt::LeaseGone),
            },
            LeaseId::Private { .. } | LeaseId::Permit { .. } => t,
        };
        let timeout = if t.ttl_ms == 0 { self.op_timeout() } else { self.node_timeout(t.ttl_ms) };
        let mut nodes_seen = Vec::new();
        for round in 0..=self.settings.retry_count {
            if round > 0 {
                // Split votes or slow nodes: back off a random part of retry_delay.
                let jitter = self.settings.retry_delay.mul_f64(rand_unit());
                tokio::time::sleep(jitter).await;
            }
            // Each round is a try of its own, so undoing it never touches
            // what a later round of this call was granted.
            let tr = Try { seq: t.seq + u64::from(round), ..t };
            let attempt = tr.attempt();
            let started = Instant::now();
            let replies = self
                .each(timeout, |node| {
                    let id = node.voter()?;
                    Some(async move { node.store.acquire_on(ns, name, tr, None, &id).await })
                })
                .await;
            let mut votes = Vec::new();
            let mut held: Vec<(String, i64)> = Vec::new();
            let mut results = Vec::new();
            let mut gone = 0;
            for (reply, node) in replies.iter().zip(&self.nodes) {
                let (vote, detail) = match reply {
                    Reply::Ok(Attempt::Acquired { token, count, ttl_ms, lease, .. }) => {
                        votes.push((*token, *count, *ttl_ms, lease.clone()));
                        (Vote::Acquired, String::new())
                    }
                    Reply::Ok(Attempt::WrongNode { run_id, uptime_s }) => {
                        self.restarted(node, run_id, *uptime_s);
                        (Vote::Quarantined, format!("restarted as {run_id}"))
                    }
                    Reply::Skipped => (Vote::Quarantined, String::new()),
                    Reply::Ok(Attempt::Held { owner, ttl_ms, .. }) => {
                        held.push((owner.clone(), *ttl_ms));
                        (Vote::Held, String::new())
                    }
                    Reply::Ok(Attempt::LeaseGone) => {
                        gone += 1;
                        (Vote::Error, "lease gone".to_owned())
                    }
                    Reply::Ok(Attempt::NoQuorum { .. }) => (Vote::Error, String::new()),
                    Reply::Timeout => (Vote::Timeout, String::new()),
                    Reply::Err(e) => (Vote::Error, e.clone()),
                };
                metrics::counter!("coord_redlock_votes_total", "node" => node.label.clone(), "vote" => vote_name(vote))
                    .increment(1);
                results.push(NodeResult { node: node.label.clone(), vote, detail });
            }
            if votes.len() >= self.quorum {
                let ttl = Duration::from_millis(votes.iter().map(|v| v.2.max(0) as u64).min().unwrap_or(0));
                let token = votes.iter().map(|v| v.0).max().unwrap_or(0);
                let holder = votes[0].3.clone();
                let count = self.quorum_value(votes.iter().map(|v| v.1).collect());
                if Self::valid(ttl, started) > Duration::ZERO {
                    let raised = self.all(timeout, |s| s.raise_fence(ns, name, &holder, token)).await;
                    let validity = Self::valid(ttl, started);
                    if self.answered(&raised).len() >= self.quorum && validity > Duration::ZERO {
                        return Ok(Attempt::Acquired {
                            token,
                            count,
                            ttl_ms: ttl.as_millis() as i64,
                            lease: holder,
                            validity_ms: validity.as_millis() as i64,
                            attempt,
                        });
                    }
                }
            }
            // Not granted: undo this try wherever it may have been applied
            // (also where it timed out and may still be applied).
            if results.iter().any(|r| matches!(r.vote, Vote::Acquired | Vote::Timeout | Vote::Error)) {
                let _ = self.release(ns, name, t.lease.as_str(), Release::Try(&attempt)).await;
            }
            if gone >= self.quorum {
                return Ok(Attempt::LeaseGone);
            }
            if let Some(ttl) = held.iter().map(|h| h.1).filter(|t| *t > 0).min() {
                let owner = held.first().map(|h| h.0.clone()).unwrap_or_default();
                return Ok(Attempt::Held { owner, ttl_ms: ttl, nodes: results });
            }
            let reachable = results.iter().filter(|r| matches!(r.vote, Vote::Acquired | Vote::Held)).count();
            let slow = results.iter().any(|r| r.vote == Vote::Timeout);
            nodes_seen = results;
            if reachable < self.quorum && !slow {
                // Not a split vote and nothing merely slow: too few nodes
                // answer at all; retrying will not help now.
                break;
            }
        }
        Ok(Attempt::NoQuorum { nodes: nodes_seen })
    }

    async fn detach(&self, ns: &Namespace, lease: &str, names: &[&str]) -> Result<()> {
        self.all(self.op_timeout(), |s| s.detach(ns, lease, names)).await;
        Ok(())
    }

    /// Releases on every node, decided by majority. Nodes that did not
    /// answer get the undo of the try, or the end of the grant this release
    /// ended, repaired in the background.
    async fn release(&self, ns: &Namespace, name: &Name, lease: &str, what: Release<'_>) -> Result<ReleaseReply> {
        let replies = self.all(self.op_timeout(), |s| s.release(ns, name, lease, what)).await;
        let answered = self.answered(&replies);
        // (remaining, token, grant, latest try) where it was released.
        let released: Vec<(u32, u64, &str, &str)> = answered
            .iter()
            .filter_map(|r| match r {
                ReleaseReply::Released { remaining, grant, latest, token } => {
                    Some((*remaining, *token, grant.as_str(), latest.as_str()))
                }
                _ => None,
            })
            .collect();
        // A release that ended the grant must end it everywhere; one that
        // only dropped a hold leaves nothing that outlives the final one.
        let ended = released.iter().find(|r| r.0 == 0 && !r.2.is_empty()).map(|r| (r.2, r.3));
        match (what, ended) {
            (Release::Try(_), _) => self.repair(ns, name, lease, what, &replies),
            (Release::Hold, Some((id, latest))) => {
                self.repair(ns, name, lease, Release::Grant { id, latest }, &replies)
            }
            _ => {}
        }
        if answered.len() < self.quorum {
            return Err(self.no_quorum("release", &replies));
        }
        let by_other = answered.iter().filter(|r| matches!(r, ReleaseReply::HeldByOther)).count();
        Ok(if by_other >= self.quorum {
            ReleaseReply::HeldByOther
        } else if released.is_empty() {
            ReleaseReply::NotHeld
        } else {
            ReleaseReply::Released {
                remaining: released.iter().map(|r| r.0).max().unwrap_or(0),
                token: released.iter().map(|r| r.1).max().unwrap_or(0),
                grant: ended.map_or_else(String::new, |e| e.0.to_owned()),
                latest: ended.map_or_else(String::new, |e| e.1.to_owned()),
            }
        })
    }

    async fn end(&self, ns: &Namespace, name: &Name, lease: Option<&str>, how: GrantEnd) -> Result<Option<Ended>> {
        let replies = self.all(self.op_timeout(), |s| s.end(ns, name, lease, how)).await;
        let answered = self.answered(&replies);
        if answered.is_empty() {
            return Err(self.no_quorum("end", &replies));
        }
        let mut ended: Vec<Ended> = answered.into_iter().flatten().cloned().collect();
        ended.sort_by_key(|e| std::cmp::Reverse(e.token));
        Ok(ended.into_iter().next())
    }

    /// Ends the lease on every node; semaphores are refused in Redlock mode,
    /// so no permit index has entries.
    async fn revoke(&self, ns: &Namespace, lease: &str) -> Result<(Vec<String>, Vec<String>)> {
        let replies = self.all(self.op_timeout(), |s| s.revoke(ns, lease)).await;
        let names: HashSet<String> =
            self.answered(&replies).into_iter().flat_map(|(names, _)| names.iter().cloned()).collect();
        Ok((names.into_iter().collect(), Vec::new()))
    }

    /// Renews on every node; a lease or lock counts as held only on a
    /// majority, and within validity.
    async fn renew(&self, ns: &Namespace, lease: &LeaseId, names: &[String]) -> Result<Renewal> {
        let started = Instant::now();
        let replies = self.all(self.op_timeout(), |s| s.renew(ns, lease, names)).await;
        let answered = self.answered(&replies);
        if answered.len() < self.quorum {
            return Err(Error::QuorumLost(self.no_quorum("renew", &replies).to_string()));
        }
        let mut ttls: Vec<i64> = answered.iter().map(|r| r.ttl_ms).filter(|t| *t > 0).collect();
        ttls.sort_unstable();
        let ttl_ms = if ttls.len() >= self.quorum {
            let ttl = Duration::from_millis(ttls[ttls.len() - self.quorum] as u64);
            Self::valid(ttl, started).as_millis() as i64
        } else {
            0
        };
        let index: HashSet<String> = answered.iter().flat_map(|r| r.index.iter().cloned()).collect();
        let mut per_lock: HashMap<String, Vec<(LockState, u64, i64)>> = HashMap::new();
        for reply in &answered {
            for l in &reply.locks {
                per_lock.entry(l.name.clone()).or_default().push((l.state, l.token, l.ttl_ms));
            }
        }
        let locks = per_lock
            .into_iter()
            .map(|(name, states)| {
                let held = states.iter().filter(|s| s.0 == LockState::Held).count();
                let token = states.iter().map(|s| s.1).max().unwrap_or(0);
                // The strongest end any node kept (GrantEnd's order).
                let ended = states
                    .iter()
                    .filter_map(|s| match s.0 {
                        LockState::Ended(end) => Some(end),
                        _ => None,
                    })
                    .max();
                let state = if held >= self.quorum {
                    LockState::Held
                } else if let Some(end) = ended {
                    LockState::Ended(end)
                } else if held > 0 {
                    LockState::QuorumLost
                } else {
                    LockState::Gone
                };
                LockRenewal { name, state, token, ttl_ms }
            })
            .collect();
        Ok(Renewal { ttl_ms, index: index.into_iter().collect(), locks, ..Renewal::default() })
    }

    async fn unqueue(&self, ns: &Namespace, name: &Name, id: &str) -> Result<()> {
        self.all(self.op_timeout(), |s| s.unqueue(ns, name, id)).await;
        Ok(())
    }

    async fn describe(&self, ns: &Namespace, name: &Name) -> Result<LockInfo> {
        let replies = self.all(self.op_timeout(), |s| s.describe(ns, name)).await;
        let answered = self.answered(&replies);
        if answered.len() < self.quorum {
            return Err(self.no_quorum("describe", &replies));
        }
        let waiters = answered.iter().map(|i| i.waiters).max().unwrap_or(0);
        let mut by_lease: HashMap<&str, Vec<&LockInfo>> = HashMap::new();
        for info in answered.iter().filter(|i| i.held) {
            by_lease.entry(info.lease.as_str()).or_default().push(info);
        }
        let Some(infos) = by_lease.into_values().find(|v| v.len() >= self.quorum) else {
            return Ok(LockInfo { name: name.as_str().to_owned(), waiters, ..LockInfo::default() });
        };
        let mut info = infos[0].clone();
        info.token = infos.iter().map(|i| i.token).max().unwrap_or(0);
        info.ttl_ms = infos.iter().map(|i| i.ttl_ms).min().unwrap_or(0);
        info.waiters = waiters;
        Ok(info)
    }

    /// Pages node by node (cursor `<node>/<node's cursor>`), describing each
    /// name by majority.
    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<LockInfo>, Option<String>)> {
        let (index, inner) = match cursor {
            None => (0usize, None),
            Some(text) => {
                let (i, rest) = text
                    .split_once('/')
                    .ok_or_else(|| Error::invalid("page.cursor", "not a cursor returned by this service"))?;
                let i =
                    i.parse().map_err(|_| Error::invalid("page.cursor", "not a cursor returned by this service"))?;
                (i, (!rest.is_empty()).then(|| rest.to_owned()))
            }
        };
        let Some(node) = self.nodes.get(index) else { return Ok((Vec::new(), None)) };
        let (names, next) = node.store.list_names(ns, prefix, inner.as_deref(), limit).await?;
        let described = join_all(
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
        let next = match next {
            Some(c) => Some(format!("{index}/{c}")),
            None if index + 1 < self.nodes.len() => Some(format!("{}/", index + 1)),
            None => None,
        };
        Ok((locks, next))
    }
}
