//! Named rate-limit policies from a TOML file, swapped atomically on
//! reload. A file that fails validation is rejected whole: the previous
//! policies stay in force, and the error is logged and counted.
//!
//! ```toml
//! [policies.api]
//! shadow = false            # true: decide and count, but always allow
//! failure = "closed"        # or "open": the answer when Redis is too slow
//! timeout = "50ms"          # Redis time budget of one decision
//! limits = [
//!   { name = "per-second", fixed_window = { limit = 10, window_ms = 1000 } },
//!   { name = "per-day", token_bucket = { capacity = 1000, refill_tokens = 1000, refill_period_ms = 86400000 } },
//! ]
//! # Most specific wins: an exact subject, then the longest prefix.
//! [[policies.api.overrides]]
//! subject = "user:vip"
//! limits = [{ name = "per-second", fixed_window = { limit = 100, window_ms = 1000 } }]
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{Algorithm, Limit, MAX_LIMITS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    policies: BTreeMap<String, PolicySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    limits: Vec<LimitSpec>,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    failure: Failure,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    overrides: Vec<OverrideSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    subject: Option<String>,
    subject_prefix: Option<String>,
    limits: Vec<LimitSpec>,
    shadow: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct LimitSpec {
    name: String,
    #[serde(flatten)]
    algorithm: AlgorithmSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AlgorithmSpec {
    TokenBucket { capacity: u64, refill_tokens: u64, refill_period_ms: i64 },
    Gcra { rate: u64, period_ms: i64, burst: u64 },
    SlidingLog { limit: u64, window_ms: i64 },
    SlidingWindow { limit: u64, window_ms: i64 },
    FixedWindow { limit: u64, window_ms: i64 },
}

/// What a policy answers when Redis does not answer within its timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    Open,
    #[default]
    Closed,
}

/// The limits a subject gets, and whether they only observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub limits: Vec<Limit>,
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub rule: Rule,
    pub failure: Failure,
    pub timeout: Duration,
    exact: HashMap<String, Rule>,
    /// Longest prefix first.
    prefixes: Vec<(String, Rule)>,
}

impl Policy {
    /// A tenant quota: GCRA at `rate` per second with `burst`, failing open
    /// (a Redis too slow to count must not also refuse the call it guards).
    pub fn quota(name: String, rate: u64, burst: u64) -> Policy {
        let limit = Limit { name: "requests".into(), algorithm: Algorithm::Gcra { rate, period_ms: 1000, burst } };
        Policy {
            name,
            rule: Rule { limits: vec![limit], shadow: false },
            failure: Failure::Open,
            timeout: Duration::from_millis(50),
            exact: HashMap::new(),
            prefixes: Vec::new(),
        }
    }

    /// The most specific rule for `subject`: exact, longest prefix, default.
    pub fn rule_for(&self, subject: &str) -> &Rule {
        if let Some(rule) = self.exact.get(subject) {
            return rule;
        }
        self.prefixes.iter().find(|(p, _)| subject.starts_with(p.as_str())).map_or(&self.rule, |(_, r)| r)
    }
}

/// A validated set of policies.
#[derive(Debug, Default)]
pub struct Policies {
    map: HashMap<String, Arc<Policy>>,
}

