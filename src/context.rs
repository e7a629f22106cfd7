//! What every RPC knows about its caller. Services read the namespace here,
//! never from headers directly, so binding it to credentials later is a
//! change in one place.

use crate::{error::Result, redis::Namespace};

/// gRPC metadata header that selects the tenant namespace.
pub const NAMESPACE_HEADER: &str = "coord-namespace";

/// The caller's context, extracted once per request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub namespace: Namespace,
}

impl RequestContext {
    /// Reads `coord-namespace` (default `default`); an invalid value is
    /// INVALID_ARGUMENT naming the header.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<Self> {
        let namespace = match request.metadata().get(NAMESPACE_HEADER) {
            None => Namespace::default(),
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| crate::error::Error::invalid(NAMESPACE_HEADER, "must be printable ASCII"))?;
                Namespace::parse(text)?
            }
        };
        Ok(RequestContext { namespace })
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
