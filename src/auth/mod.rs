//! Authentication and authorisation: callers are principals, principals
//! hold namespaces and permissions.
//!
//! - [`principals`]: the hot-reloaded file of principals (hashed API keys,
//!   mTLS certificate names, grants, quotas).
//! - [`jwt`]: optional JWTs whose claims carry the principal and its grants.
//! - [`layer`]: the tower layer every gRPC call passes through: it
//!   authenticates, resolves the namespace, checks the permission the method
//!   needs and the principal's quotas, and ends open streams whose
//!   credentials stop being valid.
//!
//! Codes: a missing, unknown, invalid or expired credential is
//! UNAUTHENTICATED; a known caller without the namespace or permission is
//! PERMISSION_DENIED naming what is missing; a quota is RESOURCE_EXHAUSTED.
//! The decision needs only the namespace and the method, never a lookup of
//! the resource, so a denial cannot reveal whether another namespace's lock,
//! board or channel exists.

pub mod jwt;
pub mod layer;
pub mod principals;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    error::{Error, Result},
    redis::Namespace,
};
pub use principals::Principals;

/// One thing a caller may do in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Permission {
    /// Grant, KeepAlive and revoke leases; acquire, release and describe locks.
    Lock,
    /// List locks and force-release any of them.
    LockAdmin,
    /// Check rate limits, take and return concurrency slots.
    RatelimitCheck,
    /// Refund.
    RatelimitAdmin,
    BoardRead,
    BoardWrite,
    /// Create and delete boards.
    BoardAdmin,
    PubsubPublish,
    PubsubSubscribe,
    /// AdminService.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 10] = [
        Permission::Lock,
        Permission::LockAdmin,
        Permission::RatelimitCheck,
        Permission::RatelimitAdmin,
        Permission::BoardRead,
        Permission::BoardWrite,
        Permission::BoardAdmin,
        Permission::PubsubPublish,
        Permission::PubsubSubscribe,
        Permission::Admin,
    ];

    /// The name used in principals files and JWT claims.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Lock => "lock",
            Permission::LockAdmin => "lock.admin",
            Permission::RatelimitCheck => "ratelimit.check",
            Permission::RatelimitAdmin => "ratelimit.admin",
            Permission::BoardRead => "board.read",
            Permission::BoardWrite => "board.write",
            Permission::BoardAdmin => "board.admin",
            Permission::PubsubPublish => "pubsub.publish",
            Permission::PubsubSubscribe => "pubsub.subscribe",
            Permission::Admin => "admin",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u16);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    /// `lock`, `lock.admin`, …; `lock.*` (every permission of a service);
    /// `*` (all).
    pub fn parse(name: &str) -> Result<Permissions, String> {
        if name == "*" {
            return Ok(Permission::ALL.iter().fold(Permissions::NONE, |s, p| s | *p));
        }
        if let Some(service) = name.strip_suffix(".*") {
            let set = Permission::ALL
                .iter()
                .filter(|p| p.name() == service || p.name().strip_prefix(service).is_some_and(|r| r.starts_with('.')))
                .fold(Permissions::NONE, |s, p| s | *p);
            if set != Permissions::NONE {
                return Ok(set);
            }
        }
        match Permission::ALL.iter().find(|p| p.name() == name) {
            Some(p) => Ok(Permissions::NONE | *p),
            None => Err(format!(
                "unknown permission {name:?} (known: {}, a service's `.*`, or `*`)",
                Permission::ALL.map(Permission::name).join(", ")
            )),
        }
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr<Permission> for Permissions {
    type Output = Permissions;
    fn bitor(self, p: Permission) -> Permissions {
        Permissions(self.0 | p.bit())
    }
}

impl std::ops::BitOrAssign for Permissions {
    fn bitor_assign(&mut self, other: Permissions) {
        self.0 |= other.0;
    }
}

/// Which namespaces a grant covers: `orders` (exactly), `orders-*` (a
/// prefix), `*` (all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespacePattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl NamespacePattern {
    pub fn parse(text: &str) -> Result<NamespacePattern, String> {
        if text == "*" {
            return Ok(NamespacePattern::Any);
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(format!("{text:?}: `*` may only end a pattern"));
        }
        if body.is_empty() || body.len() > crate::redis::keys::MAX_NAMESPACE_BYTES {
            return Err(format!(
                "{text:?}: must be `*` or 1 to {} bytes, optionally ending in `*`",
                crate::redis::keys::MAX_NAMESPACE_BYTES
            ));
        }
        Ok(if prefix { NamespacePattern::Prefix(body.to_owned()) } else { NamespacePattern::Exact(body.to_owned()) })
    }

    pub fn matches(&self, ns: &str) -> bool {
        match self {
            NamespacePattern::Any => true,
            NamespacePattern::Exact(n) => n == ns,
            NamespacePattern::Prefix(p) => ns.starts_with(p.as_str()),
        }
    }
}