impl Policies {
    /// Parses and validates a whole file; the error names the setting.
    pub fn parse(text: &str, default_timeout: Duration) -> Result<Policies, String> {
        let file: FileSpec = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut map = HashMap::new();
        for (name, spec) in file.policies {
            let at = format!("policies.{name}");
            let default_limits = limits(&spec.limits, &format!("{at}.limits"))?;
            let timeout = spec.timeout.unwrap_or(default_timeout);
            if timeout.is_zero() || timeout > Duration::from_secs(60) {
                return Err(format!("{at}.timeout: must be between 1 ms and 60 s"));
            }
            let mut exact = HashMap::new();
            let mut prefixes = Vec::new();
            for (i, o) in spec.overrides.iter().enumerate() {
                let at = format!("{at}.overrides[{i}]");
                let rule = Rule {
                    limits: limits(&o.limits, &format!("{at}.limits"))?,
                    shadow: o.shadow.unwrap_or(spec.shadow),
                };
                match (&o.subject, &o.subject_prefix) {
                    (Some(s), None) if !s.is_empty() => {
                        if exact.insert(s.clone(), rule).is_some() {
                            return Err(format!("{at}.subject: {s:?} is overridden twice"));
                        }
                    }
                    (None, Some(p)) if !p.is_empty() => prefixes.push((p.clone(), rule)),
                    _ => return Err(format!("{at}: set exactly one of subject and subject_prefix (non-empty)")),
                }
            }
            prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
            let policy = Policy {
                name: name.clone(),
                rule: Rule { limits: default_limits, shadow: spec.shadow },
                failure: spec.failure,
                timeout,
                exact,
                prefixes,
            };
            map.insert(name, Arc::new(policy));
        }
        Ok(Policies { map })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Policy>> {
        self.map.get(name).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn limits(specs: &[LimitSpec], at: &str) -> Result<Vec<Limit>, String> {
    if specs.is_empty() || specs.len() > MAX_LIMITS {
        return Err(format!("{at}: must hold 1 to {MAX_LIMITS} limits"));
    }
    let mut out: Vec<Limit> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (algorithm, kind) = match spec.algorithm {
            AlgorithmSpec::TokenBucket { capacity, refill_tokens, refill_period_ms } => {
                (Algorithm::TokenBucket { capacity, refill_tokens, refill_period_ms }, "token_bucket")
            }
            AlgorithmSpec::Gcra { rate, period_ms, burst } => (Algorithm::Gcra { rate, period_ms, burst }, "gcra"),
            AlgorithmSpec::SlidingLog { limit, window_ms } => {
                (Algorithm::SlidingLog { limit, window_ms }, "sliding_log")
            }
            AlgorithmSpec::SlidingWindow { limit, window_ms } => {
                (Algorithm::SlidingWindow { limit, window_ms }, "sliding_window")
            }
            AlgorithmSpec::FixedWindow { limit, window_ms } => {
                (Algorithm::FixedWindow { limit, window_ms }, "fixed_window")
            }
        };
        algorithm.validate(&format!("{at}[{i}].{kind}")).map_err(|e| e.to_string())?;
        if spec.name.is_empty() || spec.name.len() > 128 {
            return Err(format!("{at}[{i}].name: must be 1 to 128 bytes"));
        }
        if out.iter().any(|l| l.name == spec.name) {
            return Err(format!("{at}[{i}].name: {:?} is used twice", spec.name));
        }
        out.push(Limit { name: spec.name.clone(), algorithm });
    }
    Ok(out)
}

/// The policies in force, and where they come from.
pub struct PolicyStore {
    current: RwLock<Arc<Policies>>,
    path: Option<PathBuf>,
    default_timeout: Duration,
}

impl PolicyStore {
    /// Loads `path` (none: no policies). An invalid file at start-up is an
    /// error: coord refuses to start rather than run without its limits.
    pub fn load(path: Option<&Path>, default_timeout: Duration) -> Result<Self, String> {
        let policies = match path {
            Some(path) => read(path, default_timeout)?,
            None => Policies::default(),
        };
        Ok(PolicyStore { current: RwLock::new(Arc::new(policies)), path: path.map(Path::to_path_buf), default_timeout })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Policy>> {
        self.current.read().ok().and_then(|p| p.get(name))
    }

    /// How many policies are in force.
    pub fn len(&self) -> usize {
        self.current.read().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the file; on error the previous policies stay.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else { return Ok(0) };
        match read(path, self.default_timeout) {
            Ok(policies) => {
                let count = policies.len();
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(policies);
                }
                metrics::counter!("coord_ratelimit_policy_reloads_total", "result" => "ok").increment(1);
                tracing::info!(path = %path.display(), policies = count, "rate-limit policies loaded");
                Ok(count)
            }
            Err(e) => {
                metrics::counter!("coord_ratelimit_policy_reloads_total", "result" => "error").increment(1);
                tracing::error!(path = %path.display(), error = %e, "rate-limit policy file rejected; keeping the previous policies");
                Err(e)
            }
        }
    }

    /// Reloads when the file's contents change (checked every `interval`,
    /// which also catches Kubernetes' ConfigMap symlink swaps) and on SIGHUP.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let files = self.path.iter().cloned().collect();
        crate::reload::on_change(files, interval, true, shutdown, || {
            let _ = self.reload();
        })
        .await;
    }
}

fn read(path: &Path, default_timeout: Duration) -> Result<Policies, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Policies::parse(&text, default_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [policies.api]
        failure = "open"
        limits = [{ name = "s", fixed_window = { limit = 10, window_ms = 1000 } }]
        [[policies.api.overrides]]
        subject = "vip"
        limits = [{ name = "s", fixed_window = { limit = 100, window_ms = 1000 } }]
        [[policies.api.overrides]]
        subject_prefix = "team:"
        shadow = true
        limits = [{ name = "s", gcra = { rate = 5, period_ms = 1000, burst = 5 } }]
        [[policies.api.overrides]]
        subject_prefix = "team:red:"
        limits = [{ name = "s", sliding_log = { limit = 1, window_ms = 1000 } }]
    "#;

    #[test]
    fn most_specific_rule_wins() {
        let policies = Policies::parse(FILE, Duration::from_millis(50)).unwrap();
        let api = policies.get("api").unwrap();
        assert_eq!(api.failure, Failure::Open);
        assert_eq!(api.rule_for("someone").limits[0].algorithm.size(), 10);
        assert_eq!(api.rule_for("vip").limits[0].algorithm.size(), 100);
        assert!(api.rule_for("team:blue").shadow);
        assert_eq!(api.rule_for("team:red:1").limits[0].algorithm.size(), 1);
    }

    #[test]
    fn invalid_files_name_the_setting() {
        let bad = |text: &str| Policies::parse(text, Duration::from_millis(50)).unwrap_err();
        let err = bad("[policies.a]\nlimits = [{ name = \"x\", fixed_window = { limit = 0, window_ms = 1000 } }]\n");
        assert!(err.starts_with("policies.a.limits[0].fixed_window.limit:"), "{err}");
        let err = bad("[policies.a]\nlimits = []\n");
        assert!(err.starts_with("policies.a.limits:"), "{err}");
        let err = bad("[policies.a]\nlimitz = []\n");
        assert!(err.contains("limitz"), "{err}");
        let err = bad(
            "[policies.a]\nlimits = [{ name = \"x\", fixed_window = { limit = 1, window_ms = 1 } }]\n[[policies.a.overrides]]\nlimits = [{ name = \"x\", fixed_window = { limit = 1, window_ms = 1 } }]\n",
        );
        assert!(err.starts_with("policies.a.overrides[0]:"), "{err}");
    }
}
