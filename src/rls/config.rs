//! envoyproxy/ratelimit's configuration, loaded as it is: a directory of
//! YAML files, each one `domain` with nested `descriptors` (`key`, optional
//! `value` with `*` wildcards, `rate_limit`, `shadow_mode`, `quota_mode`,
//! `detailed_metric`, `value_to_metric`, `share_threshold`, `metadata`).
//! Matching follows envoyproxy/ratelimit's `GetLimit`: a request descriptor
//! of N entries matches a rule exactly N levels deep; at each level
//! `key_value` beats a wildcard value, which beats the bare `key`.
//!
//! coord's one extension: `rate_limit.algorithm` (`fixed_window`, the
//! default and envoyproxy/ratelimit's own; `sliding_window`; `gcra`).
//!
//! A directory that fails validation is rejected whole (the previous
//! configuration stays), and the error names the file and the YAML path.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Unit;
use crate::ratelimit::Algorithm;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    descriptors: Vec<DescriptorSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DescriptorSpec {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    descriptors: Vec<DescriptorSpec>,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    quota_mode: bool,
    #[serde(default)]
    detailed_metric: bool,
    #[serde(default)]
    value_to_metric: bool,
    #[serde(default)]
    share_threshold: bool,
    /// Accepted and ignored: coord does not emit dynamic metadata yet.
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<yaml_serde::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSpec {
    #[serde(default)]
    requests_per_unit: u32,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    name: String,
    #[serde(default)]
    replaces: Vec<ReplacesSpec>,
    /// coord's extension.
    #[serde(default)]
    algorithm: AlgorithmName,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplacesSpec {
    #[serde(default)]
    name: String,
}

/// How a rule counts (`rate_limit.algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// Windows aligned to the epoch, as envoyproxy/ratelimit counts.
    #[default]
    FixedWindow,
    /// The weighted previous window: no double rate at a boundary.
    SlidingWindow,
    /// Evenly spaced: requests_per_unit per unit, bursts of the same size.
    Gcra,
}

/// One configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `domain.key_value.key…` as envoyproxy/ratelimit names its stats.
    pub full_key: String,
    pub requests_per_unit: u32,
    pub unit: Unit,
    pub name: String,
    pub unlimited: bool,
    pub shadow: bool,
    pub quota: bool,
    pub replaces: Vec<String>,
    pub detailed_metric: bool,
    pub algorithm: AlgorithmName,
}

impl Rule {
    /// The coord algorithm; None when requests_per_unit is 0 (every hit is
    /// over the limit, nothing to count).
    pub fn algorithm(&self) -> Option<Algorithm> {
        algorithm(self.algorithm, self.requests_per_unit, self.unit)
    }
}

/// The coord algorithm for `n` per `unit`.
pub fn algorithm(name: AlgorithmName, n: u32, unit: Unit) -> Option<Algorithm> {
    let (n, ms) = (u64::from(n), unit.seconds() * 1000);
    if n == 0 {
        return None;
    }
    Some(match name {
        AlgorithmName::FixedWindow => Algorithm::FixedWindow { limit: n, window_ms: ms },
        AlgorithmName::SlidingWindow => Algorithm::SlidingWindow { limit: n, window_ms: ms },
        AlgorithmName::Gcra => Algorithm::Gcra { rate: n, period_ms: ms, burst: n },
    })
}

/// What a request descriptor matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub rule: Arc<Rule>,
    /// The entries the counter is keyed by: the request's, except that a
    /// `share_threshold` wildcard level counts under its pattern.
    pub counter: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    /// `key_value` patterns with `*`, in file order, split on `*`.
    wildcards: Vec<(String, Vec<String>)>,
    rule: Option<Arc<Rule>>,
    share_threshold: bool,
}

/// Every domain, validated.
#[derive(Debug, Default)]
pub struct Domains {
    domains: HashMap<String, Node>,
}

