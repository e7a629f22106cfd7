//! The guard's background task: renews the private lease on a KeepAlive
//! stream and decides when the lock is lost.
//!
//! The lease lives in Redis and any coord instance can renew it, so a
//! broken stream is not a lost lock: the task opens a new stream (after a
//! short backoff) and goes on renewing. The lock is lost when coord says
//! so (a LockLost event, or a renewal answering TTL 0), or once a whole TTL
//! has passed since the last renewal coord confirmed: by then the lease may
//! have expired in Redis and been granted to someone else.

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep, sleep_until},
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

use super::{LockClient, Lost, State, Stop, millis};
use crate::{
    backoff::Backoff,
    pb::{KeepAliveRequest, LockLostReason, keep_alive_response::Event},
};

/// First pause before reopening a broken stream; doubles per failure.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause (also at most a quarter of the TTL, so that a short lease
/// gets several attempts before it runs out).
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Fastest renewal cadence, whatever the TTL.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

pub(super) struct Keeper {
    pub client: LockClient,
    pub name: String,
    pub hold: super::Hold,
    pub lease_id: String,
    pub fencing_token: u64,
    /// The lock's TTL as coord last reported it; paces renewals.
    pub ttl: Duration,
    /// Until when the lock surely holds: the send time of the last
    /// renewal coord confirmed, plus the TTL it reported.
    pub confirmed_until: Instant,
    /// Deadline of the Release call.
    pub timeout: Duration,
    /// Why renewals have not been confirmed since the last one that was.
    pub trouble: Option<String>,
}

/// How one KeepAlive stream ended.
enum Session {
    Lost(Lost),
    /// Worth another stream: the lock may well still be held.
    Broken {
        why: String,
        renewed: bool,
    },
}

impl Keeper {
    /// Renews until the guard stops it; reports a loss on `state`; releases
    /// the lock on the way out when the guard was dropped.
    pub(super) async fn run(mut self, state: watch::Sender<State>, mut stop: oneshot::Receiver<Stop>) {
        let outcome = tokio::select! {
            biased;
            stop = &mut stop => Err(stop),
            lost = self.keep() => Ok(lost),
        };
        let stop = match outcome {
            Err(stop) => stop,
            Ok(lost) => {
                tracing::warn!(lock = %self.name, lease = %self.lease_id, %lost, "lock lost");
                state.send_replace(State::Lost(lost));
                // Still release when the guard goes: after BACKEND_UNAVAILABLE
                // the lock may in fact still be held, and Release is safe.
                stop.await
            }
        };
        state.send_if_modified(|s| {
            let held = matches!(s, State::Held);
            if held {
                *s = State::Stopped;
            }
            held
        });
        // A guard that is dropped always sends; a closed channel means the
        // same.
        if matches!(stop, Ok(Stop::Release) | Err(_)) {
            match self.client.release_call(&self.name, self.hold, &self.lease_id, self.timeout).await {
                Ok(status) => tracing::debug!(lock = %self.name, ?status, "released on drop"),
                Err(status) => tracing::debug!(lock = %self.name, error = %status.message(), "release on drop failed"),
            }
        }
    }

    /// Renews across as many streams as it takes; returns once the lock is
    /// lost.
    async fn keep(&mut self) -> Lost {
        let mut backoff = Backoff::new(BACKOFF_MIN, (self.ttl / 4).clamp(BACKOFF_MIN, BACKOFF_MAX));
        loop {
            match self.session().await {
                Session::Lost(lost) => return lost,
                Session::Broken { why, renewed } => {
                    tracing::debug!(lock = %self.name, reason = %why, "keepalive stream broken; reopening");
                    self.trouble = Some(why);
                    if renewed {
                        backoff.reset();
                    }
                }
            }
            tokio::select! {
                biased;
                _ = sleep_until(self.confirmed_until) => return self.expired(),
                _ = sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// One KeepAlive stream, renewing every third of the TTL.
    async fn session(&mut self) -> Session {
        let broken = |why: String, renewed| Session::Broken { why, renewed };
        let (tx, rx) = mpsc::channel(1);
        let request = self.client.request(ReceiverStream::new(rx));
        let mut raw = self.client.raw();
        // Bounded, so that a connection that hangs is replaced by a new one.
        let opened = tokio::select! {
            biased;
            _ = sleep_until(self.confirmed_until) => return Session::Lost(self.expired()),
            opened = tokio::time::timeout(self.interval(), raw.keep_alive(request)) => opened,
        };
        let mut events = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return broken(format!("opening the keepalive stream: {}", status.message()), false),
            Err(_) => return broken("opening the keepalive stream timed out".to_owned(), false),
        };
        // The send time of the one renewal in flight. Answers carry no
        // request id, so only one at a time can be matched to its send time,
        // which is what bounds the lease from below.
        let mut outstanding: Option<Instant> = None;
        let mut renewed = false;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = sleep_until(self.confirmed_until) => {
                    if outstanding.is_some() && self.trouble.is_none() {
                        self.trouble = Some("a renewal went unanswered".to_owned());
                    }
                    return Session::Lost(self.expired());
                }
                message = events.next() => match message.map(|m| m.map(|r| r.event)) {
                    None => return broken("the keepalive stream ended".to_owned(), renewed),
                    Some(Err(status)) => return broken(format!("keepalive stream: {}", status.message()), renewed),
                    Some(Ok(Some(Event::LockLost(lost)))) if lost.lease_id == self.lease_id && lost.name == self.name => {
                        let fencing_token = if lost.fencing_token != 0 { lost.fencing_token } else { self.fencing_token };
                        let detail = "reported by coord".to_owned();
                        return Session::Lost(Lost { reason: lost.reason(), fencing_token, detail });
                    }
                    Some(Ok(Some(Event::Renewed(r)))) if r.lease_id == self.lease_id => {
                        if r.ttl_ms <= 0 {
                            let detail = "coord found the lease gone".to_owned();
                            return Session::Lost(Lost { reason: LockLostReason::Expired, fencing_token: self.fencing_token, detail });
                        }
                        if let Some(sent) = outstanding.take() {
                            // Redis renewed the lease after `sent`: it holds
                            // at least the reported TTL from then.
                            self.ttl = millis(r.ttl_ms);
                            self.confirmed_until = self.confirmed_until.max(sent + self.ttl);
                            self.trouble = None;
                            renewed = true;
                        }
                    }
                    Some(Ok(_)) => {}
                },
                _ = sleep_until(next) => {
                    if outstanding.is_some() {
                        // coord answers failed renewals with silence (it
                        // reports BACKEND_UNAVAILABLE later), or the
                        // connection is stuck: try afresh.
                        return broken("a renewal went unanswered".to_owned(), renewed);
                    }
                    if tx.try_send(KeepAliveRequest { lease_id: self.lease_id.clone() }).is_err() {
                        return broken("the keepalive stream closed".to_owned(), renewed);
                    }
                    outstanding = Some(Instant::now());
                    next = Instant::now() + self.interval();
                }
            }
        }
    }

    fn interval(&self) -> Duration {
        (self.ttl / 3).max(MIN_INTERVAL)
    }

    /// The verdict once a whole TTL passed without a confirmed renewal.
    fn expired(&self) -> Lost {
        let (reason, detail) = match &self.trouble {
            Some(why) => (
                LockLostReason::BackendUnavailable,
                format!("no renewal confirmed for a whole TTL ({:?}); last problem: {why}", self.ttl),
            ),
            None => (LockLostReason::Expired, format!("no renewal confirmed for a whole TTL ({:?})", self.ttl)),
        };
        Lost { reason, fencing_token: self.fencing_token, detail }
    }
}
