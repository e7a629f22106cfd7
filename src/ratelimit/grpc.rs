//! The gRPC adapter of RateLimitService.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::{Algorithm, Limit, LimitStatus, Mode, RateLimits, Source};
use crate::{
    context::RequestContext,
    error::Error,
    pb::{self, limit::Algorithm as PbAlgorithm, rate_limit_service_server::RateLimitService},
};

/// Longest limit name.
const MAX_LIMIT_NAME_BYTES: usize = 128;

pub struct Service {
    limits: Arc<RateLimits>,
}

impl Service {
    pub fn new(limits: Arc<RateLimits>) -> Self {
        Service { limits }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn check(&self, request: Request<pb::CheckRequest>) -> Reply<pb::CheckResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let subject = RateLimits::subject(&req.subject)?;
        let mode = match pb::CheckMode::try_from(req.mode) {
            Ok(pb::CheckMode::Peek) => Mode::Peek,
            Ok(pb::CheckMode::Unspecified | pb::CheckMode::Consume) => Mode::Consume,
            // An unknown mode must not charge as if it were CONSUME.
            Err(_) => return Err(Error::invalid("mode", format!("unknown check mode {}", req.mode)).into()),
        };
        let cost = req.cost.unwrap_or(1);
        let decision = match (req.policy.is_empty(), req.limits.is_empty()) {
            (false, true) => {
                let policy = self.limits.policy(&req.policy)?;
                self.limits.check_policy(&ctx.namespace, &subject, &policy, cost, mode).await?
            }
            (true, _) => {
                let limits = req
                    .limits
                    .iter()
                    .enumerate()
                    .map(|(i, l)| limit_from_pb(l, &format!("limits[{i}]")))
                    .collect::<Result<Vec<_>, Error>>()?;
                self.limits.check(&ctx.namespace, &subject, &limits, cost, mode).await?
            }
            (false, false) => return Err(Error::invalid("policy", "give limits or a policy, not both").into()),
        };
        let source = match decision.source {
            Source::Redis => pb::DecisionSource::Redis,
            Source::LocalCache => pb::DecisionSource::LocalCache,
            Source::FailOpen => pb::DecisionSource::FailOpen,
            Source::FailClosed => pb::DecisionSource::FailClosed,
        };
        Ok(Response::new(pb::CheckResponse {
            allowed: decision.allowed,
            limits: decision.limits.into_iter().map(status_to_pb).collect(),
            shadow_denied: decision.shadow_denied,
            source: source.into(),
        }))
    }

    async fn refund(&self, request: Request<pb::RefundRequest>) -> Reply<pb::RefundResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let subject = RateLimits::subject(&req.subject)?;
        ctx.audit("ratelimit.refund", &format!("subject {:?}, amount {}", subject.as_str(), req.amount));
        let status = match (&req.limit, req.policy.is_empty()) {
            (Some(limit), true) => {
                let limit = limit_from_pb(limit, "limit")?;
                self.limits.refund(&ctx.namespace, &subject, &limit, req.amount).await?
            }
            (None, false) => {
                let policy = self.limits.policy(&req.policy)?;
                self.limits.refund_policy(&ctx.namespace, &subject, &policy, &req.limit_name, req.amount).await?
            }
            _ => return Err(Error::invalid("limit", "give a limit, or a policy and limit_name").into()),
        };
        Ok(Response::new(pb::RefundResponse { limit: Some(status_to_pb(status)) }))
    }

    async fn acquire_slot(&self, request: Request<pb::AcquireSlotRequest>) -> Reply<pb::AcquireSlotResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let subject = RateLimits::subject(&req.subject)?;
        if req.ttl_ms <= 0 {
            return Err(Error::invalid("ttl_ms", format!("must be > 0, got {}", req.ttl_ms)).into());
        }
        let slot_id = (!req.slot_id.is_empty()).then_some(req.slot_id.as_str());
        let slot = self
            .limits
            .acquire_slot(
                &ctx.namespace,
                &subject,
                req.max_in_flight,
                Duration::from_millis(req.ttl_ms as u64),
                slot_id,
            )
            .await?;
        Ok(Response::new(pb::AcquireSlotResponse {
            acquired: slot.acquired,
            slot_id: slot.slot_id,
            in_flight: slot.in_flight,
            retry_after_ms: slot.retry_after_ms,
        }))
    }

    async fn release_slot(&self, request: Request<pb::ReleaseSlotRequest>) -> Reply<pb::ReleaseSlotResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let subject = RateLimits::subject(&req.subject)?;
        let released = self.limits.release_slot(&ctx.namespace, &subject, &req.slot_id).await?;
        Ok(Response::new(pb::ReleaseSlotResponse { released }))
    }
}

fn limit_from_pb(limit: &pb::Limit, field: &str) -> Result<Limit, Error> {
    let (algorithm, path) = match limit.algorithm {
        Some(PbAlgorithm::TokenBucket(t)) => (
            Algorithm::TokenBucket {
                capacity: t.capacity,
                refill_tokens: t.refill_tokens,
                refill_period_ms: t.refill_period_ms,
            },
            "token_bucket",
        ),
        Some(PbAlgorithm::Gcra(g)) => {
            (Algorithm::Gcra { rate: g.rate, period_ms: g.period_ms, burst: g.burst }, "gcra")
        }
        Some(PbAlgorithm::SlidingLog(s)) => {
            (Algorithm::SlidingLog { limit: s.limit, window_ms: s.window_ms }, "sliding_log")
        }
        Some(PbAlgorithm::SlidingWindow(s)) => {
            (Algorithm::SlidingWindow { limit: s.limit, window_ms: s.window_ms }, "sliding_window")
        }
        Some(PbAlgorithm::FixedWindow(f)) => {
            (Algorithm::FixedWindow { limit: f.limit, window_ms: f.window_ms }, "fixed_window")
        }
        None => return Err(Error::invalid(format!("{field}.algorithm"), "one algorithm is required")),
    };
    algorithm.validate(&format!("{field}.{path}"))?;
    if limit.name.len() > MAX_LIMIT_NAME_BYTES {
        return Err(Error::invalid(format!("{field}.name"), format!("must be at most {MAX_LIMIT_NAME_BYTES} bytes")));
    }
    // A single unnamed limit is named after its algorithm.
    let name = if limit.name.is_empty() { path.to_owned() } else { limit.name.clone() };
    Ok(Limit { name, algorithm })
}

fn status_to_pb(s: LimitStatus) -> pb::LimitStatus {
    pb::LimitStatus {
        name: s.name,
        allowed: s.allowed,
        limit: s.limit,
        remaining: s.remaining,
        retry_after_ms: s.retry_after_ms,
        reset_after_ms: s.reset_after_ms,
    }
}