impl Domains {
    /// Parses `(file name, text)` pairs; the error names the file and the
    /// YAML path.
    pub fn parse<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Domains, String> {
        let mut domains = HashMap::new();
        for (file, text) in files {
            let spec: FileSpec = yaml_serde::from_str(text).map_err(|e| format!("{file}: {e}"))?;
            if spec.domain.is_empty() {
                return Err(format!("{file}: domain: must not be empty"));
            }
            if domains.contains_key(&spec.domain) {
                return Err(format!("{file}: domain: {:?} is defined by another file too", spec.domain));
            }
            let mut root = Node::default();
            load(&mut root, &spec.descriptors, &spec.domain, "descriptors").map_err(|e| format!("{file}: {e}"))?;
            domains.insert(spec.domain, root);
        }
        Ok(Domains { domains })
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The rule for one request descriptor, as envoyproxy/ratelimit's
    /// `GetLimit` finds it.
    pub fn limit_for(&self, domain: &str, entries: &[(String, String)]) -> Option<Matched> {
        let mut node = self.domains.get(domain)?;
        let mut counter = Vec::with_capacity(entries.len());
        for (i, (key, value)) in entries.iter().enumerate() {
            let exact = format!("{key}_{value}");
            let (next, shared) = match node.children.get(&exact) {
                Some(next) => (Some(next), None),
                None => {
                    let wild = node.wildcards.iter().find(|(_, parts)| wildcard_match(parts, &exact));
                    match wild.and_then(|(pattern, _)| Some((node.children.get(pattern)?, pattern))) {
                        Some((next, pattern)) => (Some(next), next.share_threshold.then_some(pattern)),
                        None => (node.children.get(key.as_str()), None),
                    }
                }
            };
            let next = next?;
            let counted = match shared {
                Some(pattern) => pattern.strip_prefix(&format!("{key}_")).unwrap_or(pattern).to_owned(),
                None => value.clone(),
            };
            counter.push((key.clone(), counted));
            if i + 1 == entries.len() {
                return next.rule.clone().map(|rule| Matched { rule, counter });
            }
            if next.children.is_empty() {
                return None;
            }
            node = next;
        }
        None
    }
}

fn load(node: &mut Node, specs: &[DescriptorSpec], parent: &str, path: &str) -> Result<(), String> {
    for (i, spec) in specs.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if spec.key.is_empty() {
            return Err(format!("{here}.key: must not be empty"));
        }
        let final_key = if spec.value.is_empty() { spec.key.clone() } else { format!("{}_{}", spec.key, spec.value) };
        let full_key = format!("{parent}.{final_key}");
        if node.children.contains_key(&final_key) {
            return Err(format!("{here}: duplicate descriptor {full_key:?} (key and value) at this level"));
        }
        let rule = match &spec.rate_limit {
            None => None,
            Some(rl) => Some(Arc::new(rule(rl, spec, &full_key, &format!("{here}.rate_limit"))?)),
        };
        if spec.share_threshold && !final_key.contains('*') {
            return Err(format!("{here}.share_threshold: needs a wildcard value (with '*'), got {final_key:?}"));
        }
        if final_key.contains('*') {
            node.wildcards.push((final_key.clone(), final_key.split('*').map(str::to_owned).collect()));
        }
        let mut child = Node { rule, share_threshold: spec.share_threshold, ..Node::default() };
        load(&mut child, &spec.descriptors, &full_key, &format!("{here}.descriptors"))?;
        node.children.insert(final_key, child);
    }
    Ok(())
}

