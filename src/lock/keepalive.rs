//! The KeepAlive stream, transport-free: lease ids in, renewals and
//! LockLost events out.
//!
//! The stream remembers, per lease, the locks and semaphore / read-write
//! grants it has seen held, so it can tell their holder when one is gone:
//! - a renewal finds it gone or ended (expired, force-released, revoked);
//! - another instance force-releases it or revokes its lease (pub/sub event);
//! - no renewal has succeeded for a whole TTL (Redis unreachable, or the
//!   client stopped renewing): the lock must be presumed lost. The deadline
//!   counts from when the last successful renewal was *sent*, which is no
//!   later than when Redis extended the TTL, so the event never comes late.
//!
//! Ending the stream revokes nothing. The stream ends with an error, never
//! silently, when the server shuts down (UNAVAILABLE: reconnect elsewhere)
//! or a request cannot be decoded (INVALID_ARGUMENT).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    GrantEnd, HoldKind, LeaseId, LockState, Locks, LostReason, PermitRef, events::GrantEnded, semaphore::PermitRenewal,
    store::LockRenewal,
};
use crate::{
    error::{Error, Result},
    redis::Namespace,
};

/// What the stream sends to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Renewed {
        lease: String,
        ttl_ms: i64,
    },
    /// `token`: the grant's fencing token (a permit id for semaphores and
    /// read/write locks).
    Lost {
        kind: HoldKind,
        name: String,
        lease: String,
        reason: LostReason,
        token: u64,
    },
}

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct Tracked {
    id: LeaseId,
    /// Locks seen held, with their tokens.
    locks: HashMap<String, u64>,
    /// Grants already ended (lost and reported, or released), so pub/sub
    /// echoes and late renewals neither report nor track them again.
    reported: HashSet<(String, u64)>,
    /// Semaphore and read/write lock grants seen held, and those ended.
    permits: HashSet<PermitRef>,
    permits_ended: HashSet<PermitRef>,
    /// When the locks must be presumed lost without a successful renewal.
    expires: Instant,
    /// Why the last renewal attempt failed, if it did.
    failing: Option<LostReason>,
}

struct Renewed {
    lease: String,
    sent_at: Instant,
    /// Answer the client (false for follow-ups of newly seen locks).
    reply: bool,
    result: Result<super::store::Renewal>,
}

