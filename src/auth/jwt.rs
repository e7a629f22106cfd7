//! JWT bearer tokens: verified against configured keys (an HS256 secret,
//! RS256/ES256 public keys in PEM, or a JWKS file), carrying the principal
//! and its grant in claims:
//!
//! ```json
//! { "sub": "orders", "exp": 1767225600,
//!   "namespaces": ["orders", "orders-*"], "permissions": ["lock", "ratelimit.check"],
//!   "default_namespace": "orders" }
//! ```
//!
//! `exp` is required; `iss` and `aud` are checked when configured. Quotas
//! come from the principals file entry named like `sub`, if any. Only
//! HS256, RS256 and ES256 are accepted, so `alg: none` and algorithm
//! confusion (an RSA public key used as an HMAC secret) are refused.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use serde::Deserialize;

use super::{Authenticated, Grant, NamespacePattern, Permissions, Principal, Principals};
use crate::{error::Error, redis::Namespace};

/// Where the verification keys come from (`[auth.jwt]`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub hs256_secret_file: Option<PathBuf>,
    pub public_key_files: Vec<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

impl Settings {
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.hs256_secret_file.iter().cloned().collect();
        files.extend(self.public_key_files.iter().cloned());
        files.extend(self.jwks_file.iter().cloned());
        files
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    default_namespace: Option<String>,
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Most verified tokens remembered (a verified RS256 signature costs tens
/// of µs; a remembered one a map lookup). Dropped whole when full.
const CACHE_ENTRIES: usize = 10_000;

/// Verifies tokens against one set of keys.
pub struct Verifier {
    keys: Vec<Key>,
    settings: Settings,
    cache: Mutex<HashMap<String, Authenticated>>,
}

impl Verifier {
    /// Reads every key file; an error names the setting.
    pub fn load(settings: &Settings) -> Result<Verifier, String> {
        let mut keys = Vec::new();
        if let Some(path) = &settings.hs256_secret_file {
            let secret =
                std::fs::read(path).map_err(|e| format!("auth.jwt.hs256_secret_file: {}: {e}", path.display()))?;
            let secret = secret.trim_ascii();
            if secret.len() < 32 {
                return Err(format!(
                    "auth.jwt.hs256_secret_file: {}: the secret must be at least 32 bytes, got {}",
                    path.display(),
                    secret.len()
                ));
            }
            let key = DecodingKey::from_secret(secret)
                .map_err(|e| format!("auth.jwt.hs256_secret_file: {}: {e}", path.display()))?;
            keys.push(Key { kid: None, alg: Algorithm::HS256, key });
        }
        for path in &settings.public_key_files {
            let pem = std::fs::read(path).map_err(|e| format!("auth.jwt.public_key_files: {}: {e}", path.display()))?;
            let key = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => Key { kid: None, alg: Algorithm::RS256, key },
                Err(_) => match DecodingKey::from_ec_pem(&pem) {
                    Ok(key) => Key { kid: None, alg: Algorithm::ES256, key },
                    Err(e) => {
                        return Err(format!(
                            "auth.jwt.public_key_files: {}: not an RSA or EC public key in PEM: {e}",
                            path.display()
                        ));
                    }
                },
            };
            keys.push(key);
        }
        if let Some(path) = &settings.jwks_file {
            let text = std::fs::read(path).map_err(|e| format!("auth.jwt.jwks_file: {}: {e}", path.display()))?;
            let set: JwkSet =
                serde_json::from_slice(&text).map_err(|e| format!("auth.jwt.jwks_file: {}: {e}", path.display()))?;
            for (i, jwk) in set.keys.iter().enumerate() {
                let alg = match DecodingKey::from_jwk(jwk).map(|k| (k.family(), k)) {
                    Ok((jsonwebtoken::AlgorithmFamily::Rsa, key)) => Key { kid: None, alg: Algorithm::RS256, key },
                    Ok((jsonwebtoken::AlgorithmFamily::Ec, key)) => Key { kid: None, alg: Algorithm::ES256, key },
                    Ok(_) => return Err(format!("auth.jwt.jwks_file: keys[{i}]: only RSA and EC keys are accepted")),
                    Err(e) => return Err(format!("auth.jwt.jwks_file: keys[{i}]: {e}")),
                };
                keys.push(Key { kid: jwk.common.key_id.clone(), ..alg });
            }
        }
        if keys.is_empty() {
            return Err("auth.jwt: set hs256_secret_file, public_key_files or jwks_file".into());
        }
        Ok(Verifier { keys, settings: settings.clone(), cache: Mutex::default() })
    }

    /// A valid token's principal, or UNAUTHENTICATED saying why not.
    pub fn verify(&self, token: &str, principals: &Principals) -> Result<Authenticated, Error> {
        let now = SystemTime::now();
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(token).cloned())
            && hit.expires.is_some_and(|exp| exp > now)
        {
            return Ok(hit);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Error::Unauthenticated(format!("bearer token is neither a coord API key nor a JWT: {e}")))?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid))
            .collect();
        if candidates.is_empty() {
            return Err(Error::Unauthenticated(format!(
                "JWT algorithm {:?}{} matches no configured key",
                header.alg,
                header.kid.as_deref().map(|k| format!(" with kid {k:?}")).unwrap_or_default()
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.settings.issuer {
            validation.set_issuer(&[iss]);
        }
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let authenticated = principal(data.claims, principals, self.settings.leeway)?;
                    if let Ok(mut cache) = self.cache.lock() {
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                        cache.insert(token.to_owned(), authenticated.clone());
                    }
                    return Ok(authenticated);
                }
                Err(e) => last = Some(e),
            }
        }
        let reason = match last.as_ref().map(|e| e.kind()) {
            Some(ErrorKind::ExpiredSignature) => "JWT expired".to_owned(),
            Some(ErrorKind::InvalidSignature) => "JWT signature does not verify".to_owned(),
            Some(ErrorKind::InvalidIssuer) => "JWT issuer is not accepted".to_owned(),
            Some(ErrorKind::InvalidAudience) => "JWT audience is not accepted".to_owned(),
            Some(ErrorKind::ImmatureSignature) => "JWT not valid yet (nbf)".to_owned(),
            Some(ErrorKind::MissingRequiredClaim(c)) => format!("JWT lacks the {c:?} claim"),
            Some(other) => format!("invalid JWT: {other:?}"),
            None => "invalid JWT".to_owned(),
        };
        Err(Error::Unauthenticated(reason))
    }
}

