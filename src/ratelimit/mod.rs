//! RateLimitService: five algorithms evaluated and charged all-or-nothing
//! in one script (`ratelimit.lua`), refunds, and concurrency slots
//! (`slots.lua`).
//!
//! Token bucket and GCRA share one exact integer meter: the bucket is
//! stored as the time at which it will be full again (a theoretical arrival
//! time, in µs), so refill is continuous and fractional progress is never
//! lost; they differ only in how the limit is specified. The emission
//! interval is rounded up to whole microseconds, so the enforced rate never
//! exceeds the configured one.

pub mod batch;
pub mod grpc;
pub mod policy;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use self::{
    batch::{BatchSettings, Batcher, Call},
    policy::{Failure, Policy, PolicyStore},
};

use crate::{
    error::{Error, Result},
    redis::{KeyBuilder, Name, Namespace, Redis, scripts},
};

/// Subjects: 1–512 bytes.
pub const MAX_SUBJECT_BYTES: usize = 512;
/// Limits per Check.
pub const MAX_LIMITS: usize = 16;
/// Largest count (capacity, rate, burst, limit, cost).
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Longest window or period: 30 days.
pub const MAX_PERIOD_MS: i64 = 30 * 24 * 3600 * 1000;
/// Sliding logs keep one entry per unit: keep them small.
pub const MAX_LOG_LIMIT: u64 = 10_000;
/// Products of counts and times must stay exact in Lua's doubles.
const MAX_PRODUCT: f64 = 4e15;

/// An algorithm and its parameters, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    TokenBucket { capacity: u64, refill_tokens: u64, refill_period_ms: i64 },
    Gcra { rate: u64, period_ms: i64, burst: u64 },
    SlidingLog { limit: u64, window_ms: i64 },
    SlidingWindow { limit: u64, window_ms: i64 },
    FixedWindow { limit: u64, window_ms: i64 },
}

impl Algorithm {
    /// Short word for keys (changing a limit's algorithm starts fresh state).
    pub fn code(&self) -> &'static str {
        match self {
            Algorithm::TokenBucket { .. } => "tb",
            Algorithm::Gcra { .. } => "gcra",
            Algorithm::SlidingLog { .. } => "log",
            Algorithm::SlidingWindow { .. } => "slide",
            Algorithm::FixedWindow { .. } => "fixed",
        }
    }

    /// The limit's size as reported: capacity, burst or limit.
    pub fn size(&self) -> u64 {
        match *self {
            Algorithm::TokenBucket { capacity, .. } => capacity,
            Algorithm::Gcra { burst, .. } => burst,
            Algorithm::SlidingLog { limit, .. }
            | Algorithm::SlidingWindow { limit, .. }
            | Algorithm::FixedWindow { limit, .. } => limit,
        }
    }

    /// The script's (algorithm, a, b).
    pub fn script_args(&self) -> (&'static str, u64, u64) {
        // ⌈period / n⌉ µs per unit: rounding up never exceeds the rate.
        let interval = |period_ms: i64, n: u64| (period_ms as u64 * 1000).div_ceil(n);
        match *self {
            Algorithm::TokenBucket { capacity, refill_tokens, refill_period_ms } => {
                ("meter", interval(refill_period_ms, refill_tokens), capacity)
            }
            Algorithm::Gcra { rate, period_ms, burst } => ("meter", interval(period_ms, rate), burst),
            Algorithm::SlidingLog { limit, window_ms } => ("log", limit, window_ms as u64 * 1000),
            Algorithm::FixedWindow { limit, window_ms } => ("fixed", limit, window_ms as u64 * 1000),
            Algorithm::SlidingWindow { limit, window_ms } => ("slide", limit, window_ms as u64),
        }
    }

    /// Checks every bound; `field` is the request path of the algorithm.
    pub fn validate(&self, field: &str) -> Result<()> {
        let count = |name: &str, v: u64| {
            if v == 0 || v > MAX_COUNT {
                return Err(Error::invalid(
                    format!("{field}.{name}"),
                    format!("must be between 1 and {MAX_COUNT}, got {v}"),
                ));
            }
            Ok(())
        };
        let period = |name: &str, v: i64| {
            if v <= 0 || v > MAX_PERIOD_MS {
                return Err(Error::invalid(
                    format!("{field}.{name}"),
                    format!("must be between 1 and {MAX_PERIOD_MS} ms, got {v}"),
                ));
            }
            Ok(())
        };
        match *self {
            Algorithm::TokenBucket { capacity, refill_tokens, refill_period_ms } => {
                count("capacity", capacity)?;
                count("refill_tokens", refill_tokens)?;
                period("refill_period_ms", refill_period_ms)?;
            }
            Algorithm::Gcra { rate, period_ms, burst } => {
                count("rate", rate)?;
                period("period_ms", period_ms)?;
                count("burst", burst)?;
            }
            Algorithm::SlidingLog { limit, window_ms } => {
                count("limit", limit)?;
                period("window_ms", window_ms)?;
                if limit > MAX_LOG_LIMIT {
                    return Err(Error::invalid(
                        format!("{field}.limit"),
                        format!("a sliding log keeps one entry per unit: at most {MAX_LOG_LIMIT}, got {limit}"),
                    ));
                }
            }
            Algorithm::SlidingWindow { limit, window_ms } | Algorithm::FixedWindow { limit, window_ms } => {
                count("limit", limit)?;
                period("window_ms", window_ms)?;
            }
        }
        let (kind, a, b) = self.script_args();
        let product = match kind {
            "meter" => a as f64 * b as f64,
            "slide" => a as f64 * b as f64,
            _ => 0.0,
        };
        if product > MAX_PRODUCT {
            return Err(Error::invalid(field, "limit × window (or burst × interval) is too large to compute exactly"));
        }
        Ok(())
    }
}