/// Permissions in the namespaces a pattern list covers.
#[derive(Debug, Clone)]
pub struct Grant {
    pub namespaces: Vec<NamespacePattern>,
    pub permissions: Permissions,
}

/// Per-principal limits. `None`: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    /// Calls per second across every coord instance (coord's own GCRA on
    /// Redis), with `burst` calls at once (default: one second's worth).
    pub requests_per_second: Option<u64>,
    pub burst: Option<u64>,
    /// Open streams (KeepAlive, Subscribe) per coord instance.
    pub streams: Option<u32>,
    /// Open Subscribe streams per coord instance.
    pub subscriptions: Option<u32>,
    /// Live leases (from Grant) across every coord instance.
    pub leases: Option<u32>,
}

impl Quota {
    fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: Option<u64>| match v {
            Some(0) => Err(format!("{name}: must be at least 1 (leave it out for no limit)")),
            Some(v) if v > 1_000_000_000 => Err(format!("{name}: must be at most 1000000000, got {v}")),
            _ => Ok(()),
        };
        positive("requests_per_second", self.requests_per_second)?;
        positive("burst", self.burst)?;
        positive("streams", self.streams.map(u64::from))?;
        positive("subscriptions", self.subscriptions.map(u64::from))?;
        positive("leases", self.leases.map(u64::from))?;
        if self.burst.is_some() && self.requests_per_second.is_none() {
            return Err("burst: needs requests_per_second".into());
        }
        Ok(())
    }
}

/// An authenticated caller.
#[derive(Debug)]
pub struct Principal {
    pub name: String,
    default_namespace: Namespace,
    grants: Vec<Grant>,
    pub quota: Quota,
    /// The quota as a rate-limit policy, built once.
    pub(crate) rate: Option<Arc<crate::ratelimit::policy::Policy>>,
}

impl Principal {
    pub fn new(name: String, default_namespace: Option<Namespace>, grants: Vec<Grant>, quota: Quota) -> Principal {
        // No default given: the first namespace granted exactly, else `default`.
        let default_namespace = default_namespace
            .or_else(|| {
                grants.iter().flat_map(|g| &g.namespaces).find_map(|p| match p {
                    NamespacePattern::Exact(n) => Namespace::parse(n).ok(),
                    _ => None,
                })
            })
            .unwrap_or_default();
        let rate = quota.requests_per_second.map(|rate| {
            Arc::new(crate::ratelimit::policy::Policy::quota(
                format!("_quota:{name}"),
                rate,
                quota.burst.unwrap_or(rate),
            ))
        });
        Principal { name, default_namespace, grants, quota, rate }
    }

    pub fn default_namespace(&self) -> &Namespace {
        &self.default_namespace
    }

    /// Every permission this principal has in `ns`.
    pub fn permissions_in(&self, ns: &str) -> Permissions {
        let mut out = Permissions::NONE;
        for g in self.grants.iter().filter(|g| g.namespaces.iter().any(|p| p.matches(ns))) {
            out |= g.permissions;
        }
        out
    }

    /// PERMISSION_DENIED naming what is missing, unless allowed.
    pub fn authorize(&self, ns: &Namespace, permission: Permission) -> Result<()> {
        let granted = self.permissions_in(ns.as_str());
        if granted.contains(permission) {
            return Ok(());
        }
        Err(Error::PermissionDenied(match granted.is_empty() {
            true => format!("principal {:?} may not use namespace {:?}", self.name, ns.as_str()),
            false => {
                format!(
                    "principal {:?} lacks permission {} in namespace {:?}",
                    self.name,
                    permission.name(),
                    ns.as_str()
                )
            }
        }))
    }
}

