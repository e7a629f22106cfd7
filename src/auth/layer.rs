//! The tower layer that authorises every gRPC call before it reaches a
//! service: credentials → principal → namespace → the method's permission →
//! quotas. The services then read the caller from the request's extensions
//! ([`crate::context::RequestContext`]).
//!
//! Streams are authorised when they open and re-checked on every credential
//! reload (so within `auth.reload_interval` of a key being removed or a
//! grant narrowed) and when a JWT expires: the stream then ends with
//! UNAUTHENTICATED or PERMISSION_DENIED.

use std::{
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::SystemTime,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tower::{Layer, Service};

use super::{Auth, Caller, Credential, Permission, Usage};
use crate::{
    context::NAMESPACE_HEADER,
    error::Error,
    pb,
    ratelimit::{Mode, RateLimits},
    redis::{Name, Namespace},
};

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// grpc.health.v1 (open unless `auth.open_health = false`).
    Health,
    /// Server reflection (open unless `auth.open_reflection = false`).
    Reflection,
    /// A permission in the call's namespace.
    Needs(Permission),
    /// Any authenticated caller (unknown methods: they then get UNIMPLEMENTED).
    Authenticated,
}

/// A method's access rule and whether it is a long-lived stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub access: Access,
    pub stream: bool,
    pub subscription: bool,
}

/// The rule of a gRPC method path, `/package.Service/Method`.
pub fn rule(path: &str) -> Rule {
    use Permission::*;
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
    let needs = |p| Rule { access: Access::Needs(p), stream: false, subscription: false };
    match service {
        "grpc.health.v1.Health" => Rule { access: Access::Health, stream: false, subscription: false },
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            Rule { access: Access::Reflection, stream: false, subscription: false }
        }
        pb::admin_service_server::SERVICE_NAME => needs(Admin),
        pb::lock_service_server::SERVICE_NAME => match method {
            // Describe tells no more than a failed Acquire does (the holder's
            // owner label), so it needs only `lock`.
            "List" | "ForceRelease" => needs(LockAdmin),
            "KeepAlive" => Rule { stream: true, ..needs(Lock) },
            _ => needs(Lock),
        },
        pb::semaphore_service_server::SERVICE_NAME => match method {
            "Resize" | "ForceRelease" => needs(LockAdmin),
            _ => needs(Lock),
        },
        pb::election_service_server::SERVICE_NAME => match method {
            "ForceResign" => needs(LockAdmin),
            "Observe" => Rule { stream: true, ..needs(Lock) },
            _ => needs(Lock),
        },
        pb::rate_limit_service_server::SERVICE_NAME => match method {
            "Refund" => needs(RatelimitAdmin),
            _ => needs(RatelimitCheck),
        },
        pb::leaderboard_service_server::SERVICE_NAME => match method {
            "CreateBoard" | "DeleteBoard" => needs(BoardAdmin),
            "Submit" | "Remove" => needs(BoardWrite),
            _ => needs(BoardRead),
        },
        pb::pub_sub_service_server::SERVICE_NAME => match method {
            "Subscribe" => Rule { stream: true, subscription: true, ..needs(PubsubSubscribe) },
            _ => needs(PubsubPublish),
        },
        // Envoy's rate limit filter: a check in the caller's namespace.
        crate::envoy::service::ratelimit::v3::rate_limit_service_server::SERVICE_NAME => needs(RatelimitCheck),
        _ => Rule { access: Access::Authenticated, stream: false, subscription: false },
    }
}

/// Authorises calls when `auth` is set; passes them through otherwise.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Option<Arc<Auth>>,
    limits: Arc<RateLimits>,
}