fn rule(rl: &RateLimitSpec, spec: &DescriptorSpec, full_key: &str, path: &str) -> Result<Rule, String> {
    let unit = Unit::parse(&rl.unit);
    let unit = match (rl.unlimited, unit) {
        (true, Some(_)) => return Err(format!("{path}.unit: must not be set when unlimited is true")),
        (true, None) => Unit::Second,
        (false, Some(unit)) => unit,
        (false, None) => {
            return Err(format!(
                "{path}.unit: {:?} is not a unit (second, minute, hour, day, week, month or year)",
                rl.unit
            ));
        }
    };
    for (j, r) in rl.replaces.iter().enumerate() {
        if r.name.is_empty() {
            return Err(format!("{path}.replaces[{j}].name: must not be empty"));
        }
        if r.name == rl.name {
            return Err(format!("{path}.replaces[{j}].name: a rule cannot replace itself ({:?})", r.name));
        }
    }
    if !rl.unlimited
        && let Some(algorithm) = algorithm(rl.algorithm, rl.requests_per_unit, unit)
        && rl.algorithm != AlgorithmName::FixedWindow
    {
        algorithm.validate(&format!("{path}.algorithm")).map_err(|e| e.to_string())?;
    }
    Ok(Rule {
        full_key: full_key.to_owned(),
        requests_per_unit: rl.requests_per_unit,
        unit,
        name: rl.name.clone(),
        unlimited: rl.unlimited,
        shadow: spec.shadow_mode,
        quota: spec.quota_mode,
        replaces: rl.replaces.iter().map(|r| r.name.clone()).collect(),
        // value_to_metric puts values in the metric key, as detailed_metric does.
        detailed_metric: spec.detailed_metric || spec.value_to_metric,
        algorithm: rl.algorithm,
    })
}

/// envoyproxy/ratelimit's wildcard match: `parts` is the pattern split on
/// `*`; the first part is a prefix, the last a suffix, the others appear
/// in order between them.
fn wildcard_match(parts: &[String], value: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return parts.first().is_some_and(|p| p == value);
    };
    let fixed: usize = parts.iter().map(String::len).sum();
    if value.len() < fixed || !value.starts_with(first.as_str()) || !value.ends_with(last.as_str()) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for part in middle {
        match rest.find(part.as_str()) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The loaded directory, swapped whole on reload.
pub struct DomainStore {
    dir: Option<PathBuf>,
    current: RwLock<Arc<Domains>>,
}

impl DomainStore {
    /// Loads `dir` (every `*.yaml` / `*.yml` file in it); None: no domains.
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let domains = match dir {
            Some(dir) => read_dir(dir)?,
            None => Domains::default(),
        };
        Ok(DomainStore { dir: dir.map(Path::to_path_buf), current: RwLock::new(Arc::new(domains)) })
    }

    pub fn current(&self) -> Arc<Domains> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the directory again; on error the old domains stay.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let domains = read_dir(dir)?;
        let n = domains.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(domains);
        Ok(n)
    }

    /// Reloads when a file of the directory changes (checked every
    /// `interval`) and on SIGHUP, until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let dirs = self.dir.iter().cloned().collect();
        crate::reload::on_change(dirs, interval, true, shutdown, || match self.reload() {
            Ok(n) => {
                tracing::info!(domains = n, "envoy rate limit configuration reloaded");
                metrics::counter!("coord_rls_config_loads_total", "outcome" => "ok").increment(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "envoy rate limit configuration rejected; the previous one stays");
                metrics::counter!("coord_rls_config_loads_total", "outcome" => "error").increment(1);
            }
        })
        .await;
    }
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_dir(dir: &Path) -> Result<Domains, String> {
    let mut texts = Vec::new();
    for path in yaml_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        texts.push((path.display().to_string(), text));
    }
    Domains::parse(texts.iter().map(|(f, t)| (f.as_str(), t.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_envoyproxy_ratelimit_does() {
        let parts = |p: &str| p.split('*').map(str::to_owned).collect::<Vec<_>>();
        assert!(wildcard_match(&parts("path_/foo/*"), "path_/foo/bar"));
        assert!(wildcard_match(&parts("path_/foo/*"), "path_/foo/"));
        assert!(!wildcard_match(&parts("path_/foo/*"), "path_/bar/foo"));
        assert!(wildcard_match(&parts("path_a*b*c"), "path_aXbYc"));
        assert!(!wildcard_match(&parts("path_a*b*c"), "path_aXc"));
        assert!(!wildcard_match(&parts("path_ab*bc"), "path_abc"), "the fixed parts cannot overlap");
        assert!(wildcard_match(&parts("k_v"), "k_v"));
    }
}
