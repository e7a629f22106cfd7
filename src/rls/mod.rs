//! Envoy's global rate limit service (`envoy.service.ratelimit.v3`), served
//! by coord as a drop-in for envoyproxy/ratelimit: its YAML configuration
//! ([`config`]), its matching, its answers; the counting is coord's
//! ([`crate::ratelimit`]), so one Redis call per descriptor, decided on
//! Redis `TIME`, batched with every other Check.
//!
//! Where coord differs from envoyproxy/ratelimit by default (README "Envoy
//! rate limit service"): a denied hit charges nothing, and a request that
//! is over limit on one descriptor charges none of the others (their hits
//! are refunded), so a caller that retries is not punished twice.

pub mod config;
pub mod grpc;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::future::join_all;

use self::config::{DomainStore, Matched, Rule};
use crate::{
    error::{Error, Result},
    ratelimit::{Limit, LimitStatus, Mode, RateLimits},
    redis::{Name, Namespace},
};

/// Descriptors in one request.
pub const MAX_DESCRIPTORS: usize = 64;
/// Entries in one descriptor.
pub const MAX_ENTRIES: usize = 32;

/// A rate limit's unit of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// As envoyproxy/ratelimit reads a YAML unit: any case; None for
    /// anything else (including "unknown" and "").
    pub fn parse(text: &str) -> Option<Unit> {
        Some(match text.to_ascii_lowercase().as_str() {
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "year" => Unit::Year,
            _ => return None,
        })
    }

    /// Seconds per unit, as envoyproxy/ratelimit counts them (a month is
    /// 30 days, a year 365); windows are aligned to multiples of it since
    /// the epoch.
    pub fn seconds(self) -> i64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }
}

/// The answer when Redis does not answer within `timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// A gRPC error (UNAVAILABLE), as envoyproxy/ratelimit answers: Envoy's
    /// `failure_mode_deny` decides.
    #[default]
    Error,
    /// OK.
    Open,
    /// OVER_LIMIT for every descriptor with a limit.
    Closed,
}

/// Header names for `RateLimit-*` response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    pub limit: String,
    pub remaining: String,
    pub reset: String,
}

/// How hits are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Semantics {
    /// A denied hit charges nothing, and a request over limit on one
    /// descriptor charges none of the others.
    #[default]
    Coord,
    /// envoyproxy/ratelimit's numbers: every hit is charged to every
    /// descriptor's counter, admitted or not, each descriptor on its own.
    Envoy,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub failure: Failure,
    pub timeout: Duration,
    pub semantics: Semantics,
    pub headers: Option<HeaderNames>,
}

/// One request descriptor.
#[derive(Debug, Clone, Default)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    /// A limit that replaces the configured one.
    pub limit: Option<(u32, Unit)>,
    /// Overrides the request's hits; Some(0) checks without charging.
    pub hits: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub domain: String,
    pub descriptors: Vec<Descriptor>,
    /// 0 means 1.
    pub hits_addend: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLimit {
    pub requests_per_unit: u32,
    pub unit: Unit,
    pub name: String,
}

/// One descriptor's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub over: bool,
    pub limit: Option<CurrentLimit>,
    pub remaining: u32,
    pub reset: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub over: bool,
    pub statuses: Vec<Status>,
    pub headers: Vec<(String, String)>,
}

/// What one descriptor is checked against.
enum Plan {
    /// No rule (or replaced): OK, nothing counted.
    Free,
    /// `unlimited: true`: OK with remaining u32::MAX, nothing counted.
    Unlimited,
    /// A rule to count against; `metric` labels its metrics.
    Count { rule: Arc<Rule>, subject: Name, limit: Option<Limit>, hits: u64, metric: String },
}

/// The service's domain.
pub struct Rls {
    limits: Arc<RateLimits>,
    domains: Arc<DomainStore>,
    settings: Settings,
}

impl Rls {
    pub fn new(limits: Arc<RateLimits>, domains: Arc<DomainStore>, settings: Settings) -> Self {
        Rls { limits, domains, settings }
    }

