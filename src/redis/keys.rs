//! Redis key construction.
//!
//! Layout: `<prefix>:<namespace>:<kind>:{<name>}[:<suffix>]`, e.g. lock
//! `orders` in namespace `shop` → `coord:shop:lock:{orders}` and
//! `coord:shop:lock:{orders}:fence`.
//!
//! Invariants (proved by the property tests below):
//! - every segment is escaped so it holds no `:`, `{` or `}`; the key therefore
//!   splits back into exactly its segments and one namespace can never spell a
//!   key of another;
//! - the only `{` is the one before the name and the first `}` after it is the
//!   one after the name, and the name is never empty, so Redis Cluster hashes
//!   every key of one resource on exactly the escaped name: all keys a script
//!   touches for one resource land in one slot.

use std::fmt::Write as _;

use crate::error::{Error, Result};

/// Longest user-supplied name, in bytes (before escaping).
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 128;
/// Namespace used when a request carries no `coord-namespace` header.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A validated, non-empty, bounded user-supplied name (lock name, board,
/// subject, channel). Opaque UTF-8: any character is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    /// Validates `value` as the request field `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        check_len(field, value, MAX_NAME_BYTES)?;
        Ok(Name(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated tenant namespace; same rules as [`Name`] with a smaller bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    pub fn parse(value: &str) -> Result<Self> {
        check_len("coord-namespace", value, MAX_NAMESPACE_BYTES)?;
        Ok(Namespace(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The empty namespace, which no request can name (`parse` refuses it):
    /// coord's own per-tenant bookkeeping (quotas) lives there.
    pub fn internal() -> Self {
        Namespace(String::new())
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace(DEFAULT_NAMESPACE.to_owned())
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("must be at most {max} bytes, got {}", value.len())));
    }
    Ok(())
}

/// Builds keys under one configured prefix.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    prefix: String,
}

impl KeyBuilder {
    /// `prefix` comes from configuration; it is escaped like any segment.
    pub fn new(prefix: &str) -> Result<Self> {
        check_len("redis.key_prefix", prefix, MAX_NAMESPACE_BYTES)?;
        Ok(KeyBuilder { prefix: escape(prefix) })
    }

    /// The (escaped) prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys of one resource: `kind` is a fixed word chosen by the code
    /// (`lock`, `lease`, `rl`, …), `name` the user's resource name.
    pub fn resource(&self, ns: &Namespace, kind: &'static str, name: &Name) -> ResourceKey {
        debug_assert!(!kind.is_empty() && escape(kind) == kind, "kinds are plain words");
        let mut base = String::with_capacity(self.prefix.len() + ns.0.len() + kind.len() + name.0.len() + 8);
        let _ = write!(base, "{}:{}:{}:{{{}}}", self.prefix, escape(&ns.0), kind, escape(&name.0));
        ResourceKey { base }
    }

    /// A key of the server itself, e.g. the health probe. It lives under the
    /// namespace segment `_` with a kind reserved for the server (`health`),
    /// which no tenant resource uses, so it cannot collide with tenant keys
    /// even for a tenant named `_`.
    pub fn internal(&self, kind: &'static str, name: &str) -> ResourceKey {
        let mut base = String::new();
        let _ = write!(base, "{}:_:{}:{{{}}}", self.prefix, kind, escape(name));
        ResourceKey { base }
    }
}

impl KeyBuilder {
    /// A SCAN MATCH pattern for the base keys of `kind` in `ns` whose names
    /// start with `prefix` (siblings, which end in `:<suffix>`, excluded).
    pub fn scan_pattern(&self, ns: &Namespace, kind: &'static str, prefix: &str) -> String {
        format!(
            "{}:{}:{}:{{{}*}}",
            glob_escape(&self.prefix),
            glob_escape(&escape(&ns.0)),
            kind,
            glob_escape(&escape(prefix))
        )
    }
}

impl KeyBuilder {
    /// A PSUBSCRIBE pattern matching the base keys of `kind` in `ns` whose
    /// names match the user's glob `pattern`. The pattern is escaped like a
    /// name, so its `*`, `?` and `[...]` apply to names exactly as given
    /// (inside a `[...]` set, `%`, `:`, `{` and `}` do not work).
    pub fn name_pattern(&self, ns: &Namespace, kind: &'static str, pattern: &str) -> String {
        format!("{}:{}:{}:{{{}}}", glob_escape(&self.prefix), glob_escape(&escape(&ns.0)), kind, escape(pattern))
    }
}

/// The namespace and name of a base key built by [`KeyBuilder::resource`].
pub fn resource_of(key: &str) -> Option<(String, String)> {
    // Escaped segments hold no ':', so the namespace is the second one.
    let ns = key.split(':').nth(1)?;
    Some((unescape(ns), name_of(key)?))
}

/// The user's name inside a base key built by [`KeyBuilder::resource`].
pub fn name_of(key: &str) -> Option<String> {
    let open = key.find('{')?;
    let close = key[open..].find('}')? + open;
    (close + 1 == key.len()).then(|| unescape(&key[open + 1..close]))
}

/// The base key of one resource; [`ResourceKey::sub`] derives its sibling
/// keys, which share the base's hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    base: String,
}

impl ResourceKey {
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// A sibling key for a user-named part (`kind` a fixed word, `name`
    /// escaped), e.g. one named limit of a subject.
    pub fn child(&self, kind: &'static str, name: &str) -> String {
        debug_assert!(escape(kind) == kind, "kinds are plain words");
        format!("{}:{}:{}", self.base, kind, escape(name))
    }

