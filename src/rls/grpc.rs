//! The gRPC adapter of `envoy.service.ratelimit.v3.RateLimitService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Descriptor, Rls, Unit};
use crate::{
    context::RequestContext,
    envoy::{
        config::core::v3::HeaderValue,
        service::ratelimit::v3::{
            RateLimitRequest, RateLimitResponse,
            rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit as PbUnit},
            rate_limit_service_server::RateLimitService,
        },
        r#type::v3::RateLimitUnit,
    },
    error::Error,
};

pub struct Service {
    rls: Arc<Rls>,
}

impl Service {
    pub fn new(rls: Arc<Rls>) -> Self {
        Service { rls }
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let descriptors = req
            .descriptors
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let limit = match d.limit {
                    None => None,
                    Some(o) => Some((o.requests_per_unit, unit_of_override(o.unit, i)?)),
                };
                let entries = d.entries.into_iter().map(|e| (e.key, e.value)).collect();
                Ok(Descriptor { entries, limit, hits: d.hits_addend })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let req = super::Request { domain: req.domain, descriptors, hits_addend: req.hits_addend };
        let answer = self.rls.should_rate_limit(&ctx.namespace, req).await?;
        Ok(Response::new(RateLimitResponse {
            overall_code: if answer.over { Code::OverLimit } else { Code::Ok }.into(),
            statuses: answer
                .statuses
                .into_iter()
                .map(|s| DescriptorStatus {
                    code: if s.over { Code::OverLimit } else { Code::Ok }.into(),
                    current_limit: s.limit.map(|l| RateLimit {
                        name: l.name,
                        requests_per_unit: l.requests_per_unit,
                        unit: unit_to_pb(l.unit).into(),
                    }),
                    limit_remaining: s.remaining,
                    duration_until_reset: s
                        .reset
                        .map(|d| prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }),
                    quota: None,
                })
                .collect(),
            response_headers_to_add: answer
                .headers
                .into_iter()
                .map(|(key, value)| HeaderValue { key, value, raw_value: Vec::new() })
                .collect(),
            ..Default::default()
        }))
    }
}

/// A request's override unit (`envoy.type.v3.RateLimitUnit`, no WEEK).
fn unit_of_override(unit: i32, i: usize) -> Result<Unit, Error> {
    Ok(match RateLimitUnit::try_from(unit) {
        Ok(RateLimitUnit::Second) => Unit::Second,
        Ok(RateLimitUnit::Minute) => Unit::Minute,
        Ok(RateLimitUnit::Hour) => Unit::Hour,
        Ok(RateLimitUnit::Day) => Unit::Day,
        Ok(RateLimitUnit::Month) => Unit::Month,
        Ok(RateLimitUnit::Year) => Unit::Year,
        Ok(RateLimitUnit::Unknown) | Err(_) => {
            return Err(Error::invalid(
                format!("descriptors[{i}].limit.unit"),
                format!("must be SECOND … YEAR (1 … 6), got {unit}"),
            ));
        }
    })
}

fn unit_to_pb(unit: Unit) -> PbUnit {
    match unit {
        Unit::Second => PbUnit::Second,
        Unit::Minute => PbUnit::Minute,
        Unit::Hour => PbUnit::Hour,
        Unit::Day => PbUnit::Day,
        Unit::Week => PbUnit::Week,
        Unit::Month => PbUnit::Month,
        Unit::Year => PbUnit::Year,
    }
}