    pub async fn should_rate_limit(&self, ns: &Namespace, req: Request) -> Result<Response> {
        validate(&req)?;
        let domains = self.domains.current();
        let default_hits = if req.hits_addend == 0 { 1 } else { u64::from(req.hits_addend) };
        let mut matched: Vec<Option<Matched>> = req
            .descriptors
            .iter()
            .map(|d| match d.limit {
                // Envoy's override applies in configured domains only.
                Some((n, unit)) if domains.has_domain(&req.domain) => Some(Matched {
                    rule: Arc::new(Rule {
                        // Keys only: one metric series per override shape,
                        // not per value (envoyproxy/ratelimit#275).
                        full_key: full_key(&req.domain, &keys_only(&d.entries)),
                        requests_per_unit: n,
                        unit,
                        name: String::new(),
                        unlimited: false,
                        shadow: false,
                        quota: false,
                        replaces: Vec::new(),
                        detailed_metric: false,
                        algorithm: config::AlgorithmName::FixedWindow,
                    }),
                    counter: d.entries.clone(),
                }),
                _ => domains.limit_for(&req.domain, &d.entries),
            })
            .collect();
        // `replaces`: a matched rule cancels the named ones.
        let replaced: Vec<String> = matched.iter().flatten().flat_map(|m| m.rule.replaces.clone()).collect();
        for m in &mut matched {
            if m.as_ref().is_some_and(|m| !m.rule.name.is_empty() && replaced.contains(&m.rule.name)) {
                *m = None;
            }
        }
        let plans = matched
            .into_iter()
            .zip(&req.descriptors)
            .enumerate()
            .map(|(i, (m, d))| {
                let Some(m) = m else { return Ok(Plan::Free) };
                if m.rule.unlimited {
                    return Ok(Plan::Unlimited);
                }
                let subject = subject(&req.domain, &m.counter)
                    .map_err(|e| Error::invalid(format!("descriptors[{i}]"), e.to_string()))?;
                let limit = m.rule.algorithm().map(|algorithm| Limit { name: m.rule.unit.word().into(), algorithm });
                // Values in metric labels only where the rule asks for them.
                let metric =
                    if m.rule.detailed_metric { full_key(&req.domain, &m.counter) } else { m.rule.full_key.clone() };
                Ok(Plan::Count { rule: m.rule, subject, limit, hits: d.hits.unwrap_or(default_hits), metric })
            })
            .collect::<Result<Vec<_>>>()?;

        let mode = match self.settings.semantics {
            Semantics::Coord => Mode::Consume,
            Semantics::Envoy => Mode::Charge,
        };
        let checks = plans.iter().map(|plan| async move {
            match plan {
                Plan::Count { subject, limit: Some(limit), hits, .. } => {
                    Some(self.limits.check(ns, subject, std::slice::from_ref(limit), *hits, mode).await)
                }
                _ => None,
            }
        });
        let results = match tokio::time::timeout(self.settings.timeout, join_all(checks)).await {
            Ok(results) => results,
            Err(_) => vec![Some(Err(Error::Unavailable(format!("no answer within {:?}", self.settings.timeout))))],
        };
        let mut outcomes: Vec<Option<LimitStatus>> = Vec::with_capacity(plans.len());
        for result in results {
            match result {
                None => outcomes.push(None),
                Some(Ok(decision)) => outcomes.push(decision.limits.into_iter().next()),
                Some(Err(e)) if e.is_unavailable() => return self.failed(&plans, e),
                Some(Err(e)) => return Err(e),
            }
        }

        let mut statuses = Vec::with_capacity(plans.len());
        let (mut over, mut quota_total, mut quota_over) = (false, 0, 0);
        for (plan, outcome) in plans.iter().zip(&outcomes) {
            let status = match plan {
                Plan::Free => Status::default(),
                Plan::Unlimited => Status { remaining: u32::MAX, ..Status::default() },
                Plan::Count { rule, hits, metric, .. } => {
                    let status = status(rule, *hits, outcome.as_ref());
                    record(rule, metric, &status);
                    if status.over {
                        if rule.quota {
                            quota_over += 1;
                        } else if !rule.shadow {
                            over = true;
                        }
                    }
                    if rule.quota {
                        quota_total += 1;
                    }
                    status
                }
            };
            statuses.push(status);
        }
        over |= quota_total > 0 && quota_total == quota_over;
        if over && self.settings.semantics == Semantics::Coord {
            self.refund(ns, &plans, &outcomes, &mut statuses).await;
        }
        // Shadow rules are decided and counted but never deny.
        for (plan, status) in plans.iter().zip(&mut statuses) {
            if let Plan::Count { rule, .. } = plan
                && rule.shadow
            {
                status.over = false;
            }
        }
        let headers = self.headers(&statuses);
        metrics::counter!("coord_rls_requests_total", "code" => if over { "over_limit" } else { "ok" }).increment(1);
        Ok(Response { over, statuses, headers })
    }