impl AuthLayer {
    pub fn new(auth: Option<Arc<Auth>>, limits: Arc<RateLimits>) -> Self {
        AuthLayer { auth, limits }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone(), limits: self.limits.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
    limits: Arc<RateLimits>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = Response<AuthBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(auth) = self.auth.clone() else {
            let fut = inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(AuthBody::plain)) });
        };
        let rule = rule(req.uri().path());
        let open = match rule.access {
            Access::Health => auth.settings().open_health,
            Access::Reflection => auth.settings().open_reflection,
            _ => false,
        };
        if open {
            let fut = inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(AuthBody::plain)) });
        }
        let credential = credential(&req);
        let limits = self.limits.clone();
        Box::pin(async move {
            let admitted = admit(&auth, &limits, rule, &credential, req.headers()).await;
            let (caller, guard, expires) = match admitted {
                Ok(admitted) => admitted,
                Err(status) => return Ok(status.into_http::<ResBody>().map(AuthBody::plain)),
            };
            let watch = rule.stream.then(|| {
                let future: BoxFuture<tonic::Status> =
                    Box::pin(revocation(auth.clone(), credential, caller.namespace.clone(), rule.access, expires));
                future
            });
            req.extensions_mut().insert(caller);
            let response = inner.call(req).await?;
            Ok(response.map(|inner| AuthBody { inner, guard, revoked: watch, cut: false }))
        })
    }
}

/// Bearer token and client-certificate names of a call.
fn credential<B>(req: &Request<B>) -> Credential {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let certificate = req.extensions().get::<crate::transport::ConnInfo>().and_then(|c| c.certificate.clone());
    Credential { bearer, certificate }
}

/// Authenticates and authorises one call, and takes its quotas.
async fn admit(
    auth: &Auth,
    limits: &RateLimits,
    rule: Rule,
    credential: &Credential,
    headers: &HeaderMap,
) -> Result<(Caller, Option<StreamGuard>, Option<SystemTime>), tonic::Status> {
    let who = auth.authenticate(credential)?;
    let principal = who.principal;
    let header = match headers.get(NAMESPACE_HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| Error::invalid(NAMESPACE_HEADER, "must be printable ASCII"))?),
        None => None,
    };
    let namespace = Auth::namespace(&principal, header)?;
    if let Access::Needs(permission) = rule.access {
        principal.authorize(&namespace, permission)?;
    }
    if let Some(policy) = &principal.rate {
        let subject = Name::parse("principal", &principal.name)?;
        // Redis trouble: the policy fails open (the call itself will say).
        if let Ok(decision) = limits.check_policy(&Namespace::internal(), &subject, policy, 1, Mode::Consume).await
            && !decision.allowed
        {
            let retry_ms = decision.limits.iter().map(|l| l.retry_after_ms).max().unwrap_or(0).max(1);
            metrics::counter!("coord_auth_quota_denials_total", "principal" => principal.name.clone(), "quota" => "requests_per_second").increment(1);
            let mut status = tonic::Status::from(Error::ResourceExhausted(format!(
                "principal {:?} is over its quota of {} requests per second; retry after {retry_ms} ms",
                principal.name,
                principal.quota.requests_per_second.unwrap_or_default()
            )));
            if let Ok(v) = retry_ms.to_string().parse() {
                status.metadata_mut().insert("retry-after-ms", v);
            }
            return Err(status);
        }
    }
    let guard = match rule.stream {
        true => Some(StreamGuard::take(auth.usage(&principal.name), &principal, rule.subscription)?),
        false => None,
    };
    Ok((Caller { principal, namespace }, guard, who.expires))
}

/// Ends a stream when its credential stops being valid for it.
async fn revocation(
    auth: Arc<Auth>,
    credential: Credential,
    namespace: Namespace,
    access: Access,
    expires: Option<SystemTime>,
) -> tonic::Status {
    let mut reloads = auth.reloads();
    let expiry = async {
        match expires {
            Some(at) => tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            _ = &mut expiry => return Error::Unauthenticated("credentials expired; stream ended".into()).into(),
            changed = reloads.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
                let still = auth.authenticate(&credential).and_then(|who| match access {
                    Access::Needs(p) => who.principal.authorize(&namespace, p),
                    _ => Ok(()),
                });
                if let Err(e) = still {
                    tracing::info!(target: "coord::audit", event = "stream_revoked", namespace = namespace.as_str(), reason = %e, "stream ended: credentials no longer valid");
                    return match e {
                        Error::Unauthenticated(m) => Error::Unauthenticated(format!("stream ended: {m}")),
                        Error::PermissionDenied(m) => Error::PermissionDenied(format!("stream ended: {m}")),
                        other => other,
                    }
                    .into();
                }
            }
        }
    }
}

/// One open stream counted against its principal's quotas.
pub struct StreamGuard {
    usage: Arc<Usage>,
    subscription: bool,
}

