//! Leader election on the semaphore machinery.
//!
//! An election `election:{name}` is a semaphore of one permit: the grant is
//! the leadership, its permit id the term (a fencing token, ≥ Redis TIME in
//! µs, so terms increase across data loss), and the queue of waiters the
//! candidates, served FIFO and woken by notification when the leader goes.
//! Leases, KeepAlive renewal, LockLost (kind Leadership) and cancellation
//! are the semaphore's. The election hash adds `leader` (the term), `value`
//! and `rev`, a count of changes; every change (elected, proclaimed,
//! vacated) is published with the new state (prelude `el_*`), so observers
//! see each one in order, and read the state when pub/sub may have missed
//! some or a leader's TTL runs out (expiry publishes nothing by itself).

use std::{sync::Arc, time::Duration};

use redis::{FromRedisValue, ParsingError, Value};
use tokio::{sync::mpsc, time::Instant};

use super::{
    GrantEnd, LeaseId, Locks, SemKind,
    semaphore::SemEnded,
    store::{Store, list, malformed, uint},
};
use crate::{
    error::{Error, Result},
    redis::{Name, Namespace, scripts},
};

/// The largest leader value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// An observer reads the state at least this often, whatever it hears.
const RESYNC: Duration = Duration::from_secs(10);

/// The leader of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub value: Vec<u8>,
    pub lease: String,
    pub owner: String,
    /// Remaining TTL when read or published.
    pub ttl_ms: i64,
}

/// An election's state: its leader, or none after `term`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionState {
    /// The leader's term, or the last term granted (0: none known).
    pub term: u64,
    /// Changes of the election so far (resets with its keys).
    pub rev: u64,
    pub leader: Option<LeaderInfo>,
}

impl ElectionState {
    /// The scripts' encoding (prelude `el_state` / `el_none`):
    /// `L <term> <rev> <ttl> <lease length> <lease><owner length> <owner><value>`
    /// or `N <term> <rev>`.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        fn number(b: &mut &[u8]) -> Option<u64> {
            let end = b.iter().position(|&c| c == b' ').unwrap_or(b.len());
            let n = std::str::from_utf8(&b[..end]).ok()?.parse().ok()?;
            *b = b.get(end + 1..).unwrap_or_default();
            Some(n)
        }
        fn text(b: &mut &[u8], len: u64) -> Option<String> {
            let len = usize::try_from(len).ok()?;
            let s = String::from_utf8(b.get(..len)?.to_vec()).ok()?;
            *b = &b[len..];
            Some(s)
        }
        let (tag, mut b) = (bytes.get(..2)?, bytes.get(2..)?);
        let (term, rev) = (number(&mut b)?, number(&mut b)?);
        let leader = match tag {
            b"N " if b.is_empty() => None,
            b"L " => {
                let ttl_ms = i64::try_from(number(&mut b)?).ok()?;
                let len = number(&mut b)?;
                let lease = text(&mut b, len)?;
                let len = number(&mut b)?;
                let owner = text(&mut b, len)?;
                Some(LeaderInfo { value: b.to_vec(), lease, owner, ttl_ms })
            }
            _ => return None,
        };
        Some(ElectionState { term, rev, leader })
    }

    /// A published change, `o|<key length>|<key><state>`: the election's
    /// key and its new state.
    pub fn parse_event(payload: &[u8]) -> Option<(&str, ElectionState)> {
        let rest = payload.strip_prefix(b"o|")?;
        let bar = rest.iter().position(|&c| c == b'|')?;
        let len: usize = std::str::from_utf8(&rest[..bar]).ok()?.parse().ok()?;
        let rest = &rest[bar + 1..];
        let key = std::str::from_utf8(rest.get(..len)?).ok()?;
        Some((key, ElectionState::parse(&rest[len..])?))
    }
}

/// el_leader.lua's reply: the state and the live candidates.
struct LeaderReply(ElectionState, u32);