    /// Gives back what a request over limit charged on its other
    /// descriptors (best effort: a refund that fails leaves the charge).
    async fn refund(&self, ns: &Namespace, plans: &[Plan], outcomes: &[Option<LimitStatus>], statuses: &mut [Status]) {
        let refunds = plans.iter().zip(outcomes).enumerate().filter_map(|(i, (plan, outcome))| match (plan, outcome) {
            (Plan::Count { subject, limit: Some(limit), hits, .. }, Some(o)) if o.allowed && *hits > 0 => {
                Some(async move { (i, self.limits.refund(ns, subject, limit, *hits).await) })
            }
            _ => None,
        });
        for (i, result) in join_all(refunds).await {
            match result {
                Ok(after) => statuses[i].remaining = clamp(after.remaining),
                Err(e) => tracing::debug!(error = %e, "refunding a descriptor of a request over limit failed"),
            }
        }
    }

    /// Redis did not answer: the configured failure mode.
    fn failed(&self, plans: &[Plan], e: Error) -> Result<Response> {
        let open = match self.settings.failure {
            Failure::Error => return Err(e),
            Failure::Open => true,
            Failure::Closed => false,
        };
        metrics::counter!("coord_rls_fallbacks_total", "mode" => if open { "open" } else { "closed" }).increment(1);
        let statuses: Vec<Status> = plans
            .iter()
            .map(|plan| match plan {
                Plan::Free => Status::default(),
                Plan::Unlimited => Status { remaining: u32::MAX, ..Status::default() },
                Plan::Count { rule, .. } => Status {
                    over: !open && !rule.shadow,
                    limit: Some(current(rule)),
                    remaining: 0,
                    reset: Some(until_reset(rule.unit)),
                },
            })
            .collect();
        let over = statuses.iter().any(|s| s.over);
        Ok(Response { over, statuses, headers: Vec::new() })
    }

    /// `RateLimit-*` headers from the descriptor closest to its limit.
    fn headers(&self, statuses: &[Status]) -> Vec<(String, String)> {
        let Some(names) = &self.settings.headers else { return Vec::new() };
        let closest = statuses.iter().filter(|s| s.limit.is_some()).min_by_key(|s| (!s.over, s.remaining));
        let Some(status) = closest else { return Vec::new() };
        let Some(limit) = &status.limit else { return Vec::new() };
        let reset = status.reset.unwrap_or_default().as_secs_f64().ceil() as u64;
        vec![
            (names.limit.clone(), limit.requests_per_unit.to_string()),
            (names.remaining.clone(), status.remaining.to_string()),
            (names.reset.clone(), reset.to_string()),
        ]
    }
}

fn validate(req: &Request) -> Result<()> {
    if req.domain.is_empty() {
        return Err(Error::invalid("domain", "must not be empty"));
    }
    if req.descriptors.is_empty() || req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Error::invalid(
            "descriptors",
            format!("give 1 to {MAX_DESCRIPTORS} descriptors, got {}", req.descriptors.len()),
        ));
    }
    for (i, d) in req.descriptors.iter().enumerate() {
        if d.entries.is_empty() || d.entries.len() > MAX_ENTRIES {
            return Err(Error::invalid(
                format!("descriptors[{i}].entries"),
                format!("give 1 to {MAX_ENTRIES} entries, got {}", d.entries.len()),
            ));
        }
        if let Some(j) = d.entries.iter().position(|(k, _)| k.is_empty()) {
            return Err(Error::invalid(format!("descriptors[{i}].entries[{j}].key"), "must not be empty"));
        }
        if let Some(hits) = d.hits
            && hits > crate::ratelimit::MAX_COUNT
        {
            return Err(Error::invalid(
                format!("descriptors[{i}].hits_addend"),
                format!("must be at most {}, got {hits}", crate::ratelimit::MAX_COUNT),
            ));
        }
    }
    if u64::from(req.hits_addend) > crate::ratelimit::MAX_COUNT {
        return Err(Error::invalid(
            "hits_addend",
            format!("must be at most {}, got {}", crate::ratelimit::MAX_COUNT, req.hits_addend),
        ));
    }
    Ok(())
}

