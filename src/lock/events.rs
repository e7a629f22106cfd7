//! In-process fan-out of lock events from the pub/sub reader: every grant
//! end ([`GrantEnd`]) wakes one of the lock's local waiters and reaches the
//! KeepAlive streams of its lease; a semaphore's wake-up names the waiters
//! that now fit, and wakes exactly those.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use tokio::sync::{Notify, mpsc};

use super::{GrantEnd, HoldKind, LostReason, SemKind, election::ElectionState};
use crate::redis::pubsub::Handler;

/// A grant of `lease` ended (the event of release.lua and lock_end.lua).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantEnded {
    /// A lock, or a semaphore or read/write lock grant (`token` is then its
    /// permit id).
    pub kind: HoldKind,
    /// The lock's key, whose waiters wake.
    pub key: String,
    pub ns: String,
    pub lease: String,
    pub name: String,
    pub state: GrantEnd,
    pub token: u64,
}

impl GrantEnded {
    /// What the holder lost, or None when it released the lock itself.
    pub fn lost(&self) -> Option<LostReason> {
        self.state.lost()
    }

    /// The scripts' event: `e|<state>|<token>|<lease length>|<lease><key>`
    /// (lease ids and keys may hold any byte, so the lease is counted).
    pub fn parse(payload: &[u8]) -> Option<GrantEnded> {
        let text = std::str::from_utf8(payload.strip_prefix(b"e|")?).ok()?;
        let mut parts = text.splitn(4, '|');
        let state = GrantEnd::parse(parts.next()?.as_bytes())?;
        let token = parts.next()?.parse().ok()?;
        let len: usize = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let (lease, key) = (rest.get(..len)?, rest.get(len..)?);
        let (ns, name) = crate::redis::keys::resource_of(key)?;
        let kind = match key.split(':').nth(2)? {
            "lock" => HoldKind::Lock,
            other => SemKind::from_key_kind(other)?.into(),
        };
        Some(GrantEnded { kind, key: key.to_owned(), ns, lease: lease.to_owned(), name, state, token })
    }
}

/// A semaphore's wake-up, `s|<key length>|<key><id> <id> ...`: the ids of
/// the waiters that now fit.
fn woken_waiters(payload: &[u8]) -> Option<Vec<&str>> {
    let text = std::str::from_utf8(payload.strip_prefix(b"s|")?).ok()?;
    let (len, rest) = text.split_once('|')?;
    let ids = rest.get(len.parse::<usize>().ok()?..)?;
    Some(ids.split(' ').filter(|id| !id.is_empty()).collect())
}

/// A semaphore waiter's registration with the hub (see
/// [`LockEvents::permit_waiter`]); dropping it unregisters.
pub struct PermitWaiter {
    hub: Arc<LockEvents>,
    id: String,
    pub notify: Arc<Notify>,
}

impl Drop for PermitWaiter {
    fn drop(&mut self) {
        if let Ok(mut map) = self.hub.permit_waiters.lock() {
            map.remove(&self.id);
        }
    }
}