impl FromRedisValue for LeaderReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = list(v, "el_leader")?;
        match items.as_slice() {
            [state, candidates] => {
                let bytes = Vec::<u8>::from_redis_value_ref(state)?;
                let state = ElectionState::parse(&bytes).ok_or_else(|| malformed("el_leader", &items))?;
                Ok(LeaderReply(state, uint(candidates)?))
            }
            _ => Err(malformed("el_leader", &items)),
        }
    }
}

impl Store {
    async fn el_leader(&self, ns: &Namespace, name: &Name) -> Result<(ElectionState, u32)> {
        let keys = self.sem_keys(ns, SemKind::Election, name);
        let LeaderReply(state, candidates) = self
            .redis
            .invoke(&scripts::EL_LEADER, |inv| {
                keys.push(inv, 6);
            })
            .await?;
        Ok((state, candidates))
    }

    /// The new TTL, or None when `term` does not lead under `lease`.
    async fn el_proclaim(
        &self,
        ns: &Namespace,
        name: &Name,
        term: u64,
        lease: &str,
        value: &[u8],
    ) -> Result<Option<i64>> {
        let keys = self.sem_keys(ns, SemKind::Election, name);
        let reply: Vec<i64> = self
            .redis
            .invoke(&scripts::EL_PROCLAIM, |inv| {
                keys.push(inv, 3);
                inv.arg(term)
                    .arg(lease)
                    .arg(value)
                    .arg(&*self.channel.for_key(keys.base.as_str()))
                    .arg(keys.base.as_str());
            })
            .await?;
        Ok(match reply.as_slice() {
            [1, ttl] => Some(*ttl),
            _ => None,
        })
    }
}

/// What an observer has seen, to pass on each change once and in order.
#[derive(Default)]
struct Seen {
    /// (term, rev, no leader) of the newest state heard or read.
    newest: Option<(u64, u64, bool)>,
    /// What it last passed on: (term, lease, value) or None for no leader.
    shown: Option<Option<(u64, String, Vec<u8>)>>,
}

impl Seen {
    /// Whether `s` is news: newer than anything seen (a late message is
    /// not), and different from what was last passed on.
    fn news(&mut self, s: &ElectionState) -> bool {
        let order = (s.term, s.rev, s.leader.is_none());
        // No term at all: the keys are gone (expired, or Redis lost its
        // data); only a read says so, never a stale message.
        let wiped = s.leader.is_none() && s.term == 0;
        match self.newest {
            Some(newest) if order <= newest && !wiped => return false,
            Some(newest) if wiped => self.newest = Some(newest.max(order)),
            _ => self.newest = Some(order),
        }
        let content = s.leader.as_ref().map(|l| (s.term, l.lease.clone(), l.value.clone()));
        if self.shown.as_ref() == Some(&content) {
            return false;
        }
        self.shown = Some(content);
        true
    }

    /// Before passing on `s`: the vacancy it skipped, if the last leader
    /// shown held another term. A new term is granted only after the old
    /// one ended, so there was a "no leader" in between, which a read can
    /// overtake (on a cluster a message crosses the bus, a read does not).
    fn skipped_vacancy(&self, s: &ElectionState) -> Option<ElectionState> {
        match (&self.shown, &s.leader) {
            (Some(Some((term, ..))), Some(_)) if *term != s.term => {
                Some(ElectionState { term: *term, rev: s.rev.saturating_sub(1), leader: None })
            }
            _ => None,
        }
    }
}

impl Locks {
    /// The current leader (or none) and the candidates waiting.
    pub async fn leader(&self, ns: &Namespace, name: &Name) -> Result<(ElectionState, u32)> {
        self.counted_locks_available(SemKind::Election)?;
        self.keys.el_leader(ns, name).await
    }