/// A named limit of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub name: String,
    pub algorithm: Algorithm,
}

/// The outcome of one limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    pub name: String,
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// 0 when allowed, -1 when never.
    pub retry_after_ms: i64,
    pub reset_after_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limits: Vec<LimitStatus>,
    /// Shadow mode turned a denial into an allow.
    pub shadow_denied: bool,
    pub source: Source,
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Redis,
    LocalCache,
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Consume,
    Peek,
    /// Charge even when denied: envoyproxy/ratelimit's counting, for
    /// Envoy's rate limit service in its `envoy` semantics.
    Charge,
}

/// Result of AcquireSlot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub acquired: bool,
    pub slot_id: String,
    pub in_flight: u64,
    pub retry_after_ms: i64,
}

/// Remembers denials until their retry-after, so a subject hammering a
/// long limit costs no Redis round trips. Keyed by cost too: a smaller cost
/// may pass where a larger one was denied. Bounded: when full, expired
/// entries are dropped and, if still full, nothing more is remembered.
/// (namespace, policy, subject, cost).
type CacheKey = (String, String, String, u64);

#[derive(Default)]
struct DenyCache {
    entries: Mutex<HashMap<CacheKey, (Instant, Vec<LimitStatus>)>>,
}

impl DenyCache {
    fn get(&self, key: &CacheKey) -> Option<(Duration, Vec<LimitStatus>)> {
        let mut map = self.entries.lock().ok()?;
        let (until, statuses) = map.get(key)?;
        let left = until.checked_duration_since(Instant::now());
        match left {
            Some(left) if !left.is_zero() => Some((left, statuses.clone())),
            _ => {
                map.remove(key);
                None
            }
        }
    }

    fn put(&self, key: CacheKey, until: Instant, statuses: Vec<LimitStatus>, max: usize) {
        let Ok(mut map) = self.entries.lock() else { return };
        if map.len() >= max {
            let now = Instant::now();
            map.retain(|_, (t, _)| *t > now);
            if map.len() >= max {
                return;
            }
        }
        map.insert(key, (until, statuses));
    }

    /// A refund may make a remembered denial wrong.
    fn forget(&self, ns: &str, policy: &str, subject: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|k, _| !(k.0 == ns && k.1 == policy && k.2 == subject));
        }
    }
}

/// Deny-cache settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub entries: usize,
    pub min_retry: Duration,
}

