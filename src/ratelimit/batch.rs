//! Adaptive batching of rate-limit decisions: concurrent calls that go to
//! the same Redis node (the same slot on a cluster, since one script's keys
//! must share a slot) are coalesced into one `ratelimit.lua` invocation,
//! which decides each request independently and in order.
//!
//! No timer: a call goes out at once when fewer than `in_flight` batches of
//! its slot are in flight; calls arriving meanwhile queue and leave together
//! (up to `max_size`) as soon as one comes back. A call whose caller gave up
//! before its batch left is dropped, so it charges nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use redis::{Value, cluster_routing::Slot};
use tokio::sync::{Semaphore, mpsc, oneshot};

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

pub struct Batcher {
    redis: Redis,
    settings: BatchSettings,
    /// Slot (None on a single node) → its queue.
    queues: Mutex<HashMap<Option<Slot>, mpsc::UnboundedSender<Job>>>,
}

impl Batcher {
    pub fn new(redis: Redis, settings: BatchSettings) -> Self {
        Batcher { redis, settings, queues: Mutex::default() }
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
        self.queue(slot).send(Job { call, reply }).map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::Internal("the rate-limit batch ended without an answer".into()))?
    }

    fn queue(&self, slot: Option<Slot>) -> mpsc::UnboundedSender<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(slot)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(self.redis.clone(), rx, self.settings));
                tx
            })
            .clone()
    }
}

/// A slot's batcher: takes what has queued (up to `max_size`) whenever a
/// batch may go, and sends it.
async fn run(redis: Redis, mut jobs: mpsc::UnboundedReceiver<Job>, settings: BatchSettings) {
    let slots = Arc::new(Semaphore::new(settings.in_flight.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Some(first) = jobs.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < settings.max_size {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A caller that gave up (its deadline) is not charged.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!("coord_ratelimit_batch_size").record(batch.len() as f64);
        let redis = redis.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (calls, replies): (Vec<Call>, Vec<_>) = batch.into_iter().map(|j| (j.call, j.reply)).unzip();
            match invoke(&redis, calls).await {
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
        });
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