/// An election observer's registration (see [`LockEvents::observe`]);
/// dropping it unregisters.
pub struct Observer {
    hub: Arc<LockEvents>,
    key: String,
    id: u64,
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Ok(mut map) = self.hub.observers.lock()
            && let Some(list) = map.get_mut(&self.key)
        {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

/// What an observer hears: a published state, or None when pub/sub
/// reconnected (states may have been missed: read again).
pub type Heard = Option<ElectionState>;

/// Election key → its observers (registration id, channel).
type ElectionObservers = HashMap<String, Vec<(u64, mpsc::UnboundedSender<Heard>)>>;

/// namespace → lease → the streams that renew it.
type LeaseWatchers = HashMap<String, HashMap<String, Vec<(u64, mpsc::UnboundedSender<GrantEnded>)>>>;

#[derive(Default)]
pub struct LockEvents {
    /// Lock key → the Notify its local waiters park on.
    waiters: Mutex<HashMap<String, Weak<Notify>>>,
    /// Semaphore waiter id → its Notify (see `permit_waiter`).
    permit_waiters: Mutex<HashMap<String, Weak<Notify>>>,
    leases: Mutex<LeaseWatchers>,
    /// Election key → its local observers.
    observers: Mutex<ElectionObservers>,
    next_observer: std::sync::atomic::AtomicU64,
}

impl LockEvents {
    /// The Notify for `key`'s local waiters (see `released`).
    pub fn waiter(&self, key: &str) -> Arc<Notify> {
        let Ok(mut map) = self.waiters.lock() else { return Arc::new(Notify::new()) };
        if let Some(notify) = map.get(key).and_then(Weak::upgrade) {
            return notify;
        }
        // Drop entries nobody waits on any more before adding one.
        map.retain(|_, w| w.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        map.insert(key.to_owned(), Arc::downgrade(&notify));
        notify
    }

    /// Registers semaphore waiter `id` (random, so one per Acquire): its
    /// Notify is woken when a release names it, until the registration is
    /// dropped.
    pub fn permit_waiter(self: &Arc<Self>, id: &str) -> PermitWaiter {
        let notify = Arc::new(Notify::new());
        if let Ok(mut map) = self.permit_waiters.lock() {
            map.insert(id.to_owned(), Arc::downgrade(&notify));
        }
        PermitWaiter { hub: self.clone(), id: id.to_owned(), notify }
    }

    /// Registers an observer of election `key`: it hears every state the
    /// scripts publish for it, in order, until the registration is dropped.
    pub fn observe(self: &Arc<Self>, key: &str) -> (Observer, mpsc::UnboundedReceiver<Heard>) {
        let id = self.next_observer.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut map) = self.observers.lock() {
            map.entry(key.to_owned()).or_default().push((id, tx));
        }
        (Observer { hub: self.clone(), key: key.to_owned(), id }, rx)
    }

    /// Wakes one local waiter of `key`: only one can get the lock, and
    /// waking all of them turns every release into a stampede of attempts.
    /// (A woken waiter that gives up passes the wake-up on: tokio forwards
    /// an unconsumed `notify_one` to the next waiter.)
    pub fn released(&self, key: &str) {
        let notify = self.waiters.lock().ok().and_then(|map| map.get(key).and_then(Weak::upgrade));
        if let Some(notify) = notify {
            notify.notify_one();
        }
    }

    /// Streams renewing `lease` in `ns` receive its grant ends.
    pub fn watch(&self, ns: &str, lease: &str, stream: u64, tx: mpsc::UnboundedSender<GrantEnded>) {
        if let Ok(mut map) = self.leases.lock() {
            let entry = map.entry(ns.to_owned()).or_default().entry(lease.to_owned()).or_default();
            if !entry.iter().any(|(id, _)| *id == stream) {
                entry.push((stream, tx));
            }
        }
    }

    pub fn unwatch(&self, ns: &str, lease: &str, stream: u64) {
        if let Ok(mut map) = self.leases.lock()
            && let Some(leases) = map.get_mut(ns)
        {
            if let Some(entry) = leases.get_mut(lease) {
                entry.retain(|(id, _)| *id != stream);
                if entry.is_empty() {
                    leases.remove(lease);
                }
            }
            if leases.is_empty() {
                map.remove(ns);
            }
        }
    }

    /// Sends the grant end `event()` describes to the streams renewing
    /// `lease` in `ns`; built only when one does.
    pub fn ended(&self, ns: &str, lease: &str, event: impl FnOnce() -> GrantEnded) {
        let senders: Vec<_> = match self.leases.lock() {
            Ok(map) => map
                .get(ns)
                .and_then(|leases| leases.get(lease))
                .map(|v| v.iter().map(|(_, tx)| tx.clone()).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if senders.is_empty() {
            return;
        }
        let event = event();
        for tx in senders {
            let _ = tx.send(event.clone());
        }
    }
}

impl Handler for LockEvents {
    fn on_message(&self, payload: &[u8]) {
        if let Some((key, state)) = ElectionState::parse_event(payload) {
            if let Ok(map) = self.observers.lock()
                && let Some(list) = map.get(key)
            {
                for (_, tx) in list {
                    let _ = tx.send(Some(state.clone()));
                }
            }
            return;
        }
        if let Some(ids) = woken_waiters(payload) {
            let Ok(map) = self.permit_waiters.lock() else { return };
            for notify in ids.into_iter().filter_map(|id| map.get(id).and_then(Weak::upgrade)) {
                notify.notify_one();
            }
            return;
        }
        match GrantEnded::parse(payload) {
            Some(event) => {
                self.released(&event.key);
                self.ended(&event.ns, &event.lease, || event.clone());
            }
            None => tracing::warn!(payload = %String::from_utf8_lossy(payload), "malformed lock event"),
        }
    }

    fn on_connect(&self) {
        // Releases published while disconnected were lost: every waiter
        // re-checks its lock.
        let mut notifies: Vec<_> = match self.waiters.lock() {
            Ok(map) => map.values().filter_map(Weak::upgrade).collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(map) = self.permit_waiters.lock() {
            notifies.extend(map.values().filter_map(Weak::upgrade));
        }
        for notify in notifies {
            notify.notify_waiters();
        }
        // Election changes too: observers read the state again.
        if let Ok(map) = self.observers.lock() {
            for (_, tx) in map.values().flatten() {
                let _ = tx.send(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;
    use crate::redis::{KeyBuilder, Name, Namespace};

    #[test]
    fn grant_end_events_parse_back_whatever_the_names_hold() {
        let keys = KeyBuilder::new("coord").unwrap();
        for (ns, name) in [("default", "orders"), ("a|b", "x:{y}|%3A|z"), ("ünï", "e|released|1|2|")] {
            let key = keys.resource(&Namespace::parse(ns).unwrap(), "lock", &Name::parse("name", name).unwrap());
            let lease = format!("p0123456789abcdef0123456789abcdef.{name}");
            let payload = format!("e|forced|1796000000000001|{}|{lease}{}", lease.len(), key.as_str());
            let event = GrantEnded::parse(payload.as_bytes()).expect(name);
            assert_eq!(event.key, key.as_str());
            assert_eq!((event.ns.as_str(), event.name.as_str(), event.lease.as_str()), (ns, name, lease.as_str()));
            assert_eq!((event.state, event.token), (GrantEnd::Forced, 1_796_000_000_000_001));
            assert_eq!(event.kind, HoldKind::Lock);
        }
        let sem = keys.resource(&Namespace::default(), "rwlock", &Name::parse("name", "a b|c").unwrap());
        let payload = format!("e|revoked|7|3|l00{}", sem.as_str());
        let event = GrantEnded::parse(payload.as_bytes()).unwrap();
        assert_eq!((event.kind, event.name.as_str(), event.lease.as_str()), (HoldKind::RwLock, "a b|c", "l00"));
        let wake = format!("s|{}|{}w1 w2", sem.as_str().len(), sem.as_str());
        assert_eq!(woken_waiters(wake.as_bytes()), Some(vec!["w1", "w2"]));
        assert_eq!(woken_waiters(b"s|99|short"), None);

        // A registered waiter named by a wake-up is woken; dropped, it is gone.
        let hub = Arc::new(LockEvents::default());
        let waiter = hub.permit_waiter("w2");
        hub.on_message(wake.as_bytes());
        assert!(waiter.notify.notified().now_or_never().is_some(), "w2 was woken");
        drop(waiter);
        assert!(hub.permit_waiters.lock().unwrap().is_empty());
        for bad in ["", "e|", "e|gone|1|0|coord:default:lock:{a}", "e|released|x|0|k", "e|released|1|99|short"] {
            assert_eq!(GrantEnded::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