/// The rate-limit domain.
pub struct RateLimits {
    redis: Redis,
    batcher: Batcher,
    keys: KeyBuilder,
    policies: Arc<PolicyStore>,
    cache: DenyCache,
    cache_settings: CacheSettings,
}

impl RateLimits {
    pub fn new(
        redis: Redis,
        keys: KeyBuilder,
        policies: Arc<PolicyStore>,
        cache_settings: CacheSettings,
        batch: BatchSettings,
    ) -> Self {
        let batcher = Batcher::new(redis.clone(), batch);
        RateLimits { redis, batcher, keys, policies, cache: DenyCache::default(), cache_settings }
    }

    /// A named policy, or NOT_FOUND naming it.
    pub fn policy(&self, name: &str) -> Result<Arc<Policy>> {
        self.policies.get(name).ok_or_else(|| Error::NotFound(format!("policy {name:?}")))
    }

    /// Checks `subject` against a named policy: its rule for the subject,
    /// shadow mode, failure policy and the deny cache.
    pub async fn check_policy(
        &self,
        ns: &Namespace,
        subject: &Name,
        policy: &Policy,
        cost: u64,
        mode: Mode,
    ) -> Result<Decision> {
        let rule = policy.rule_for(subject.as_str());
        let cache_key = (ns.as_str().to_owned(), policy.name.clone(), subject.as_str().to_owned(), cost);
        let use_cache = self.cache_settings.enabled && mode == Mode::Consume && cost > 0;
        let label = policy.name.clone();

        let mut decision = match use_cache.then(|| self.cache.get(&cache_key)).flatten() {
            Some((left, mut statuses)) => {
                metrics::counter!("coord_ratelimit_cache_hits_total", "policy" => label.clone()).increment(1);
                for status in statuses.iter_mut().filter(|s| !s.allowed && s.retry_after_ms > 0) {
                    status.retry_after_ms = left.as_millis().max(1) as i64;
                }
                Decision { allowed: false, limits: statuses, shadow_denied: false, source: Source::LocalCache }
            }
            None => {
                match tokio::time::timeout(policy.timeout, self.evaluate(ns, subject, &rule.limits, cost, mode)).await {
                    Ok(Ok(decision)) => decision,
                    Ok(Err(e)) if !e.is_unavailable() => return Err(e),
                    // Too slow or unreachable: the policy decides.
                    failed => {
                        let reason = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {:?}", policy.timeout),
                        };
                        let open = policy.failure == Failure::Open;
                        tracing::debug!(policy = %policy.name, %reason, open, "rate limit decided without Redis");
                        metrics::counter!("coord_ratelimit_fallbacks_total", "policy" => label.clone(), "mode" => if open { "open" } else { "closed" })
                        .increment(1);
                        let source = if open { Source::FailOpen } else { Source::FailClosed };
                        Decision { allowed: open, limits: Vec::new(), shadow_denied: false, source }
                    }
                }
            }
        };