/// SHA-256 of an API key: what the principals file stores.
pub fn key_digest(key: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// What a call presented.
#[derive(Debug, Clone, Default)]
pub struct Credential {
    /// `authorization: Bearer <token>`: an API key or a JWT.
    pub bearer: Option<String>,
    /// Names of a verified client certificate (SANs and `CN=…`).
    pub certificate: Option<Arc<[String]>>,
}

/// A caller that passed authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Arc<Principal>,
    /// JWTs end; keys and certificates end only by reload.
    pub expires: Option<SystemTime>,
}

/// What the services learn about an authorised caller, in the request's
/// extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub namespace: Namespace,
}

/// Everything credentials are checked against; replaced whole on reload.
#[derive(Default)]
pub struct Snapshot {
    pub principals: Principals,
    pub jwt: Option<jwt::Verifier>,
}

/// Settings of authentication (the `[auth]` section).
#[derive(Debug, Clone)]
pub struct Settings {
    pub principals_file: Option<PathBuf>,
    pub jwt: Option<jwt::Settings>,
    pub open_health: bool,
    pub open_reflection: bool,
}

/// Authentication state shared by every call.
pub struct Auth {
    settings: Settings,
    current: ArcSwap<Snapshot>,
    /// Bumped on every successful reload, so open streams re-check.
    generation: watch::Sender<u64>,
    /// Open streams per principal name (quotas), surviving reloads.
    usage: Mutex<HashMap<String, Arc<Usage>>>,
}

/// A principal's open streams on this instance.
#[derive(Debug, Default)]
pub struct Usage {
    pub streams: std::sync::atomic::AtomicU32,
    pub subscriptions: std::sync::atomic::AtomicU32,
}

impl Auth {
    /// Reads every file the settings name; an error names the setting.
    pub fn load(settings: Settings) -> Result<Auth, String> {
        let snapshot = read(&settings)?;
        Ok(Auth {
            settings,
            current: ArcSwap::from_pointee(snapshot),
            generation: watch::Sender::new(0),
            usage: Mutex::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Resolves a credential to a principal: a `coord_` key by its id and
    /// digest (constant-time), another bearer token as a JWT, else the
    /// client certificate's names.
    pub fn authenticate(&self, credential: &Credential) -> Result<Authenticated> {
        let snapshot = self.current.load();
        if let Some(token) = &credential.bearer {
            if let Some(id) = principals::key_id(token) {
                let stored =
                    snapshot.principals.keys.get(id).ok_or_else(|| Error::Unauthenticated("unknown API key".into()))?;
                let digest = key_digest(token);
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &stored.digest[..])) {
                    return Err(Error::Unauthenticated("unknown API key".into()));
                }
                return Ok(Authenticated { principal: stored.principal.clone(), expires: None });
            }
            return match &snapshot.jwt {
                Some(verifier) => verifier.verify(token, &snapshot.principals),
                None => Err(Error::Unauthenticated("bearer token is not a coord API key".into())),
            };
        }
        if let Some(names) = &credential.certificate {
            return names
                .iter()
                .find_map(|n| snapshot.principals.certificates.get(n))
                .map(|p| Authenticated { principal: p.clone(), expires: None })
                .ok_or_else(|| {
                    Error::Unauthenticated(format!("client certificate ({}) maps to no principal", names.join(", ")))
                });
        }
        Err(Error::Unauthenticated("missing credentials: send `authorization: Bearer <key>`".into()))
    }

    /// The namespace a call uses: its header, else the principal's default.
    pub fn namespace(principal: &Principal, header: Option<&str>) -> Result<Namespace> {
        match header {
            Some(text) => Namespace::parse(text),
            None => Ok(principal.default_namespace().clone()),
        }
    }

    /// Open-stream counters of a principal.
    pub fn usage(&self, principal: &str) -> Arc<Usage> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.entry(principal.to_owned()).or_default().clone()
    }