/// Runs one stream until the client ends it, a request is bad (sent as the
/// stream's final error), or the server shuts down (likewise).
pub async fn run(
    locks: Arc<Locks>,
    ns: Namespace,
    mut requests: mpsc::Receiver<Result<String>>,
    out: mpsc::Sender<Result<StreamEvent>>,
    shutdown: CancellationToken,
) {
    let stream = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<GrantEnded>();
    let mut leases: HashMap<String, Tracked> = HashMap::new();
    let mut pending = FuturesUnordered::new();
    metrics::gauge!("coord_lock_keepalive_streams").increment(1.0);

    let renew = |lease: LeaseId, names: Vec<String>, permits: Vec<PermitRef>, reply: bool| {
        let locks = locks.clone();
        let ns = ns.clone();
        async move {
            let sent_at = Instant::now();
            let result = locks.renew_lease(&ns, &lease, &names, &permits).await;
            Renewed { lease: lease.as_str().to_owned(), sent_at, reply, result }
        }
    };

    loop {
        let next_deadline = leases.values().filter(|l| l.holds_any()).map(|l| l.expires).min();
        let deadline = async {
            match next_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut events = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = out.send(Err(Error::ShuttingDown)).await;
                break;
            }
            // The response side is gone (client away, or the stream was
            // ended for it, e.g. its credentials were revoked).
            _ = out.closed() => break,
            request = requests.recv() => {
                let text = match request {
                    None => break,
                    Some(Ok(text)) => text,
                    Some(Err(e)) => {
                        let _ = out.send(Err(e)).await;
                        break;
                    }
                };
                let Ok(id) = LeaseId::parse(&text) else {
                    // Not a lease coord issued: it cannot be alive.
                    events.push(StreamEvent::Renewed { lease: text, ttl_ms: 0 });
                    if send_all(&out, events).await.is_err() { break }
                    continue;
                };
                let tracked = leases.entry(text.clone()).or_insert_with(|| {
                    locks.hub.watch(ns.as_str(), &text, stream, ended_tx.clone());
                    metrics::gauge!("coord_lock_leases_tracked").increment(1.0);
                    Tracked {
                        id: id.clone(),
                        locks: HashMap::new(),
                        reported: HashSet::new(),
                        permits: HashSet::new(),
                        permits_ended: HashSet::new(),
                        expires: Instant::now(),
                        failing: None,
                    }
                });
                let names = tracked.locks.keys().cloned().collect();
                let permits = tracked.permits.iter().cloned().collect();
                pending.push(renew(tracked.id.clone(), names, permits, true));
            }
            Some(done) = pending.next() => {
                let Some(tracked) = leases.get_mut(&done.lease) else { continue };
                match done.result {
                    Err(e) => {
                        tracked.failing = Some(match e {
                            crate::error::Error::QuorumLost(_) => LostReason::QuorumLost,
                            _ => LostReason::BackendUnavailable,
                        });
                        tracing::debug!(lease = %done.lease, error = %e, "renewal failed");
                    }
                    Ok(renewal) => {
                        tracked.failing = None;
                        let gone = renewal.ttl_ms <= 0;
                        let mut reasons: HashMap<String, LostReason> = HashMap::new();
                        for LockRenewal { name, state, token, .. } in &renewal.locks {
                            // Held once by this lease: seen by this stream, or
                            // listed in the lease's index (follow-ups).
                            let ours = tracked.locks.contains_key(name) || !done.reply;
                            match state {
                                // A grant that ended since this renewal was
                                // sent (e.g. released) is not tracked again.
                                LockState::Held if tracked.reported.contains(&(name.clone(), *token)) => {}
                                LockState::Held if !gone => {
                                    tracked.locks.insert(name.clone(), *token);
                                }
                                LockState::Ended(GrantEnd::Released) => {
                                    tracked.locks.remove(name);
                                }
                                // Held by a gone lease, or gone: expired, if
                                // it was ours; a private lease whose lock was
                                // never seen is simply gone (TTL 0).
                                LockState::Held | LockState::Gone if !ours => {}
                                LockState::Held => {
                                    reasons.insert(name.clone(), LostReason::Expired);
                                }
                                lost => {
                                    if let Some(reason) = lost.lost() {
                                        reasons.insert(name.clone(), reason);
                                    }
                                }
                            }
                        }
                        // Grants: expired or gone only if seen held; a
                        // tombstone saying forced or revoked is this lease's
                        // loss whether or not the stream saw it held.
                        let mut permit_reasons: HashMap<PermitRef, LostReason> = HashMap::new();
                        for PermitRenewal { permit, state, .. } in &renewal.permits {
                            match state {
                                LockState::Held if tracked.permits_ended.contains(permit) => {}
                                LockState::Held if !gone => {
                                    tracked.permits.insert(permit.clone());
                                }
                                LockState::Ended(GrantEnd::Released) => {
                                    tracked.permits.remove(permit);
                                }
                                LockState::Held | LockState::Gone if !tracked.permits.contains(permit) => {}
                                LockState::Held => {
                                    permit_reasons.insert(permit.clone(), LostReason::Expired);
                                }
                                lost => {
                                    if let Some(reason) = lost.lost() {
                                        permit_reasons.insert(permit.clone(), reason);
                                    }
                                }
                            }
                        }
                        if gone {
                            // Everything the lease held is lost with it.
                            for name in tracked.locks.keys() {
                                reasons.entry(name.clone()).or_insert(LostReason::Expired);
                            }
                            for permit in &tracked.permits {
                                permit_reasons.entry(permit.clone()).or_insert(LostReason::Expired);
                            }
                        } else {
                            tracked.expires = done.sent_at + Duration::from_millis(renewal.ttl_ms as u64);
                            // Locks granted under this lease elsewhere since
                            // the last renewal: renew them now too.
                            let known: HashSet<&String> = renewal.locks.iter().map(|l| &l.name).collect();
                            let new: Vec<String> = renewal
                                .index
                                .iter()
                                .filter(|n| !known.contains(n) && !tracked.locks.contains_key(*n))
                                .cloned()
                                .collect();
                            if !new.is_empty() {
                                pending.push(renew(tracked.id.clone(), new, Vec::new(), false));
                            }
                        }
                        for (name, reason) in reasons {
                            let token = tracked.locks.remove(&name).unwrap_or_else(|| {
                                renewal.locks.iter().find(|l| l.name == name).map(|l| l.token).unwrap_or(0)
                            });
                            if let Some(event) = lost(tracked, name, reason, token) {
                                events.push(event);
                            }
                        }
                        for (permit, reason) in permit_reasons {
                            events.extend(lost_permit(tracked, permit, reason));
                        }
                        if done.reply {
                            events.push(StreamEvent::Renewed { lease: done.lease.clone(), ttl_ms: renewal.ttl_ms.max(0) });
                        }
                    }
                }
            }
            Some(ended) = ended_rx.recv() => {
                if let (Some(kind), Some(tracked)) = (ended.kind.sem(), leases.get_mut(&ended.lease)) {
                    let permit = PermitRef { kind, name: ended.name.clone(), id: ended.token };
                    match ended.lost() {
                        None => {
                            tracked.permits.remove(&permit);
                            tracked.permits_ended.insert(permit);
                        }
                        Some(reason) => events.extend(lost_permit(tracked, permit, reason)),
                    }
                } else if let Some(tracked) = leases.get_mut(&ended.lease)
                    // An end of an earlier grant says nothing of a later one.
                    && tracked.locks.get(&ended.name).is_none_or(|t| *t <= ended.token)
                {
                    tracked.locks.remove(&ended.name);
                    match ended.lost() {
                        // Released by its holder: nothing was lost.
                        None => {
                            tracked.reported.insert((ended.name.clone(), ended.token));
                        }
                        Some(reason) => {
                            if let Some(event) = lost(tracked, ended.name.clone(), reason, ended.token) {
                                events.push(event);
                            }
                        }
                    }
                }
            }
            _ = deadline => {
                let now = Instant::now();
                for tracked in leases.values_mut().filter(|l| l.expires <= now && l.holds_any()) {
                    let reason = tracked.failing.unwrap_or(LostReason::Expired);
                    for (name, token) in std::mem::take(&mut tracked.locks) {
                        if let Some(event) = lost(tracked, name, reason, token) {
                            events.push(event);
                        }
                    }
                    let held: Vec<PermitRef> = tracked.permits.iter().cloned().collect();
                    for permit in held {
                        events.extend(lost_permit(tracked, permit, reason));
                    }
                }
            }
        }
        if send_all(&out, events).await.is_err() {
            break;
        }
    }

    for lease in leases.keys() {
        locks.hub.unwatch(ns.as_str(), lease, stream);
    }
    metrics::gauge!("coord_lock_leases_tracked").decrement(leases.len() as f64);
    metrics::gauge!("coord_lock_keepalive_streams").decrement(1.0);
}