    /// A sibling key (`suffix` is a fixed word such as `fence`).
    pub fn sub(&self, suffix: &'static str) -> String {
        debug_assert!(escape(suffix) == suffix, "suffixes are plain words");
        format!("{}:{}", self.base, suffix)
    }
}

/// Percent-escapes the bytes that give a key its structure (`%`, `:`, `{`,
/// `}`); everything else, unicode included, stays readable.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(segment: &str) -> String {
    // Escapes are only ever the four below, so one left-to-right pass is exact.
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        let c = match code {
            Some("25") => '%',
            Some("3A") => ':',
            Some("7B") => '{',
            Some("7D") => '}',
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        };
        out.push(c);
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// Escapes glob metacharacters for SCAN MATCH.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Redis Cluster's hash-tag rule: the bytes between the first `{` and the
    /// first `}` after it, if that span is non-empty; else the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    /// Strings rich in the characters that could break the layout.
    fn nasty() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("{".to_owned()),
                Just("}".to_owned()),
                Just(":".to_owned()),
                Just("%".to_owned()),
                Just("%7B".to_owned()),
                Just("".to_owned()),
                Just("é🔒".to_owned()),
                "\\PC{0,4}",
                "[a-z]{1,3}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    #[test]
    fn empty_and_oversized_names_are_rejected_with_the_field() {
        let err = Name::parse("name", "").unwrap_err();
        assert_eq!(err.to_string(), "name: must not be empty");
        let err = Name::parse("name", &"x".repeat(MAX_NAME_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("at most 1024 bytes"), "{err}");
        assert!(Namespace::parse("").is_err());
    }

    #[test]
    fn layout_matches_the_guide() {
        let kb = KeyBuilder::new("coord").unwrap();
        let key = kb.resource(&Namespace::parse("shop").unwrap(), "lock", &Name::parse("n", "orders").unwrap());
        assert_eq!(key.as_str(), "coord:shop:lock:{orders}");
        assert_eq!(key.sub("fence"), "coord:shop:lock:{orders}:fence");
        let key = kb.resource(&Namespace::parse("a:b").unwrap(), "lock", &Name::parse("n", "{x}").unwrap());
        assert_eq!(key.as_str(), "coord:a%3Ab:lock:{%7Bx%7D}");
    }

    proptest! {
        #[test]
        fn sibling_keys_share_exactly_the_name_as_hash_tag(ns in nasty(), name in nasty()) {
            prop_assume!(!ns.is_empty() && !name.is_empty());
            let kb = KeyBuilder::new("coord").unwrap();
            let key = kb.resource(&Namespace::parse(&ns).unwrap(), "lock", &Name::parse("n", &name).unwrap());
            let tag = hash_tag(key.as_str()).to_owned();
            prop_assert_eq!(unescape(&tag), name.clone());
            for suffix in ["fence", "waiters"] {
                let sibling = key.sub(suffix);
                prop_assert_eq!(hash_tag(&sibling), tag.as_str());
            }
        }

        #[test]
        fn keys_split_back_into_their_segments(prefix in nasty(), ns in nasty(), name in nasty()) {
            prop_assume!(!prefix.is_empty() && !ns.is_empty() && !name.is_empty());
            let kb = KeyBuilder::new(&prefix).unwrap();
            let key = kb.resource(&Namespace::parse(&ns).unwrap(), "lock", &Name::parse("n", &name).unwrap());
            let parts: Vec<&str> = key.as_str().split(':').collect();
            prop_assert_eq!(parts.len(), 4);
            prop_assert_eq!(unescape(parts[0]), prefix);
            prop_assert_eq!(unescape(parts[1]), ns);
            prop_assert_eq!(parts[2], "lock");
            let braced = parts[3].starts_with('{') && parts[3].ends_with('}');
            prop_assert!(braced, "tag segment not braced: {}", parts[3]);
            prop_assert_eq!(unescape(&parts[3][1..parts[3].len() - 1]), name);
        }

        #[test]
        fn names_are_recovered_from_base_keys(ns in nasty(), name in nasty()) {
            prop_assume!(!ns.is_empty() && !name.is_empty());
            let kb = KeyBuilder::new("coord").unwrap();
            let key = kb.resource(&Namespace::parse(&ns).unwrap(), "lock", &Name::parse("n", &name).unwrap());
            prop_assert_eq!(name_of(key.as_str()), Some(name));
            prop_assert_eq!(name_of(&key.sub("fence")), None);
        }

        #[test]
        fn distinct_resources_never_share_a_key(
            a in (nasty(), nasty()), b in (nasty(), nasty())
        ) {
            prop_assume!(!a.0.is_empty() && !a.1.is_empty() && !b.0.is_empty() && !b.1.is_empty());
            prop_assume!(a != b);
            let kb = KeyBuilder::new("coord").unwrap();
            let ka = kb.resource(&Namespace::parse(&a.0).unwrap(), "lock", &Name::parse("n", &a.1).unwrap());
            let kbk = kb.resource(&Namespace::parse(&b.0).unwrap(), "lock", &Name::parse("n", &b.1).unwrap());
            prop_assert_ne!(ka.as_str(), kbk.as_str());
            prop_assert_ne!(ka.sub("fence"), kbk.sub("fence"));
        }
    }
}