/// The principal a token's claims describe.
/// It ends at `exp` plus the leeway the validation allowed.
fn principal(claims: Claims, principals: &Principals, leeway: Duration) -> Result<Authenticated, Error> {
    let bad = |what: String| Error::Unauthenticated(format!("JWT claims: {what}"));
    if claims.sub.is_empty() || claims.sub.len() > 128 {
        return Err(bad("sub must be 1 to 128 bytes".into()));
    }
    let namespaces = claims
        .namespaces
        .iter()
        .map(|n| NamespacePattern::parse(n).map_err(|e| bad(format!("namespaces: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut permissions = Permissions::NONE;
    for p in &claims.permissions {
        permissions |= Permissions::parse(p).map_err(|e| bad(format!("permissions: {e}")))?;
    }
    let default_namespace = match &claims.default_namespace {
        Some(ns) => Some(Namespace::parse(ns).map_err(|e| bad(format!("default_namespace: {e}")))?),
        None => None,
    };
    let quota = principals.by_name.get(&claims.sub).map(|p| p.quota.clone()).unwrap_or_default();
    let grants = vec![Grant { namespaces, permissions }];
    let principal = Arc::new(Principal::new(claims.sub, default_namespace, grants, quota));
    Ok(Authenticated { principal, expires: Some(UNIX_EPOCH + Duration::from_secs(claims.exp) + leeway) })
}