/// A LockLost event, unless this loss was already reported.
fn lost(tracked: &mut Tracked, name: String, reason: LostReason, token: u64) -> Option<StreamEvent> {
    if !tracked.reported.insert((name.clone(), token)) {
        return None;
    }
    metrics::counter!("coord_lock_lost_total", "reason" => reason.as_str()).increment(1);
    Some(StreamEvent::Lost { kind: HoldKind::Lock, name, lease: tracked.id.as_str().to_owned(), reason, token })
}

/// A LockLost event for a grant of the lease, once.
fn lost_permit(tracked: &mut Tracked, permit: PermitRef, reason: LostReason) -> Option<StreamEvent> {
    tracked.permits.remove(&permit);
    if !tracked.permits_ended.insert(permit.clone()) {
        return None;
    }
    let kind = HoldKind::from(permit.kind);
    metrics::counter!("coord_semaphore_lost_total", "kind" => permit.kind.key_kind(), "reason" => reason.as_str())
        .increment(1);
    Some(StreamEvent::Lost { kind, name: permit.name, lease: tracked.id.as_str().to_owned(), reason, token: permit.id })
}

impl Tracked {
    fn holds_any(&self) -> bool {
        !self.locks.is_empty() || !self.permits.is_empty()
    }
}

async fn send_all(out: &mpsc::Sender<Result<StreamEvent>>, events: Vec<StreamEvent>) -> Result<(), ()> {
    for event in events {
        out.send(Ok(event)).await.map_err(|_| ())?;
    }
    Ok(())
}
