//! envoyproxy/ratelimit's configuration tests (`test/config/config_test.go`,
//! commit f2fb157) ported to coord's loader, [`coord::rls::config`]. The
//! YAML files are upstream's, unchanged, in `tests/data/envoyproxy-ratelimit/`
//! (Apache-2.0, see the README there).
//!
//! A Go `GetLimit` returning a limit is `Domains::limit_for` returning
//! `Some(Matched)`; `rl == nil` is `None`; `rl.Limit.RequestsPerUnit`,
//! `Unit`, `Name`, `Unlimited`, `ShadowMode` and `DetailedMetric` are the
//! same fields of `Matched::rule`;
//! `ShareThresholdKeyPattern` is `Matched::counter` (the entries the counter
//! is keyed by: a share_threshold wildcard level counts under its pattern).
//! A Go panic from `NewRateLimitConfigImpl` is `Domains::parse` returning
//! `Err`, whose message must name the file and the offending thing.
//!
//! Ported: TestBasicConfig, TestConfigLimitOverride (config side only),
//! TestEmptyDomain, TestDuplicateDomain, TestEmptyKey, TestDuplicateKey,
//! TestBadLimitUnit, TestReplacesSelf, TestReplacesEmpty, TestBadYaml,
//! TestMisspelledKey, TestNonStringKey, TestNonMapList,
//! TestUnlimitedWithRateLimitUnit, TestShadowModeConfig, TestWildcardConfig,
//! TestDetailedMetric (which rule matches; its configs are Go structs,
//! written here as the equivalent YAML) and TestShareThreshold (which rule
//! matches and its share_threshold patterns).
//!
//! Skipped, and why:
//! - every stats assertion (counter values, `Stats.Key`, and `FullKey` where
//!   it is a stats key built from request values): coord's metrics are its
//!   own. Where the Go `FullKey` is the configured path (wildcard patterns
//!   included) it is asserted on `Rule::full_key`, which is how the tests
//!   below tell which rule matched.
//! - TestConfigLimitOverride's three requests that carry a limit override
//!   (Go lines 267, 290, 313: 10/DAY, 42/HOUR, and the full key built from
//!   the request): coord applies an override in the service
//!   (`Rls::should_rate_limit`), not in `limit_for`. The config side — an
//!   override applies only in a configured domain — is ported as
//!   `has_domain`.
//! - TestDomainMerge and TestDuplicateKeyDomainMerge: domain merging
//!   (MERGE_DOMAIN_CONFIG) is not supported; coord rejects a domain defined
//!   by two files, which is what `duplicate_domain_across_files_is_rejected`
//!   proves.
//! - TestValueToMetric_* (9 tests) and TestWildcardStatsBehavior: they test
//!   stats keys (value_to_metric), not matching.
//! - TestMetadata: coord accepts `metadata` and ignores it (no dynamic
//!   metadata in responses yet); not in this port's scope.
//!
//! A case is one Go assertion about a match, a no-match or a load error
//! (one `GetLimit` call with its field checks, or one `expectConfigPanic`):
//! 82 cases ported, 82 agree (0 disagree, none ignored); 3 cases skipped
//! (the limit overrides above), besides the tests skipped whole.

use coord::rls::{
    Unit,
    config::{Domains, Matched},
};

