//! The gRPC adapter of ElectionService: validates and converts, then calls
//! the domain in `lock::election` (campaigns are semaphore acquires).

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    LeaseId, Locks, RwMode, SemAcquire, SemKind, SemOutcome,
    election::{ElectionState, check_value},
    grpc::{acquire_counted, holder},
    lock_name,
};
use crate::{
    context::RequestContext,
    error::Error,
    pb::{self, election_service_server::ElectionService},
    redis::Name,
};

pub struct Service {
    locks: Arc<Locks>,
}

impl Service {
    pub fn new(locks: Arc<Locks>) -> Self {
        Service { locks }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// `e` as about request field `name`.
fn about(e: Error, name: &str) -> Error {
    match e {
        Error::InvalidArgument { reason, .. } => Error::InvalidArgument { field: name.into(), reason },
        other => other,
    }
}

fn election(name: &str) -> Result<Name, Error> {
    lock_name(name).map_err(|e| about(e, "election"))
}

/// A Leadership from the caller: (election, lease, term).
fn leadership(l: Option<pb::Leadership>) -> Result<(Name, LeaseId, u64), Error> {
    let l = l.ok_or_else(|| Error::invalid("leadership", "must be set (from Campaign)"))?;
    let name = lock_name(&l.election).map_err(|e| about(e, "leadership.election"))?;
    let lease = LeaseId::parse(&l.lease_id).map_err(|e| about(e, "leadership.lease_id"))?;
    if l.term == 0 {
        return Err(Error::invalid("leadership.term", "must be set (from Campaign)"));
    }
    Ok((name, lease, l.term))
}

fn state_pb(s: ElectionState) -> pb::ElectionState {
    match s.leader {
        Some(l) => pb::ElectionState {
            has_leader: true,
            term: s.term,
            value: l.value,
            lease_id: l.lease,
            owner: l.owner,
            ttl_ms: l.ttl_ms,
        },
        None => pb::ElectionState { term: s.term, ..Default::default() },
    }
}

#[tonic::async_trait]
impl ElectionService for Service {
    async fn campaign(
        &self,
        request: Request<pb::ElectionServiceCampaignRequest>,
    ) -> Reply<pb::ElectionServiceCampaignResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = election(&req.election)?;
        let holder = holder(&req.lease_id, req.ttl_ms)?;
        check_value(&req.value)?;
        let wait = match req.wait_ms {
            0 => self.locks.max_wait(),
            w if w < 0 => return Err(Error::invalid("wait_ms", format!("must be >= 0, got {w}")).into()),
            w => Duration::from_millis(w as u64),
        };
        let params = SemAcquire {
            name: name.clone(),
            permits: 1,
            size: 1,
            mode: RwMode::Exclusive,
            holder,
            wait,
            owner: req.owner,
            value: req.value,
        };
        Ok(Response::new(match acquire_counted(&self.locks, &ctx, SemKind::Election, params).await? {
            SemOutcome::Acquired { permit, lease, ttl_ms, .. } => {
                metrics::counter!("coord_election_elected_total").increment(1);
                pb::ElectionServiceCampaignResponse {
                    status: pb::CampaignStatus::Elected.into(),
                    leadership: Some(pb::Leadership { election: req.election, lease_id: lease, term: permit }),
                    ttl_ms,
                    candidates_ahead: 0,
                }
            }
            SemOutcome::NotAcquired { ahead, .. } => pb::ElectionServiceCampaignResponse {
                status: pb::CampaignStatus::NotElected.into(),
                candidates_ahead: ahead,
                ..Default::default()
            },
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ElectionServiceProclaimRequest>,
    ) -> Reply<pb::ElectionServiceProclaimResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let (name, lease, term) = leadership(req.leadership)?;
        let ttl_ms = self.locks.proclaim(&ctx.namespace, &name, term, &lease, &req.value).await?;
        Ok(Response::new(pb::ElectionServiceProclaimResponse { ttl_ms }))
    }

    async fn leader(
        &self,
        request: Request<pb::ElectionServiceLeaderRequest>,
    ) -> Reply<pb::ElectionServiceLeaderResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let name = election(&request.get_ref().election)?;
        let (state, candidates) = self.locks.leader(&ctx.namespace, &name).await?;
        Ok(Response::new(pb::ElectionServiceLeaderResponse { state: Some(state_pb(state)), candidates }))
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<pb::ElectionServiceObserveResponse, Status>> + Send>>;

    async fn observe(&self, request: Request<pb::ElectionServiceObserveRequest>) -> Reply<Self::ObserveStream> {
        let ctx = RequestContext::from_request(&request)?;
        let name = election(&request.get_ref().election)?;
        let states = self.locks.observe(ctx.namespace, name)?;
        let stream = ReceiverStream::new(states).map(|state| {
            state.map(|s| pb::ElectionServiceObserveResponse { state: Some(state_pb(s)) }).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(
        &self,
        request: Request<pb::ElectionServiceResignRequest>,
    ) -> Reply<pb::ElectionServiceResignResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let (name, lease, term) = leadership(request.into_inner().leadership)?;
        let resigned = self.locks.resign(&ctx.namespace, &name, term, &lease).await?;
        Ok(Response::new(pb::ElectionServiceResignResponse { resigned }))
    }

    async fn force_resign(
        &self,
        request: Request<pb::ElectionServiceForceResignRequest>,
    ) -> Reply<pb::ElectionServiceForceResignResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = election(&req.election)?;
        let ended = self.locks.force_resign(&ctx.namespace, &name, (req.term != 0).then_some(req.term)).await?;
        let reply = match ended {
            Some((term, lease_id, owner)) => {
                pb::ElectionServiceForceResignResponse { resigned: true, term, lease_id, owner }
            }
            None => pb::ElectionServiceForceResignResponse::default(),
        };
        ctx.audit(
            "election.force_resign",
            &format!(
                "election {:?} term {} (resigned: {}, owner {:?})",
                name.as_str(),
                reply.term,
                reply.resigned,
                reply.owner
            ),
        );
        Ok(Response::new(reply))
    }
}
