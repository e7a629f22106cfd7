//! What every RPC knows about its caller. Services read the namespace here,
//! never from headers directly: with auth enabled it is the one the
//! [`crate::auth`] layer authorised for the caller's principal.

use std::sync::Arc;

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
}

impl RequestContext {
    /// Reads `coord-namespace` (default `default`); an invalid value is
    /// INVALID_ARGUMENT naming the header.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<Self> {
        if let Some(caller) = request.extensions().get::<Caller>() {
            return Ok(RequestContext {
                namespace: caller.namespace.clone(),
                principal: Some(caller.principal.clone()),
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
        Ok(RequestContext { namespace, principal: None })
    }

    /// Logs an operator action on state that may be another caller's.
    pub fn audit(&self, action: &str, target: &str) {
        crate::auth::audit(self.principal.as_deref().map(|p| p.name.as_str()), &self.namespace, action, target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