/// `(file name, text)` of an upstream test file.
macro_rules! upstream {
    ($name:literal) => {
        ($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/envoyproxy-ratelimit/", $name)))
    };
}

fn load(files: &[(&str, &str)]) -> Domains {
    Domains::parse(files.iter().copied()).unwrap_or_else(|e| panic!("the configuration should load: {e}"))
}

/// The error of a configuration that must not load.
fn rejected(files: &[(&str, &str)]) -> String {
    match Domains::parse(files.iter().copied()) {
        Ok(d) => panic!("the configuration should be rejected; it loaded {} domain(s)", d.len()),
        Err(e) => e,
    }
}

/// One upstream file that must be rejected: the error starts with the
/// file's name and mentions every needle.
fn assert_rejected(file: (&str, &str), needles: &[&str]) {
    let e = rejected(&[file]);
    assert!(e.starts_with(file.0), "{e}");
    assert_mentions(&e, needles);
}

fn assert_mentions(error: &str, needles: &[&str]) {
    for needle in needles {
        assert!(error.contains(needle), "error {error:?} should mention {needle:?}");
    }
}

fn get(domains: &Domains, domain: &str, entries: &[(&str, &str)]) -> Option<Matched> {
    let entries: Vec<(String, String)> = entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    domains.limit_for(domain, &entries)
}

/// The match, or a panic naming the request.
fn matched(domains: &Domains, domain: &str, entries: &[(&str, &str)]) -> Matched {
    get(domains, domain, entries).unwrap_or_else(|| panic!("{domain} {entries:?} should match a rule"))
}

fn assert_limit(m: &Matched, requests_per_unit: u32, unit: Unit) {
    assert_eq!(
        (m.rule.requests_per_unit, m.rule.unit),
        (requests_per_unit, unit),
        "rule {} (counter {:?})",
        m.rule.full_key,
        m.counter
    );
}

/// The counter's entries, as `(key, value)` string slices.
fn counter(m: &Matched) -> Vec<(&str, &str)> {
    m.counter.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn basic() -> Domains {
    load(&[upstream!("basic_config.yaml")])
}

// ---- TestBasicConfig ----------------------------------------------------

/// Go lines 35-39: the file loads; an unknown domain and an empty request
/// descriptor match nothing.
#[test]
fn basic_config_unknown_domain_and_empty_descriptor_match_nothing() {
    let d = basic();
    assert!(!d.is_empty());
    assert!(d.has_domain("test-domain"));
    assert!(get(&d, "foo_domain", &[]).is_none(), "line 37");
    assert!(get(&d, "test-domain", &[]).is_none(), "line 39");
}

/// Go line 47: key1 is configured only as key1=value1, so another value
/// has nothing to fall back to.
#[test]
fn basic_config_value_without_bare_key_fallback_matches_nothing() {
    assert!(get(&basic(), "test-domain", &[("key1", "something")]).is_none());
}

/// Go lines 54 and 143: a key_value level with no rate_limit (key1=value1,
/// which only has children; key2=value3, which whitelists the value) limits
/// nothing, and it is not overridden by the bare key2 rule.
#[test]
fn basic_config_key_value_without_rate_limit_matches_nothing() {
    let d = basic();
    assert!(get(&d, "test-domain", &[("key1", "value1")]).is_none(), "line 54");
    assert!(get(&d, "test-domain", &[("key2", "value3")]).is_none(), "line 143");
}

/// Go line 61: a request deeper than the configuration (key2=value2 has no
/// descriptors) matches nothing, although key2=value2 alone has a rule.
#[test]
fn basic_config_request_deeper_than_config_matches_nothing() {
    assert!(get(&basic(), "test-domain", &[("key2", "value2"), ("subkey", "subvalue")]).is_none());
}

/// Go line 68: at the second level, a value other than the configured
/// subkey5=subvalue5 matches nothing (no bare subkey5), and the first
/// level's own rule does not apply to a two-entry request.
#[test]
fn basic_config_unconfigured_second_level_value_matches_nothing() {
    assert!(get(&basic(), "test-domain", &[("key5", "value5"), ("subkey5", "subvalue")]).is_none());
}

/// Go lines 79 and 95: under key1=value1, the bare subkey1 rule is the
/// default (5/s) and subkey1=subvalue1 overrides it (10/s).
#[test]
fn basic_config_second_level_key_value_before_bare_key() {
    let d = basic();
    let m = matched(&d, "test-domain", &[("key1", "value1"), ("subkey1", "something")]);
    assert_limit(&m, 5, Unit::Second);
    assert_eq!(m.rule.full_key, "test-domain.key1_value1.subkey1");
    let m = matched(&d, "test-domain", &[("key1", "value1"), ("subkey1", "subvalue1")]);
    assert_limit(&m, 10, Unit::Second);
    assert_eq!(m.rule.full_key, "test-domain.key1_value1.subkey1_subvalue1");
}

/// Go lines 115 and 131: at the top level, the bare key2 rule is the
/// default (20/min) and key2=value2 overrides it (30/min).
#[test]
fn basic_config_matches_key_value_before_bare_key() {
    let d = basic();
    let m = matched(&d, "test-domain", &[("key2", "something")]);
    assert_limit(&m, 20, Unit::Minute);
    assert_eq!(m.rule.full_key, "test-domain.key2");
    let m = matched(&d, "test-domain", &[("key2", "value2")]);
    assert_limit(&m, 30, Unit::Minute);
    assert_eq!(m.rule.full_key, "test-domain.key2_value2");
}

/// Go lines 154 and 171: hour and day units; a rule's name is empty unless
/// configured.
#[test]
fn basic_config_rule_name_is_empty_unless_configured() {
    let d = basic();
    let m = matched(&d, "test-domain", &[("key3", "foo")]);
    assert_limit(&m, 1, Unit::Hour);
    assert_eq!(m.rule.name, "", "no name provided in config");
    let m = matched(&d, "test-domain", &[("key4", "foo")]);
    assert_limit(&m, 1, Unit::Day);
    assert_eq!(m.rule.name, "key4_rate_limit", "name provided in config");
}

/// Go line 186: `unlimited: true` matches as unlimited.
#[test]
fn basic_config_unlimited_rule_matches_as_unlimited() {
    let m = matched(&basic(), "test-domain", &[("key6", "foo")]);
    assert!(m.rule.unlimited);
}

/// Go lines 201 and 219: a bare key with detailed_metric matches every
/// value with the one rule (70/min); only its stats differ per value.
#[test]
fn basic_config_detailed_metric_bare_key_matches_every_value() {
    let d = basic();
    let a = matched(&d, "test-domain", &[("key7", "unspecified_value")]);
    let b = matched(&d, "test-domain", &[("key7", "another_value")]);
    for m in [&a, &b] {
        assert_limit(m, 70, Unit::Minute);
        assert!(m.rule.detailed_metric);
    }
    assert_eq!(a.rule, b.rule);
    assert_eq!(counter(&a), [("key7", "unspecified_value")]);
    assert_eq!(counter(&b), [("key7", "another_value")]);
}

// ---- TestConfigLimitOverride (config side) --------------------------------

/// Go line 262: a request's limit override in an unknown domain gives no
/// limit. coord's service applies an override only where `has_domain` is
/// true, so the configuration's part is: foo_domain is not configured (and
/// matches nothing), test-domain is.
#[test]
fn limit_override_applies_only_in_a_configured_domain() {
    let d = basic();
    assert!(!d.has_domain("foo_domain"));
    assert!(get(&d, "foo_domain", &[]).is_none());
    assert!(d.has_domain("test-domain"), "lines 267-325: the override applies in test-domain");
}

// ---- load errors ----------------------------------------------------------

/// TestEmptyDomain (Go line 354): "config file cannot have empty domain".
#[test]
fn empty_domain_is_rejected() {
    assert_rejected(upstream!("empty_domain.yaml"), &["domain", "empty"]);
}

/// TestDuplicateDomain (Go line 365): "duplicate domain 'test-domain' in
/// config file", reported against the second file.
#[test]
fn duplicate_domain_across_files_is_rejected() {
    let e = rejected(&[upstream!("basic_config.yaml"), upstream!("duplicate_domain.yaml")]);
    assert!(e.starts_with("duplicate_domain.yaml"), "{e}");
    assert_mentions(&e, &["domain", "test-domain"]);
}

/// TestEmptyKey (Go line 376): "descriptor has empty key".
#[test]
fn descriptor_without_key_is_rejected() {
    assert_rejected(upstream!("empty_key.yaml"), &["descriptors[0].key", "empty"]);
}

/// TestDuplicateKey (Go line 387): "duplicate descriptor composite key
/// 'test-domain.key1_value1'".
#[test]
fn duplicate_key_value_at_one_level_is_rejected() {
    assert_rejected(upstream!("duplicate_key.yaml"), &["descriptors[1]", "duplicate", "test-domain.key1_value1"]);
}

/// TestBadLimitUnit (Go line 411): "invalid rate limit unit 'foo'".
#[test]
fn unknown_limit_unit_is_rejected() {
    assert_rejected(upstream!("bad_limit_unit.yaml"), &["descriptors[0].rate_limit.unit", "foo"]);
}

/// TestReplacesSelf (Go line 422): "replaces should not contain name of
/// same descriptor".
#[test]
fn rule_replacing_itself_is_rejected() {
    assert_rejected(
        upstream!("replaces_self.yaml"),
        &["descriptors[0].descriptors[0].rate_limit.replaces[0].name", "self"],
    );
}

/// TestReplacesEmpty (Go line 433): "should not have an empty replaces
/// entry" (`- name:` with no value).
#[test]
fn replaces_entry_without_name_is_rejected() {
    assert_rejected(
        upstream!("replaces_empty.yaml"),
        &["descriptors[0].descriptors[0].rate_limit.replaces[0].name", "empty"],
    );
}

/// TestBadYaml (Go line 444): "error loading config file: yaml: line 2:
/// found unexpected end of stream".
#[test]
fn malformed_yaml_is_rejected() {
    assert_rejected(upstream!("bad_yaml.yaml"), &["unexpected end of stream", "line 2"]);
}

/// TestMisspelledKey (Go lines 455 and 464): "unknown key 'ratelimit'" in a
/// descriptor and "unknown key 'requestsperunit'" in a rate_limit.
#[test]
fn misspelled_field_is_rejected() {
    assert_rejected(upstream!("misspelled_key.yaml"), &["descriptors[0]", "ratelimit"]);
    assert_rejected(upstream!("misspelled_key2.yaml"), &["descriptors[0].rate_limit", "requestsperunit"]);
}

/// TestNonStringKey (Go line 475): "key is not of type string: 0.25".
#[test]
fn non_string_mapping_key_is_rejected() {
    assert_rejected(upstream!("non_string_key.yaml"), &["0.25"]);
}

/// TestNonMapList (Go line 486): "yaml file contains list of type other
/// than map: a".
#[test]
fn descriptor_that_is_not_a_mapping_is_rejected() {
    assert_rejected(upstream!("non_map_list.yaml"), &["descriptors[0]", "\"a\""]);
}

/// TestUnlimitedWithRateLimitUnit (Go line 497): "should not specify rate
/// limit unit when unlimited".
#[test]
fn unlimited_with_unit_is_rejected() {
    assert_rejected(upstream!("unlimited_with_unit.yaml"), &["descriptors[0].rate_limit.unit", "unlimited"]);
}

// ---- TestShadowModeConfig ---------------------------------------------------

/// Go lines 516-569: shadow_mode belongs to the rule that sets it, not to
/// its siblings: subkey1 (bare) and key2=value2 are not in shadow mode,
/// subkey1=subvalue1 and the bare key2 are.
#[test]
fn shadow_mode_is_set_per_rule() {
    let d = load(&[upstream!("shadowmode_config.yaml")]);
    let m = matched(&d, "test-domain", &[("key1", "value1"), ("subkey1", "something")]);
    assert!(!m.rule.shadow, "line 516");
    assert_limit(&m, 5, Unit::Second);
    let m = matched(&d, "test-domain", &[("key1", "value1"), ("subkey1", "subvalue1")]);
    assert!(m.rule.shadow, "line 534");
    assert_limit(&m, 10, Unit::Second);
    let m = matched(&d, "test-domain", &[("key2", "something")]);
    assert!(m.rule.shadow, "line 551");
    assert_limit(&m, 20, Unit::Minute);
    let m = matched(&d, "test-domain", &[("key2", "value2")]);
    assert!(!m.rule.shadow, "line 567");
    assert_limit(&m, 30, Unit::Minute);
}

// ---- TestWildcardConfig -----------------------------------------------------

fn wildcard() -> Domains {
    load(&[upstream!("wildcard.yaml")])
}

/// Go lines 583-598: a bare key matches every value with one rule.
#[test]
fn bare_key_matches_every_value_with_one_rule() {
    let d = wildcard();
    let a = matched(&d, "test-domain", &[("noVal", "foo1")]);
    let b = matched(&d, "test-domain", &[("noVal", "foo2")]);
    assert_eq!(a.rule, b.rule);
    assert_eq!(a.rule.full_key, "test-domain.noVal");
}

/// Go lines 601-623: a trailing `*` matches every value with that prefix,
/// with one rule named by its pattern, also at a nested level.
#[test]
fn trailing_wildcard_matches_values_with_its_prefix() {
    let d = wildcard();
    let a = matched(&d, "test-domain", &[("wild", "foo1")]);
    let b = matched(&d, "test-domain", &[("wild", "foo2")]);
    assert_eq!(a.rule, b.rule);
    assert_eq!(a.rule.full_key, "test-domain.wild_foo*");
    assert_limit(&a, 20, Unit::Minute);
    let nested = matched(&d, "test-domain", &[("nestedWild", "val1"), ("wild", "goo2")]);
    assert_eq!(nested.rule.full_key, "test-domain.nestedWild_val1.wild_goo*");
}

/// Go lines 626-639: a wildcard does not match another prefix, and a value
/// without `*` matches only itself (foo does not match foo1).
#[test]
fn wildcard_and_plain_value_do_not_match_other_values() {
    let d = wildcard();
    assert!(get(&d, "test-domain", &[("wild", "bar")]).is_none(), "line 631");
    assert!(get(&d, "test-domain", &[("noWild", "foo1")]).is_none(), "line 639");
}

/// Go lines 642-678: `bar*b` matches values with prefix bar and suffix b
/// (the `*` may be empty), all with one rule, and nothing else.
#[test]
fn middle_wildcard_matches_prefix_and_suffix() {
    let d = wildcard();
    let a = matched(&d, "test-domain", &[("midWild", "barab")]);
    let b = matched(&d, "test-domain", &[("midWild", "bar123b")]);
    assert_eq!(a.rule, b.rule);
    assert_eq!(a.rule.full_key, "test-domain.midWild_bar*b");
    assert!(get(&d, "test-domain", &[("midWild", "barb")]).is_some(), "line 664: * matches the empty string");
    assert!(get(&d, "test-domain", &[("midWild", "bara")]).is_none(), "line 677: no suffix");
    assert!(get(&d, "test-domain", &[("midWild", "xbarb")]).is_none(), "line 678: no prefix");
}

/// Go lines 681-709: `foo*bar*baz` matches values with foo, bar and baz in
/// order, and not when a segment is missing.
#[test]
fn multiple_wildcards_match_segments_in_order() {
    let d = wildcard();
    let a = matched(&d, "test-domain", &[("multiWild", "foo123bar456baz")]);
    let b = matched(&d, "test-domain", &[("multiWild", "foobarbaz")]);
    assert_eq!(a.rule, b.rule);
    assert_eq!(a.rule.full_key, "test-domain.multiWild_foo*bar*baz");
    assert_limit(&a, 10, Unit::Minute);
    assert!(get(&d, "test-domain", &[("multiWild", "foo123baz")]).is_none(), "line 708: no bar");
    assert!(get(&d, "test-domain", &[("multiWild", "bar456baz")]).is_none(), "line 709: no foo prefix");
}

// ---- TestDetailedMetric -----------------------------------------------------

/// Go lines 794-954: `key-1` (100/min) with a nested `key-2` (5/min);
/// `{top}` and `{nested}` are their detailed_metric flags.
fn nested_config(top: bool, nested: bool) -> String {
    format!(
        "
domain: nested
descriptors:
  - key: key-1
    detailed_metric: {top}
    rate_limit: {{requests_per_unit: 100, unit: minute}}
    descriptors:
      - key: key-2
        detailed_metric: {nested}
        rate_limit: {{requests_per_unit: 5, unit: minute}}
"
    )
}

/// Go lines 718-785, `realisticExampleConfig`.
const REALISTIC: &str = "
domain: nested
descriptors:
  - key: key_1
    detailed_metric: true
    rate_limit: {requests_per_unit: 500, unit: minute}
  - key: key_1
    value: some-value-for-key-1
    rate_limit: {requests_per_unit: 500, unit: minute}
  - key: key_2
    detailed_metric: true
    rate_limit: {requests_per_unit: 5000, unit: minute}
    descriptors:
      - key: key_3
        detailed_metric: true
      - key: key_3
        value: requested-key3-value
        detailed_metric: true
        rate_limit: {requests_per_unit: 5, unit: minute}
  - key: key_2
    value: specific-id
    detailed_metric: true
    rate_limit: {requests_per_unit: 50000, unit: minute}
    descriptors:
      - key: key_3
        detailed_metric: true
      - key: key_3
        value: requested-key3-value
        detailed_metric: true
        rate_limit: {requests_per_unit: 100, unit: minute}
";

/// Go lines 794-954, the four subtests on the `key-1`/`key-2` config: with
/// or without detailed_metric, a one-entry request matches the top-level
/// bare key and a two-entry request the nested one.
#[test]
fn detailed_metric_does_not_change_which_nested_bare_key_matches() {
    let one: &[(&str, &str)] = &[("key-1", "value-1")];
    let two: &[(&str, &str)] = &[("key-1", "value-1"), ("key-2", "value-2")];
    // (Go line, config flags (key-1, key-2), request, full key, requests per unit, detailed_metric)
    let cases = [
        (794, (true, false), one, "nested.key-1", 100, true),
        (832, (false, false), one, "nested.key-1", 100, false),
        (870, (true, true), two, "nested.key-1.key-2", 5, true),
        (913, (false, false), two, "nested.key-1.key-2", 5, false),
    ];
    for (line, (top, nested), request, full_key, requests_per_unit, detailed) in cases {
        let text = nested_config(top, nested);
        let d = load(&[("nested.yaml", &text)]);
        let m = matched(&d, "nested", request);
        assert_eq!(m.rule.full_key, full_key, "line {line}");
        assert_limit(&m, requests_per_unit, Unit::Minute);
        assert_eq!(m.rule.detailed_metric, detailed, "line {line}");
    }
}

/// Go lines 955-1009 (realisticExampleConfig): an unconfigured value falls
/// back to the bare key at the first level, and to the key_value rule
/// under the bare key at the second.
#[test]
fn detailed_metric_realistic_config_falls_back_to_bare_keys() {
    let d = load(&[("nested.yaml", REALISTIC)]);
    let m = matched(&d, "nested", &[("key_1", "value-for-key-1")]);
    assert_eq!(m.rule.full_key, "nested.key_1");
    assert_limit(&m, 500, Unit::Minute);
    assert!(m.rule.detailed_metric);
    let m = matched(&d, "nested", &[("key_2", "key-2-value")]);
    assert_eq!(m.rule.full_key, "nested.key_2");
    assert_limit(&m, 5000, Unit::Minute);
    assert!(m.rule.detailed_metric);
    let m = matched(&d, "nested", &[("key_2", "key-2-value"), ("key_3", "requested-key3-value")]);
    assert_eq!(m.rule.full_key, "nested.key_2.key_3_requested-key3-value");
    assert_limit(&m, 5, Unit::Minute);
    assert!(m.rule.detailed_metric);
}

// ---- TestShareThreshold -----------------------------------------------------

fn share() -> Domains {
    load(&[upstream!("share_threshold.yaml")])
}

/// Go lines 1675-1700: every value matching `files/*` shares one rule and
/// one counter, keyed by the pattern.
#[test]
fn share_threshold_values_share_the_pattern_counter() {
    let d = share();
    for value in ["files/a.pdf", "files/b.csv", "files/c.txt"] {
        let m = matched(&d, "test-domain", &[("files", value)]);
        assert_limit(&m, 100, Unit::Minute);
        assert_eq!(m.rule.full_key, "test-domain.files_files/*");
        assert_eq!(counter(&m), [("files", "files/*")], "{value}");
    }
}

/// Go lines 1707-1734: share_threshold on a parent level with
/// value_to_metric or with a detailed_metric child: the parent counts under
/// its pattern, the child under its value.
#[test]
fn share_threshold_parent_with_metric_flags_counts_under_its_pattern() {
    let d = share();
    let m = matched(&d, "test-domain", &[("route", "api/v1"), ("method", "GET")]);
    assert_eq!(m.rule.full_key, "test-domain.route_api/*.method");
    assert_limit(&m, 60, Unit::Minute);
    assert_eq!(counter(&m), [("route", "api/*"), ("method", "GET")]);
    let m = matched(&d, "test-domain", &[("service", "svc/user"), ("endpoint", "get")]);
    assert_eq!(m.rule.full_key, "test-domain.service_svc/*.endpoint");
    assert_limit(&m, 80, Unit::Minute);
    assert!(m.rule.detailed_metric);
    assert_eq!(counter(&m), [("service", "svc/*"), ("endpoint", "get")]);
}

/// Go lines 1740-1805: nested share_threshold levels count under their
/// patterns; a wildcard level without share_threshold counts under the
/// request's value.
#[test]
fn share_threshold_nested_levels_count_under_their_own_patterns() {
    let d = share();
    let m = matched(&d, "test-domain", &[("nested", "parent"), ("files", "nested/file1.txt")]);
    assert_eq!(m.rule.full_key, "test-domain.nested_parent.files_nested/*");
    assert_limit(&m, 200, Unit::Minute);
    assert_eq!(counter(&m), [("nested", "parent"), ("files", "nested/*")]);

    let m = matched(&d, "test-domain", &[("files", "top/file1.txt"), ("files", "nested/file1.txt")]);
    assert_eq!(m.rule.full_key, "test-domain.files_top/*.files_nested/*");
    assert_limit(&m, 300, Unit::Minute);
    assert_eq!(counter(&m), [("files", "top/*"), ("files", "nested/*")]);

    let m = matched(&d, "test-domain", &[("path", "path/foo"), ("file", "file/doc1"), ("type", "pdf")]);
    assert_eq!(m.rule.full_key, "test-domain.path_path/*.file_file/*.type");
    assert_limit(&m, 120, Unit::Minute);
    assert_eq!(counter(&m), [("path", "path/*"), ("file", "file/doc1"), ("type", "pdf")]);

    let m = matched(&d, "test-domain", &[("user", "user/alice"), ("resource", "res/file1"), ("action", "read")]);
    assert_eq!(m.rule.full_key, "test-domain.user_user/*.resource_res/*.action");
    assert_limit(&m, 150, Unit::Minute);
    assert_eq!(counter(&m), [("user", "user/*"), ("resource", "res/*"), ("action", "read")]);
}

/// Go lines 1812-1855: an explicit value (file=test1, 50/min, its own
/// counter) beats the share_threshold wildcard `test*` (100/min, shared by
/// test2, test23 and test123).
#[test]
fn share_threshold_explicit_value_beats_the_wildcard() {
    let d = share();
    let m = matched(&d, "test-domain", &[("file", "test1")]);
    assert_limit(&m, 50, Unit::Minute);
    assert_eq!(m.rule.full_key, "test-domain.file_test1");
    assert_eq!(counter(&m), [("file", "test1")]);
    for value in ["test2", "test23", "test123"] {
        let m = matched(&d, "test-domain", &[("file", value)]);
        assert_limit(&m, 100, Unit::Minute);
        assert_eq!(m.rule.full_key, "test-domain.file_test*");
        assert_eq!(counter(&m), [("file", "test*")], "{value}");
    }
}

/// Go lines 1871-1899: share_threshold with a middle wildcard `/api*v1`.
#[test]
fn share_threshold_middle_wildcard_shares_its_pattern_counter() {
    let d = share();
    for value in ["/api/v1", "/api-beta-v1", "/apiXYZv1"] {
        let m = matched(&d, "test-domain", &[("midpath", value)]);
        assert_limit(&m, 100, Unit::Minute);
        assert_eq!(m.rule.full_key, "test-domain.midpath_/api*v1");
        assert_eq!(counter(&m), [("midpath", "/api*v1")], "{value}");
    }
    assert!(get(&d, "test-domain", &[("midpath", "/api/v2")]).is_none(), "line 1899");
}

/// Go lines 1903-1931: share_threshold with several wildcards `svc*ep*rpc`.
#[test]
fn share_threshold_multi_wildcard_shares_its_pattern_counter() {
    let d = share();
    for value in ["svcAepBrpc", "svcXXXepYYYrpc", "svceprpc"] {
        let m = matched(&d, "test-domain", &[("multiroute", value)]);
        assert_limit(&m, 50, Unit::Minute);
        assert_eq!(m.rule.full_key, "test-domain.multiroute_svc*ep*rpc");
        assert_eq!(counter(&m), [("multiroute", "svc*ep*rpc")], "{value}");
    }
    assert!(get(&d, "test-domain", &[("multiroute", "svcABCrpc")]).is_none(), "line 1931: no ep");
}

/// Go lines 1936-1950: share_threshold with value_to_metric on a middle
/// wildcard still counts under the pattern.
#[test]
fn share_threshold_with_value_to_metric_counts_under_the_pattern() {
    let d = share();
    let a = matched(&d, "test-domain", &[("midroute", "/api/v2")]);
    let b = matched(&d, "test-domain", &[("midroute", "/api-beta-v2")]);
    assert_eq!(a.rule, b.rule);
    assert_limit(&a, 80, Unit::Minute);
    assert_eq!(counter(&a), [("midroute", "/api*v2")]);
    assert_eq!(counter(&a), counter(&b));
}

/// Go lines 1955-1979: nested middle wildcards with share_threshold both
/// count under their patterns, so different values share one counter.
#[test]
fn share_threshold_nested_middle_wildcards_share_one_counter() {
    let d = share();
    let a = matched(&d, "test-domain", &[("tenant", "t1prod"), ("resource", "resAv2")]);
    let b = matched(&d, "test-domain", &[("tenant", "t99prod"), ("resource", "resBBBv2")]);
    assert_eq!(a.rule.full_key, "test-domain.tenant_t*prod.resource_res*v2");
    assert_limit(&a, 60, Unit::Minute);
    assert_eq!(counter(&a), [("tenant", "t*prod"), ("resource", "res*v2")]);
    assert_eq!(a, b);
}