/// One descriptor's status from its check (None: not counted, as for a
/// limit of 0 per unit, which every hit is over).
fn status(rule: &Rule, hits: u64, outcome: Option<&LimitStatus>) -> Status {
    let (over, remaining, reset_ms) = match outcome {
        Some(o) => (!o.allowed, if o.allowed { clamp(o.remaining) } else { 0 }, o.reset_after_ms),
        None => (hits > 0, 0, 0),
    };
    let reset = if reset_ms > 0 { Duration::from_millis(reset_ms as u64) } else { until_reset(rule.unit) };
    Status { over, limit: Some(current(rule)), remaining, reset: Some(reset) }
}

fn current(rule: &Rule) -> CurrentLimit {
    CurrentLimit { requests_per_unit: rule.requests_per_unit, unit: rule.unit, name: rule.name.clone() }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Time left in the current window of `unit`, by this host's clock (for a
/// window nothing was counted in yet: Redis reported no reset).
fn until_reset(unit: Unit) -> Duration {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    Duration::from_secs((unit.seconds() - now.rem_euclid(unit.seconds())) as u64)
}

/// `domain.key_value.key…` as envoyproxy/ratelimit names a descriptor.
fn full_key(domain: &str, entries: &[(String, String)]) -> String {
    let mut key = domain.to_owned();
    for (k, v) in entries {
        key.push('.');
        key.push_str(k);
        if !v.is_empty() {
            key.push('_');
            key.push_str(v);
        }
    }
    key
}

fn keys_only(entries: &[(String, String)]) -> Vec<(String, String)> {
    entries.iter().map(|(k, _)| (k.clone(), String::new())).collect()
}

/// The coord subject a descriptor counts under: the domain and its
/// entries, unambiguous (`|` `=` `\` escaped); hashed when longer than a
/// subject may be.
fn subject(domain: &str, entries: &[(String, String)]) -> Result<Name> {
    fn push(out: &mut String, text: &str) {
        for c in text.chars() {
            if matches!(c, '|' | '=' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    let mut s = String::from("rls|");
    push(&mut s, domain);
    for (k, v) in entries {
        s.push('|');
        push(&mut s, k);
        s.push('=');
        push(&mut s, v);
    }
    if s.len() > crate::ratelimit::MAX_SUBJECT_BYTES {
        let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        s = format!("rls#{}", digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    Name::parse("subject", &s)
}

fn record(rule: &Rule, metric: &str, status: &Status) {
    let outcome = match (status.over, rule.shadow) {
        (false, _) => "within_limit",
        (true, true) => "shadow_mode",
        (true, false) => "over_limit",
    };
    metrics::counter!("coord_rls_descriptors_total", "key" => metric.to_owned(), "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_unambiguous_and_bounded() {
        let e = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let a = subject("d", &e(&[("a|b", "c")])).unwrap();
        let b = subject("d", &e(&[("a", "b|c")])).unwrap();
        assert_ne!(a, b);
        let long = "x".repeat(2000);
        let h = subject("d", &e(&[("k", &long)])).unwrap();
        assert!(h.as_str().starts_with("rls#") && h.as_str().len() < 100);
        assert_ne!(h, subject("d", &e(&[("k", &long[1..])])).unwrap());
    }

    #[test]
    fn full_keys_are_envoys() {
        let e = vec![("key1".to_owned(), "value1".to_owned()), ("subkey1".to_owned(), String::new())];
        assert_eq!(full_key("test-domain", &e), "test-domain.key1_value1.subkey1");
    }
}
