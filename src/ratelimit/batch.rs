//! Adaptive batching of rate-limit decisions: concurrent calls that go to
//! the same Redis node (the same slot on a cluster, since one script's keys
//! must share a slot) are coalesced into one `ratelimit.lua` invocation,
//! which decides each request independently and in order.
//!
//! No timer and no batching task: a call whose slot has fewer than
//! `in_flight` batches in flight (and nobody queued) leaves at once as a
//! batch of one. Calls arriving meanwhile queue; whenever a batch comes
//! back, what has queued (up to `max_size`) leaves together. A queued call
//! whose caller gave up before its batch left is dropped, so it charges
//! nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use redis::{Value, cluster_routing::Slot};
use tokio::sync::oneshot;

use crate::{
    error::{Error, Result},
    redis::{Redis, Topology, scripts},
};

/// One request's decision: `{all, then per limit: allowed, remaining,
/// retry, reset}` (see ratelimit.lua).
pub type Verdict = Vec<i64>;

/// One request of a batch.
pub struct Call {
    /// Its limits' state keys (one hash tag).
    pub keys: Vec<String>,
    pub cost: u64,
    pub mode: &'static str,
    pub id: String,
    /// (algorithm, a, b) per limit.
    pub limits: Vec<(&'static str, u64, u64)>,
}

struct Job {
    call: Call,
    reply: oneshot::Sender<Result<Verdict>>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most calls per script invocation; 1 turns batching off.
    pub max_size: usize,
    /// Batches of one slot in flight at once.
    pub in_flight: usize,
}

/// One slot's batches in flight and the calls waiting for the next.
#[derive(Default)]
struct Lane {
    in_flight: usize,
    queued: Vec<Job>,
}

type Lanes = Arc<Mutex<HashMap<Option<Slot>, Lane>>>;

pub struct Batcher {
    redis: Redis,
    settings: BatchSettings,
    /// Slot (None on a single node) → its lane.
    lanes: Lanes,
}

impl Batcher {
    pub fn new(redis: Redis, settings: BatchSettings) -> Self {
        Batcher { redis, settings, lanes: Lanes::default() }
    }

    /// Decides one call, alone or in a batch.
    pub async fn decide(&self, call: Call) -> Result<Verdict> {
        if self.settings.max_size <= 1 {
            return one(invoke(&self.redis, vec![call]).await);
        }
        let slot = match self.redis.topology() {
            Topology::Single => None,
            Topology::Cluster => call.keys.first().map(Slot::for_key),
        };
        let (reply, answer) = oneshot::channel();
        let job = Job { call, reply };
        let batch = {
            let mut lanes = lock(&self.lanes);
            let lane = lanes.entry(slot).or_default();
            if lane.in_flight < self.settings.in_flight.max(1) && lane.queued.is_empty() {
                lane.in_flight += 1;
                Some(vec![job])
            } else {
                lane.queued.push(job);
                None
            }
        };
        if let Some(batch) = batch {
            // A batch of one, sent at once. Its own task holds the in-flight
            // place until Redis answers, even if this caller gives up, so a
            // stalled Redis never has more than `in_flight` batches per slot.
            let turn = Turn { redis: self.redis.clone(), lanes: self.lanes.clone(), slot, settings: self.settings };
            tokio::spawn(send(turn, batch));
        }
        answer.await.map_err(|_| Error::Internal("the rate-limit batch ended without an answer".into()))?
    }
}

fn lock(lanes: &Lanes) -> std::sync::MutexGuard<'_, HashMap<Option<Slot>, Lane>> {
    lanes.lock().unwrap_or_else(|e| e.into_inner())
}

/// An in-flight place of a slot. When it ends, the calls queued meanwhile
/// leave as the next batch (which takes the place over), or the place is
/// given back.
struct Turn {
    redis: Redis,
    lanes: Lanes,
    slot: Option<Slot>,
    settings: BatchSettings,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let batch = {
            let mut lanes = lock(&self.lanes);
            let Some(lane) = lanes.get_mut(&self.slot) else { return };
            // A caller that gave up (its deadline) is not charged.
            lane.queued.retain(|job| !job.reply.is_closed());
            if lane.queued.is_empty() {
                lane.in_flight = lane.in_flight.saturating_sub(1);
                if lane.in_flight == 0 {
                    lanes.remove(&self.slot);
                }
                return;
            }
            let take = lane.queued.len().min(self.settings.max_size);
            lane.queued.drain(..take).collect::<Vec<Job>>()
        };
        // (Outside a runtime, e.g. while it shuts down, the batch's callers
        // hear that it ended without an answer.)
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let next =
            Turn { redis: self.redis.clone(), lanes: self.lanes.clone(), slot: self.slot, settings: self.settings };
        runtime.spawn(send(next, batch));
    }
}

/// Sends `batch` in `turn`'s place and answers its callers; the place
/// passes on when `turn` is dropped.
async fn send(turn: Turn, batch: Vec<Job>) {
    metrics::histogram!("coord_ratelimit_batch_size").record(batch.len() as f64);
    let (calls, replies): (Vec<Call>, Vec<_>) = batch.into_iter().map(|j| (j.call, j.reply)).unzip();
    match invoke(&turn.redis, calls).await {
        Ok(verdicts) => {
            for (reply, verdict) in replies.into_iter().zip(verdicts) {
                let _ = reply.send(verdict);
            }
        }
        Err(e) => {
            // Every call of the batch failed the same way.
            let (unavailable, text) = (e.is_unavailable(), e.to_string());
            for reply in replies {
                let _ = reply.send(Err(if unavailable {
                    Error::Unavailable(text.clone())
                } else {
                    Error::Internal(text.clone())
                }));
            }
        }
    }
}

/// The only verdict of a batch of one.
fn one(result: Result<Vec<Result<Verdict>>>) -> Result<Verdict> {
    result?.into_iter().next().ok_or_else(|| Error::Internal("ratelimit.lua returned no verdict".into()))?
}

/// One ratelimit.lua call for `calls`: a verdict (or error) per call.
async fn invoke(redis: &Redis, calls: Vec<Call>) -> Result<Vec<Result<Verdict>>> {
    let replies: Vec<Value> = redis
        .invoke(&scripts::RATELIMIT, |inv| {
            for call in &calls {
                for key in &call.keys {
                    inv.key(key);
                }
            }
            inv.arg(calls.len());
            for call in &calls {
                inv.arg(call.cost).arg(call.mode).arg(&call.id).arg(call.limits.len());
                for (kind, a, b) in &call.limits {
                    inv.arg(*kind).arg(*a).arg(*b);
                }
            }
        })
        .await?;
    if replies.len() != calls.len() {
        return Err(Error::Internal(format!("ratelimit.lua: {} verdicts for {} calls", replies.len(), calls.len())));
    }
    Ok(replies.into_iter().map(verdict).collect())
}

fn verdict(value: Value) -> Result<Verdict> {
    let Value::Array(items) = value else {
        return Err(Error::Internal(format!("ratelimit.lua: malformed verdict {value:?}")));
    };
    match items.as_slice() {
        [Value::Int(-1), message] => Err(Error::Internal(format!("ratelimit.lua: {message:?}"))),
        _ => items
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                other => Err(Error::Internal(format!("ratelimit.lua: malformed verdict item {other:?}"))),
            })
            .collect(),
    }
}