        if use_cache && decision.source == Source::Redis && !decision.allowed {
            // Remember only denials that cannot change for a while.
            let waits: Vec<i64> = decision.limits.iter().filter(|s| !s.allowed).map(|s| s.retry_after_ms).collect();
            let wait = waits.iter().copied().min().unwrap_or(0);
            if wait > 0
                && waits.iter().all(|w| *w > 0)
                && Duration::from_millis(wait as u64) >= self.cache_settings.min_retry
            {
                let until = Instant::now() + Duration::from_millis(wait as u64);
                self.cache.put(cache_key, until, decision.limits.clone(), self.cache_settings.entries);
            }
        }
        if rule.shadow && !decision.allowed && decision.source != Source::FailClosed {
            decision.allowed = true;
            decision.shadow_denied = true;
        }
        record(&label, &decision);
        Ok(decision)
    }

    /// Refunds one limit of a policy's rule for `subject`.
    pub async fn refund_policy(
        &self,
        ns: &Namespace,
        subject: &Name,
        policy: &Policy,
        limit_name: &str,
        amount: u64,
    ) -> Result<LimitStatus> {
        let rule = policy.rule_for(subject.as_str());
        let limit = rule.limits.iter().find(|l| l.name == limit_name).ok_or_else(|| {
            Error::invalid("limit_name", format!("policy {:?} has no limit {limit_name:?}", policy.name))
        })?;
        let status = self.refund(ns, subject, limit, amount).await?;
        self.cache.forget(ns.as_str(), &policy.name, subject.as_str());
        Ok(status)
    }

    /// Validates a subject.
    pub fn subject(value: &str) -> Result<Name> {
        if value.len() > MAX_SUBJECT_BYTES {
            return Err(Error::invalid(
                "subject",
                format!("must be at most {MAX_SUBJECT_BYTES} bytes, got {}", value.len()),
            ));
        }
        Name::parse("subject", value)
    }

    /// Decides `cost` against every limit, all-or-nothing.
    pub async fn check(
        &self,
        ns: &Namespace,
        subject: &Name,
        limits: &[Limit],
        cost: u64,
        mode: Mode,
    ) -> Result<Decision> {
        if limits.is_empty() || limits.len() > MAX_LIMITS {
            return Err(Error::invalid("limits", format!("must hold 1 to {MAX_LIMITS} limits, got {}", limits.len())));
        }
        for (i, a) in limits.iter().enumerate() {
            if limits[..i].iter().any(|b| b.name == a.name) {
                return Err(Error::invalid(format!("limits[{i}].name"), format!("{:?} is used twice", a.name)));
            }
        }
        if cost > MAX_COUNT {
            return Err(Error::invalid("cost", format!("must be at most {MAX_COUNT}, got {cost}")));
        }
        let decision = self.evaluate(ns, subject, limits, cost, mode).await?;
        record("_inline", &decision);
        Ok(decision)
    }

    async fn evaluate(
        &self,
        ns: &Namespace,
        subject: &Name,
        limits: &[Limit],
        cost: u64,
        mode: Mode,
    ) -> Result<Decision> {
        let mode = match (cost, mode) {
            (0, _) | (_, Mode::Peek) => "peek",
            (_, Mode::Consume) => "consume",
            (_, Mode::Charge) => "charge",
        };
        self.run(ns, subject, limits, cost, mode).await
    }

    /// Gives `amount` back to one limit.
    pub async fn refund(&self, ns: &Namespace, subject: &Name, limit: &Limit, amount: u64) -> Result<LimitStatus> {
        if amount == 0 || amount > MAX_COUNT {
            return Err(Error::invalid("amount", format!("must be between 1 and {MAX_COUNT}, got {amount}")));
        }
        let decision = self.run(ns, subject, std::slice::from_ref(limit), amount, "refund").await?;
        decision.limits.into_iter().next().ok_or_else(|| Error::Internal("refund returned no limit".into()))
    }

    async fn run(
        &self,
        ns: &Namespace,
        subject: &Name,
        limits: &[Limit],
        cost: u64,
        mode: &'static str,
    ) -> Result<Decision> {
        let base = self.keys.resource(ns, "rl", subject);
        let keys: Vec<String> = limits.iter().map(|l| base.child(l.algorithm.code(), &l.name)).collect();
        let call = Call {
            keys,
            cost,
            mode,
            // Only sliding logs name their entries; the id is Redis work.
            id: if limits.iter().any(|l| matches!(l.algorithm, Algorithm::SlidingLog { .. })) {
                uuid::Uuid::new_v4().simple().to_string()
            } else {
                String::new()
            },
            limits: limits.iter().map(|l| l.algorithm.script_args()).collect(),
        };
        let verdict = self.batcher.decide(call).await?;
        let all = verdict.first().copied().unwrap_or(0);
        let limits = limits
            .iter()
            .zip(verdict.get(1..).unwrap_or_default().chunks(4))
            .map(|(limit, v)| {
                let get = |i: usize| v.get(i).copied().unwrap_or(0);
                LimitStatus {
                    name: limit.name.clone(),
                    allowed: get(0) == 1,
                    limit: limit.algorithm.size(),
                    remaining: get(1).max(0) as u64,
                    retry_after_ms: get(2),
                    reset_after_ms: get(3).max(0),
                }
            })
            .collect();
        Ok(Decision { allowed: all == 1, limits, shadow_denied: false, source: Source::Redis })
    }

    /// Takes (or renews, with `slot_id`) one of `max` slots for `ttl`.
    pub async fn acquire_slot(
        &self,
        ns: &Namespace,
        subject: &Name,
        max: u64,
        ttl: Duration,
        slot_id: Option<&str>,
    ) -> Result<Slot> {
        if max == 0 || max > MAX_COUNT {
            return Err(Error::invalid("max_in_flight", format!("must be between 1 and {MAX_COUNT}, got {max}")));
        }
        if ttl.is_zero() || ttl > Duration::from_millis(MAX_PERIOD_MS as u64) {
            return Err(Error::invalid("ttl_ms", format!("must be between 1 and {MAX_PERIOD_MS} ms")));
        }
        let id = match slot_id {
            Some(id) if id.len() > 128 => return Err(Error::invalid("slot_id", "must be at most 128 bytes")),
            Some(id) => id.to_owned(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let key = self.keys.resource(ns, "slots", subject);
        let reply: Vec<i64> = self
            .redis
            .invoke(&scripts::SLOTS, |inv| {
                inv.key(key.as_str()).arg("acquire").arg(&id).arg(max).arg(ttl.as_millis() as u64);
            })
            .await?;
        let acquired = reply.first() == Some(&1);
        metrics::counter!("coord_ratelimit_slots_total", "outcome" => if acquired { "acquired" } else { "denied" })
            .increment(1);
        Ok(Slot {
            acquired,
            slot_id: if acquired { id } else { String::new() },
            in_flight: reply.get(1).copied().unwrap_or(0).max(0) as u64,
            retry_after_ms: if acquired { 0 } else { reply.get(2).copied().unwrap_or(0).max(0) },
        })
    }

    pub async fn release_slot(&self, ns: &Namespace, subject: &Name, slot_id: &str) -> Result<bool> {
        if slot_id.is_empty() || slot_id.len() > 128 {
            return Err(Error::invalid("slot_id", "must be 1 to 128 bytes"));
        }
        let key = self.keys.resource(ns, "slots", subject);
        let reply: Vec<i64> = self
            .redis
            .invoke(&scripts::SLOTS, |inv| {
                inv.key(key.as_str()).arg("release").arg(slot_id).arg(0).arg(0);
            })
            .await?;
        Ok(reply.first() == Some(&1))
    }
}

/// Counts a decision by policy and outcome.
fn record(policy: &str, decision: &Decision) {
    let outcome = if decision.shadow_denied {
        "shadow_denied"
    } else if !decision.allowed {
        "denied"
    } else if decision.limits.iter().any(|l| l.remaining * 5 <= l.limit) {
        "near_limit"
    } else {
        "allowed"
    };
    metrics::counter!("coord_ratelimit_decisions_total", "policy" => policy.to_owned(), "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_validated_by_field() {
        let err = Algorithm::TokenBucket { capacity: 0, refill_tokens: 1, refill_period_ms: 1000 }
            .validate("limits[0].token_bucket")
            .unwrap_err();
        assert!(err.to_string().starts_with("limits[0].token_bucket.capacity:"), "{err}");
        let err = Algorithm::FixedWindow { limit: 5, window_ms: -1 }.validate("limits[1].fixed_window").unwrap_err();
        assert!(err.to_string().starts_with("limits[1].fixed_window.window_ms:"), "{err}");
        let err = Algorithm::SlidingLog { limit: 20_000, window_ms: 1000 }.validate("l").unwrap_err();
        assert!(err.to_string().contains("10000"), "{err}");
        assert!(Algorithm::Gcra { rate: 3, period_ms: 1000, burst: 3 }.validate("g").is_ok());
    }

    #[test]
    fn emission_interval_rounds_up() {
        // 3 per second: 333,334 µs, so 3 never take less than a second.
        let (_, t, b) = Algorithm::Gcra { rate: 3, period_ms: 1000, burst: 3 }.script_args();
        assert_eq!((t, b), (333_334, 3));
    }
}
