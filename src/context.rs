//! What every RPC knows about its caller. Services read the namespace and
//! the deadline here, never from headers directly: with auth enabled the
//! namespace is the one the [`crate::auth`] layer authorised for the
//! caller's principal.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    auth::{Caller, Principal},
    error::Result,
    redis::Namespace,
};

/// gRPC metadata header that selects the tenant namespace.
pub const NAMESPACE_HEADER: &str = "coord-namespace";

/// The caller's context, extracted once per request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub namespace: Namespace,
    /// The authenticated caller; None with auth disabled.
    pub principal: Option<Arc<Principal>>,
    /// When the caller stops waiting (`grpc-timeout`), less a margin so an
    /// answer sent then still arrives in time; None without a deadline.
    pub deadline: Option<Instant>,
}

impl RequestContext {
    /// Reads `coord-namespace` (default `default`); an invalid value is
    /// INVALID_ARGUMENT naming the header.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<Self> {
        let deadline = deadline(request);
        if let Some(caller) = request.extensions().get::<Caller>() {
            return Ok(RequestContext {
                namespace: caller.namespace.clone(),
                principal: Some(caller.principal.clone()),
                deadline,
            });
        }
        let namespace = match request.metadata().get(NAMESPACE_HEADER) {
            None => Namespace::default(),
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| crate::error::Error::invalid(NAMESPACE_HEADER, "must be printable ASCII"))?;
                Namespace::parse(text)?
            }
        };
        Ok(RequestContext { namespace, principal: None, deadline })
    }

    /// Logs an operator action on state that may be another caller's.
    pub fn audit(&self, action: &str, target: &str) {
        crate::auth::audit(self.principal.as_deref().map(|p| p.name.as_str()), &self.namespace, action, target);
    }
}

fn deadline<T>(request: &tonic::Request<T>) -> Option<Instant> {
    let timeout = parse_grpc_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)?;
    let margin = (timeout / 10).min(Duration::from_millis(50));
    Some(Instant::now() + timeout.saturating_sub(margin))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }

    #[test]
    fn namespace_defaults_and_is_validated() {
        let req = tonic::Request::new(());
        assert_eq!(RequestContext::from_request(&req).unwrap().namespace.as_str(), "default");
        let mut req = tonic::Request::new(());
        req.metadata_mut().insert(NAMESPACE_HEADER, "shop".parse().unwrap());
        assert_eq!(RequestContext::from_request(&req).unwrap().namespace.as_str(), "shop");
        let mut req = tonic::Request::new(());
        req.metadata_mut().insert(NAMESPACE_HEADER, "".parse().unwrap());
        let status = tonic::Status::from(RequestContext::from_request(&req).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("coord-namespace"), "{}", status.message());
    }
}