    /// A receiver that changes on every successful reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-reads every file; on error the previous state stays.
    pub fn reload(&self) -> Result<usize, String> {
        match read(&self.settings) {
            Ok(snapshot) => {
                let count = snapshot.principals.len();
                self.current.store(Arc::new(snapshot));
                self.generation.send_modify(|g| *g += 1);
                metrics::counter!("coord_auth_reloads_total", "result" => "ok").increment(1);
                tracing::info!(target: "coord::audit", event = "auth_reload", principals = count, "credentials reloaded");
                Ok(count)
            }
            Err(e) => {
                metrics::counter!("coord_auth_reloads_total", "result" => "error").increment(1);
                tracing::error!(target: "coord::audit", event = "auth_reload_rejected", error = %e, "credentials rejected; keeping the previous ones");
                Err(e)
            }
        }
    }

    /// Reloads when any credential file changes (checked every
    /// `interval`) and on SIGHUP.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        crate::reload::on_change(self.files(), interval, true, shutdown, || {
            let _ = self.reload();
        })
        .await;
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.settings.principals_file.iter().cloned().collect();
        if let Some(jwt) = &self.settings.jwt {
            files.extend(jwt.files());
        }
        files
    }
}

fn read(settings: &Settings) -> Result<Snapshot, String> {
    let principals = match &settings.principals_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("auth.principals_file: {}: {e}", path.display()))?;
            Principals::parse(&text).map_err(|e| format!("auth.principals_file: {}: {e}", path.display()))?
        }
        None => Principals::default(),
    };
    let jwt = match &settings.jwt {
        Some(s) => Some(jwt::Verifier::load(s)?),
        None => None,
    };
    Ok(Snapshot { principals, jwt })
}

/// One structured audit event: an operator action on another's state.
pub fn audit(principal: Option<&str>, namespace: &Namespace, action: &str, target: &str) {
    tracing::info!(
        target: "coord::audit",
        principal = principal.unwrap_or("anonymous"),
        namespace = namespace.as_str(),
        action,
        target,
        "admin operation"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_names_and_wildcards() {
        let all = Permissions::parse("*").unwrap();
        assert!(Permission::ALL.iter().all(|p| all.contains(*p)));
        let board = Permissions::parse("board.*").unwrap();
        assert!(board.contains(Permission::BoardRead) && board.contains(Permission::BoardAdmin));
        assert!(!board.contains(Permission::Lock));
        let lock = Permissions::parse("lock.*").unwrap();
        assert!(lock.contains(Permission::Lock) && lock.contains(Permission::LockAdmin));
        assert!(!Permissions::parse("lock").unwrap().contains(Permission::LockAdmin));
        assert!(Permissions::parse("locks").is_err());
        assert!(Permissions::parse("nothing.*").is_err());
    }

    #[test]
    fn namespace_patterns() {
        assert!(NamespacePattern::parse("a-*").unwrap().matches("a-b"));
        assert!(!NamespacePattern::parse("a-*").unwrap().matches("a"));
        assert!(NamespacePattern::parse("a").unwrap().matches("a"));
        assert!(!NamespacePattern::parse("a").unwrap().matches("ab"));
        assert!(NamespacePattern::parse("*").unwrap().matches("anything"));
        assert!(NamespacePattern::parse("a*b").is_err());
        assert!(NamespacePattern::parse("").is_err());
    }

    #[test]
    fn denials_name_what_is_missing() {
        let grants = vec![Grant {
            namespaces: vec![NamespacePattern::parse("shop").unwrap()],
            permissions: Permissions::parse("lock").unwrap(),
        }];
        let p = Principal::new("team".into(), None, grants, Quota::default());
        assert_eq!(p.default_namespace().as_str(), "shop");
        let shop = Namespace::parse("shop").unwrap();
        assert!(p.authorize(&shop, Permission::Lock).is_ok());
        let err = p.authorize(&shop, Permission::LockAdmin).unwrap_err().to_string();
        assert!(err.contains("lock.admin") && err.contains("shop"), "{err}");
        let err = p.authorize(&Namespace::parse("bank").unwrap(), Permission::Lock).unwrap_err().to_string();
        assert!(err.contains("may not use namespace \"bank\""), "{err}");
    }
}