    /// The leader of `term` under `lease` sets its value; its new TTL.
    pub async fn proclaim(&self, ns: &Namespace, name: &Name, term: u64, lease: &LeaseId, value: &[u8]) -> Result<i64> {
        self.counted_locks_available(SemKind::Election)?;
        check_value(value)?;
        self.keys.el_proclaim(ns, name, term, lease.as_str(), value).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "term {term} of election {:?} is not led by lease {} (any more)",
                name.as_str(),
                lease.as_str()
            ))
        })
    }

    /// Ends the leadership of `term` held by `lease`: whether it was held.
    pub async fn resign(&self, ns: &Namespace, name: &Name, term: u64, lease: &LeaseId) -> Result<bool> {
        let released = self.sem_release(ns, SemKind::Election, name, Some(term), lease).await?;
        Ok(matches!(released, super::SemReleaseOutcome::Released { .. }))
    }

    /// Ends the current leadership (only if of `term`, when given): the
    /// term, lease and owner it ended.
    pub async fn force_resign(
        &self,
        ns: &Namespace,
        name: &Name,
        term: Option<u64>,
    ) -> Result<Option<(u64, String, String)>> {
        self.counted_locks_available(SemKind::Election)?;
        let term = match term {
            Some(term) => term,
            None => match self.keys.el_leader(ns, name).await?.0 {
                ElectionState { term, leader: Some(_), .. } => term,
                _ => return Ok(None),
            },
        };
        Ok(match self.keys.sem_end(ns, SemKind::Election, name, Some(term), "", GrantEnd::Forced).await? {
            SemEnded::Ended { permit, lease, owner, .. } => {
                self.local_permit_end(ns, SemKind::Election, name, &lease, GrantEnd::Forced, permit);
                Some((permit, lease, owner))
            }
            _ => None,
        })
    }

    /// The election's state now, then each change in order, until the
    /// receiver is dropped or a read fails (the error is the last item).
    pub fn observe(self: &Arc<Self>, ns: Namespace, name: Name) -> Result<mpsc::Receiver<Result<ElectionState>>> {
        self.counted_locks_available(SemKind::Election)?;
        let key = self.keys.keys.resource(&ns, SemKind::Election.key_kind(), &name);
        // Registered before the first read, so nothing falls in between.
        let (registration, mut heard) = self.hub.observe(key.as_str());
        let (tx, rx) = mpsc::channel(16);
        let locks = self.clone();
        tokio::spawn(async move {
            let _registration = registration;
            let _gauge = ObserverGauge::new();
            let mut seen = Seen::default();
            let mut read_at = Instant::now();
            loop {
                let published = tokio::select! {
                    _ = tx.closed() => return,
                    _ = locks.shutdown.cancelled() => return,
                    h = heard.recv() => match h {
                        Some(state) => state,
                        None => return,
                    },
                    _ = tokio::time::sleep_until(read_at) => None,
                };
                let state = match published {
                    Some(state) => state,
                    None => match locks.keys.el_leader(&ns, &name).await {
                        Ok((state, _)) => state,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    },
                };
                // Read again when the leader's TTL may have run out
                // (expiry publishes nothing), and now and then anyway.
                let mut next = RESYNC;
                if let Some(leader) = &state.leader {
                    next = next.min(Duration::from_millis(leader.ttl_ms.max(0) as u64 + 20));
                }
                read_at = Instant::now() + next;
                let skipped = seen.skipped_vacancy(&state);
                if seen.news(&state) {
                    if let Some(vacancy) = skipped {
                        metrics::counter!("coord_election_vacancies_observed_total").increment(1);
                        if tx.send(Ok(vacancy)).await.is_err() {
                            return;
                        }
                    }
                    if state.leader.is_none() {
                        metrics::counter!("coord_election_vacancies_observed_total").increment(1);
                    }
                    if tx.send(Ok(state)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Leader values: at most [`MAX_VALUE_BYTES`].
pub fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::invalid("value", format!("must be at most {MAX_VALUE_BYTES} bytes, got {}", value.len())));
    }
    Ok(())
}

/// `coord_election_observers`: Observe streams open on this instance.
struct ObserverGauge;

impl ObserverGauge {
    fn new() -> Self {
        metrics::gauge!("coord_election_observers").increment(1.0);
        ObserverGauge
    }
}

impl Drop for ObserverGauge {
    fn drop(&mut self) {
        metrics::gauge!("coord_election_observers").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(term: u64, rev: u64, value: &[u8]) -> ElectionState {
        let l = LeaderInfo { value: value.to_vec(), lease: "l1".into(), owner: "o".into(), ttl_ms: 1000 };
        ElectionState { term, rev, leader: Some(l) }
    }

    fn none(term: u64, rev: u64) -> ElectionState {
        ElectionState { term, rev, leader: None }
    }

    #[test]
    fn states_parse_back_whatever_leases_owners_and_values_hold() {
        let state = b"L 1796000000000001 7 1500 10 q0 1.e.a b3 o 1value with spaces| and \xff bytes";
        let s = ElectionState::parse(state).unwrap();
        assert_eq!((s.term, s.rev), (1_796_000_000_000_001, 7));
        let l = s.leader.unwrap();
        assert_eq!((l.lease.as_str(), l.owner.as_str(), l.ttl_ms), ("q0 1.e.a b", "o 1", 1500));
        assert_eq!(l.value, b"value with spaces| and \xff bytes");
        assert_eq!(ElectionState::parse(b"N 5 2"), Some(none(5, 2)));
        let event = b"o|5|k|e|yN 5 2";
        assert_eq!(ElectionState::parse_event(event), Some(("k|e|y", none(5, 2))));
        for bad in [&b""[..], b"N", b"N 5", b"N 5 2 x", b"L 1 2 3 99 short", b"X 1 2", b"o|9|k", b"L 1 2 3 2 l1x "] {
            assert_eq!(ElectionState::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn observers_pass_each_change_once_in_order_and_drop_late_ones() {
        let mut seen = Seen::default();
        assert!(seen.news(&none(0, 0)), "the first state is shown");
        assert!(seen.news(&leader(10, 1, b"a")));
        assert!(!seen.news(&leader(10, 1, b"a")), "heard and read: once");
        assert!(seen.news(&leader(10, 2, b"b")), "proclaimed");
        assert!(!seen.news(&leader(10, 1, b"a")), "a late message is old news");
        // Expired but not reclaimed reads as none at the same rev; the
        // reclaim's own event then says nothing new.
        assert!(seen.news(&none(10, 2)));
        assert!(!seen.news(&none(10, 3)));
        assert!(seen.news(&leader(20, 4, b"c")));
        assert!(!seen.news(&none(10, 3)), "a vacancy of an older term is stale");
        // Redis lost everything: no term at all is news once.
        assert!(seen.news(&none(0, 0)));
        assert!(!seen.news(&none(0, 0)));
        assert!(!seen.news(&leader(20, 4, b"c")), "still older than what was seen");
        assert!(seen.news(&leader(30, 1, b"d")), "a new term after the loss");
    }

    #[test]
    fn a_leader_read_past_an_unheard_vacancy_shows_the_vacancy_first() {
        let mut seen = Seen::default();
        assert!(seen.skipped_vacancy(&leader(10, 1, b"a")).is_none(), "nothing shown yet");
        assert!(seen.news(&leader(10, 1, b"a")));
        assert!(seen.skipped_vacancy(&leader(10, 2, b"a2")).is_none(), "a proclaim is no vacancy");
        let skipped = seen.skipped_vacancy(&leader(20, 3, b"b")).expect("a vacancy between terms");
        assert_eq!((skipped.term, skipped.leader.is_none()), (10, true));
        assert!(seen.news(&leader(20, 3, b"b")));
        // The vacancy's own message arriving late is old news.
        assert!(!seen.news(&none(10, 2)));
        assert!(seen.news(&none(20, 4)));
        assert!(seen.skipped_vacancy(&leader(30, 5, b"c")).is_none(), "the vacancy was shown");
    }
}