impl StreamGuard {
    fn take(usage: Arc<Usage>, principal: &super::Principal, subscription: bool) -> Result<StreamGuard, tonic::Status> {
        let over = |quota: &str, limit: u32| {
            metrics::counter!("coord_auth_quota_denials_total", "principal" => principal.name.clone(), "quota" => quota.to_owned()).increment(1);
            tonic::Status::from(Error::ResourceExhausted(format!(
                "principal {:?} has {limit} open {quota} on this instance, its quota; close one first",
                principal.name
            )))
        };
        let streams = usage.streams.fetch_add(1, Ordering::AcqRel) + 1;
        let subscriptions = match subscription {
            true => usage.subscriptions.fetch_add(1, Ordering::AcqRel) + 1,
            false => 0,
        };
        // Counted first, so a refused stream is uncounted by the guard's drop.
        let guard = StreamGuard { usage, subscription };
        if let Some(limit) = principal.quota.streams
            && streams > limit
        {
            return Err(over("streams", limit));
        }
        if let Some(limit) = principal.quota.subscriptions
            && subscription
            && subscriptions > limit
        {
            return Err(over("subscriptions", limit));
        }
        Ok(guard)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.usage.streams.fetch_sub(1, Ordering::AcqRel);
        if self.subscription {
            self.usage.subscriptions.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its stream's quota and ends itself when
    /// the credential that opened it is revoked or expires.
    pub struct AuthBody<B> {
        #[pin]
        inner: B,
        guard: Option<StreamGuard>,
        revoked: Option<BoxFuture<tonic::Status>>,
        cut: bool,
    }
}

impl<B> AuthBody<B> {
    fn plain(inner: B) -> Self {
        AuthBody { inner, guard: None, revoked: None, cut: false }
    }
}

impl<B: Default> Default for AuthBody<B> {
    fn default() -> Self {
        AuthBody::plain(B::default())
    }
}

impl<B> Body for AuthBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.cut {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                let Some(revoked) = this.revoked.as_mut() else { return Poll::Pending };
                let Poll::Ready(status) = revoked.as_mut().poll(cx) else { return Poll::Pending };
                *this.cut = true;
                *this.guard = None;
                let mut trailers = HeaderMap::new();
                match status.add_header(&mut trailers) {
                    Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Err(_) => Poll::Ready(None),
                }
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_every_service_has_its_permission() {
        use Permission::*;
        let needs = |path: &str| match rule(path).access {
            Access::Needs(p) => Some(p),
            _ => None,
        };
        assert_eq!(needs("/coord.v1.LockService/Acquire"), Some(Lock));
        assert_eq!(needs("/coord.v1.LockService/ForceRelease"), Some(LockAdmin));
        assert_eq!(needs("/coord.v1.SemaphoreService/Acquire"), Some(Lock));
        assert_eq!(needs("/coord.v1.SemaphoreService/Describe"), Some(Lock));
        assert_eq!(needs("/coord.v1.SemaphoreService/Resize"), Some(LockAdmin));
        assert_eq!(needs("/coord.v1.SemaphoreService/ForceRelease"), Some(LockAdmin));
        assert_eq!(needs("/coord.v1.ElectionService/Campaign"), Some(Lock));
        assert_eq!(needs("/coord.v1.ElectionService/Observe"), Some(Lock));
        assert_eq!(needs("/coord.v1.ElectionService/ForceResign"), Some(LockAdmin));
        assert_eq!(needs("/coord.v1.RateLimitService/Refund"), Some(RatelimitAdmin));
        assert_eq!(needs("/coord.v1.LeaderboardService/DeleteBoard"), Some(BoardAdmin));
        assert_eq!(needs("/coord.v1.LeaderboardService/Submit"), Some(BoardWrite));
        assert_eq!(needs("/coord.v1.LeaderboardService/Top"), Some(BoardRead));
        assert_eq!(needs("/coord.v1.PubSubService/Publish"), Some(PubsubPublish));
        assert_eq!(needs("/coord.v1.AdminService/GetBackendStatus"), Some(Admin));
        assert_eq!(rule("/grpc.health.v1.Health/Check").access, Access::Health);
        assert_eq!(rule("/nope.Service/X").access, Access::Authenticated);
        assert!(rule("/coord.v1.PubSubService/Subscribe").subscription);
        assert!(rule("/coord.v1.LockService/KeepAlive").stream);
    }
}
