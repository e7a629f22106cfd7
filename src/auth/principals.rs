//! The principals file: who may call coord, with which credentials, in
//! which namespaces, with which permissions and quotas. Swapped whole on
//! reload; a file that fails validation is rejected and the previous one
//! stays (as for rate-limit policies).
//!
//! ```toml
//! [[principal]]
//! name = "orders"
//! default_namespace = "orders"          # used when a call has no coord-namespace header
//! # API keys `coord_<id>_<secret>`: only the SHA-256 of the whole key is stored.
//! keys = [{ id = "k7f3a9c2", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }]
//! # mTLS: a client certificate whose SAN (DNS, URI, e-mail) or `CN=<common name>` matches.
//! certificates = ["spiffe://cluster.local/ns/orders/sa/api", "CN=orders-api"]
//! grants = [
//!   { namespaces = ["orders", "orders-*"], permissions = ["lock", "ratelimit.check", "pubsub.*"] },
//!   { namespaces = ["catalog"], permissions = ["board.read"] },
//! ]
//! quota = { requests_per_second = 500, burst = 1000, streams = 100, subscriptions = 50, leases = 1000 }
//! ```

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;

use super::{Grant, NamespacePattern, Permissions, Principal, Quota, key_digest};
use crate::redis::Namespace;

/// Bytes of an API key's random part (base64url, 43 characters).
pub const SECRET_BYTES: usize = 32;
/// Every API key starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "coord_";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    principal: Vec<PrincipalSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalSpec {
    name: String,
    #[serde(default)]
    default_namespace: Option<String>,
    #[serde(default)]
    keys: Vec<KeySpec>,
    #[serde(default)]
    certificates: Vec<String>,
    #[serde(default)]
    grants: Vec<GrantSpec>,
    #[serde(default)]
    quota: QuotaSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySpec {
    id: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantSpec {
    namespaces: Vec<String>,
    permissions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaSpec {
    requests_per_second: Option<u64>,
    burst: Option<u64>,
    streams: Option<u32>,
    subscriptions: Option<u32>,
    leases: Option<u32>,
}

/// A stored API key: its principal and the digest to compare against.
pub(super) struct StoredKey {
    pub digest: [u8; 32],
    pub principal: Arc<Principal>,
}

/// A validated principals file.
#[derive(Default)]
pub struct Principals {
    pub(super) keys: HashMap<String, StoredKey>,
    pub(super) certificates: HashMap<String, Arc<Principal>>,
    pub(super) by_name: HashMap<String, Arc<Principal>>,
}

impl Principals {
    /// Parses and validates a whole file; the error names the entry.
    pub fn parse(text: &str) -> Result<Principals, String> {
        let file: FileSpec = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut out = Principals::default();
        for (i, spec) in file.principal.into_iter().enumerate() {
            let at = format!("principal[{i}]");
            if spec.name.is_empty() || spec.name.len() > 128 {
                return Err(format!("{at}.name: must be 1 to 128 bytes"));
            }
            if out.by_name.contains_key(&spec.name) {
                return Err(format!("{at}.name: {:?} is used twice", spec.name));
            }
            let mut grants = Vec::new();
            for (g, grant) in spec.grants.iter().enumerate() {
                let at = format!("{at}.grants[{g}]");
                if grant.namespaces.is_empty() {
                    return Err(format!("{at}.namespaces: must name at least one namespace"));
                }
                let namespaces = grant
                    .namespaces
                    .iter()
                    .enumerate()
                    .map(|(n, p)| NamespacePattern::parse(p).map_err(|e| format!("{at}.namespaces[{n}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut permissions = Permissions::NONE;
                for (p, name) in grant.permissions.iter().enumerate() {
                    permissions |= Permissions::parse(name).map_err(|e| format!("{at}.permissions[{p}]: {e}"))?;
                }
                grants.push(Grant { namespaces, permissions });
            }
            let default_namespace = match &spec.default_namespace {
                Some(ns) => Some(Namespace::parse(ns).map_err(|e| format!("{at}.default_namespace: {e}"))?),
                None => None,
            };
            let quota = Quota {
                requests_per_second: spec.quota.requests_per_second,
                burst: spec.quota.burst,
                streams: spec.quota.streams,
                subscriptions: spec.quota.subscriptions,
                leases: spec.quota.leases,
            };
            quota.validate().map_err(|e| format!("{at}.quota.{e}"))?;
            let principal = Arc::new(Principal::new(spec.name.clone(), default_namespace, grants, quota));
            for (k, key) in spec.keys.iter().enumerate() {
                let at = format!("{at}.keys[{k}]");
                if key.id.is_empty() || key.id.len() > 64 || !key.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(format!("{at}.id: must be 1 to 64 ASCII letters or digits"));
                }
                let digest = parse_digest(&key.sha256).map_err(|e| format!("{at}.sha256: {e}"))?;
                if out.keys.insert(key.id.clone(), StoredKey { digest, principal: principal.clone() }).is_some() {
                    return Err(format!("{at}.id: {:?} is used twice", key.id));
                }
            }
            for (c, name) in spec.certificates.iter().enumerate() {
                if name.is_empty() {
                    return Err(format!("{at}.certificates[{c}]: must not be empty"));
                }
                if out.certificates.insert(name.clone(), principal.clone()).is_some() {
                    return Err(format!("{at}.certificates[{c}]: {name:?} maps to two principals"));
                }
            }
            out.by_name.insert(spec.name, principal);
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(format!("must be 64 hex digits (a SHA-256), got {} characters", bytes.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| "must be hex".to_owned())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| "must be hex".to_owned())?;
    }
    Ok(out)
}

/// A new random API key and the line that stores it: `(key, id, sha256)`.
pub fn new_key() -> Result<(String, String, String), String> {
    use base64::Engine as _;
    let mut id = [0u8; 6];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id).and_then(|()| getrandom::fill(&mut secret)).map_err(|e| e.to_string())?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("{KEY_PREFIX}{id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let digest: String = key_digest(&key).iter().map(|b| format!("{b:02x}")).collect();
    Ok((key, id, digest))
}

/// The id part of `coord_<id>_<secret>`, if `token` has that shape.
pub(super) fn key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Permission;

    #[test]
    fn a_file_maps_keys_and_certificates_to_principals() {
        let (key, id, digest) = new_key().unwrap();
        let text = format!(
            "[[principal]]\nname = \"orders\"\nkeys = [{{ id = \"{id}\", sha256 = \"{digest}\" }}]\n\
             certificates = [\"CN=orders\"]\n\
             grants = [{{ namespaces = [\"orders\", \"orders-*\"], permissions = [\"lock\", \"board.*\"] }}]\n"
        );
        let p = Principals::parse(&text).unwrap();
        assert_eq!(key_id(&key), Some(id.as_str()));
        let stored = &p.keys[&id];
        assert_eq!(stored.digest, key_digest(&key));
        let orders = &p.certificates["CN=orders"];
        assert!(orders.permissions_in("orders-eu").contains(Permission::BoardAdmin));
        assert!(!orders.permissions_in("orders").contains(Permission::LockAdmin));
        assert!(orders.permissions_in("ordersx").is_empty());
        assert_eq!(orders.default_namespace().as_str(), "orders");
    }

    #[test]
    fn invalid_files_name_the_entry() {
        let bad = |text: &str| Principals::parse(text).err().unwrap_or_default();
        let err =
            bad("[[principal]]\nname = \"a\"\ngrants = [{ namespaces = [\"x\"], permissions = [\"lock.own\"] }]\n");
        assert!(err.starts_with("principal[0].grants[0].permissions[0]:"), "{err}");
        let err = bad("[[principal]]\nname = \"a\"\nkeys = [{ id = \"k1\", sha256 = \"abc\" }]\n");
        assert!(err.starts_with("principal[0].keys[0].sha256:"), "{err}");
        let err = bad("[[principal]]\nname = \"a\"\n[[principal]]\nname = \"a\"\n");
        assert!(err.starts_with("principal[1].name:"), "{err}");
        let err = bad("[[principal]]\nname = \"a\"\ngrants = [{ namespaces = [\"a*b\"], permissions = [\"*\"] }]\n");
        assert!(err.starts_with("principal[0].grants[0].namespaces[0]:"), "{err}");
        let err = bad("[[principal]]\nname = \"a\"\nquota = { streams = 0 }\n");
        assert!(err.starts_with("principal[0].quota.streams:"), "{err}");
        let err = bad("[[principal]]\nname = \"a\"\npassword = \"x\"\n");
        assert!(err.contains("password"), "{err}");
    }
}
