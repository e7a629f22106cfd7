//! The gRPC adapter of SemaphoreService: validates and converts, then calls
//! the domain in `lock::semaphore`.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::{
    LeaseId, Locks, RwMode, SemAcquire, SemKind, SemOutcome, SemReleaseOutcome,
    grpc::{acquire_counted, holder},
    lock_name,
};
use crate::{
    context::RequestContext,
    error::Error,
    pb::{self, semaphore_service_server::SemaphoreService},
};

/// Default and largest Describe holder list.
const DEFAULT_HOLDERS: u32 = 100;
const MAX_HOLDERS: u32 = 1000;

pub struct Service {
    locks: Arc<Locks>,
}

impl Service {
    pub fn new(locks: Arc<Locks>) -> Self {
        Service { locks }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn permit_id(id: u64) -> Result<u64, Error> {
    if id == 0 {
        return Err(Error::invalid("permit_id", "must be set (from Acquire)"));
    }
    Ok(id)
}

#[tonic::async_trait]
impl SemaphoreService for Service {
    async fn acquire(
        &self,
        request: Request<pb::SemaphoreServiceAcquireRequest>,
    ) -> Reply<pb::SemaphoreServiceAcquireResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let holder = holder(&req.lease_id, req.ttl_ms)?;
        if req.wait_ms < 0 {
            return Err(Error::invalid("wait_ms", format!("must be >= 0, got {}", req.wait_ms)).into());
        }
        let params = SemAcquire {
            name: lock_name(&req.name)?,
            permits: req.permits,
            size: req.size,
            mode: RwMode::Shared,
            holder,
            wait: Duration::from_millis(req.wait_ms as u64),
            owner: req.owner,
            value: Vec::new(),
        };
        Ok(Response::new(match acquire_counted(&self.locks, &ctx, SemKind::Semaphore, params).await? {
            SemOutcome::Acquired { permit, lease, ttl_ms, size, available } => pb::SemaphoreServiceAcquireResponse {
                status: pb::SemaphoreAcquireStatus::Acquired.into(),
                permit_id: permit,
                lease_id: lease,
                ttl_ms,
                size,
                available,
                waiters_ahead: 0,
            },
            SemOutcome::NotAcquired { size, available, ahead } => pb::SemaphoreServiceAcquireResponse {
                status: pb::SemaphoreAcquireStatus::NotAcquired.into(),
                size,
                available,
                waiters_ahead: ahead,
                ..Default::default()
            },
        }))
    }

    async fn release(
        &self,
        request: Request<pb::SemaphoreServiceReleaseRequest>,
    ) -> Reply<pb::SemaphoreServiceReleaseResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = lock_name(&req.name)?;
        let id = permit_id(req.permit_id)?;
        let lease = LeaseId::parse(&req.lease_id)?;
        let (status, available) =
            match self.locks.sem_release(&ctx.namespace, SemKind::Semaphore, &name, Some(id), &lease).await? {
                SemReleaseOutcome::Released { available } => (pb::SemaphoreReleaseStatus::Released, available),
                SemReleaseOutcome::NotHeld => (pb::SemaphoreReleaseStatus::NotHeld, 0),
                SemReleaseOutcome::HeldByOther => (pb::SemaphoreReleaseStatus::HeldByOther, 0),
            };
        Ok(Response::new(pb::SemaphoreServiceReleaseResponse { status: status.into(), available }))
    }

    async fn describe(
        &self,
        request: Request<pb::SemaphoreServiceDescribeRequest>,
    ) -> Reply<pb::SemaphoreServiceDescribeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = lock_name(&req.name)?;
        let limit = match req.limit {
            0 => DEFAULT_HOLDERS,
            n if n > MAX_HOLDERS => {
                return Err(Error::invalid("limit", format!("must be at most {MAX_HOLDERS}, got {n}")).into());
            }
            n => n,
        };
        let info = self.locks.sem_describe(&ctx.namespace, SemKind::Semaphore, &name, limit).await?;
        Ok(Response::new(pb::SemaphoreServiceDescribeResponse {
            name: info.name,
            size: info.size,
            used: info.used,
            waiters: info.waiters,
            holders: info
                .holders
                .into_iter()
                .map(|h| pb::PermitHolder {
                    permit_id: h.permit,
                    permits: h.permits,
                    lease_id: h.lease,
                    owner: h.owner,
                    ttl_ms: h.ttl_ms,
                })
                .collect(),
        }))
    }

    async fn resize(
        &self,
        request: Request<pb::SemaphoreServiceResizeRequest>,
    ) -> Reply<pb::SemaphoreServiceResizeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = lock_name(&req.name)?;
        let (previous_size, used, woken) = self.locks.sem_resize(&ctx.namespace, &name, req.size).await?;
        ctx.audit("semaphore.resize", &format!("semaphore {:?} {previous_size} -> {}", name.as_str(), req.size));
        Ok(Response::new(pb::SemaphoreServiceResizeResponse { previous_size, used, woken }))
    }

    async fn force_release(
        &self,
        request: Request<pb::SemaphoreServiceForceReleaseRequest>,
    ) -> Reply<pb::SemaphoreServiceForceReleaseResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = lock_name(&req.name)?;
        let id = permit_id(req.permit_id)?;
        let ended = self.locks.sem_force_release(&ctx.namespace, SemKind::Semaphore, &name, Some(id)).await?;
        let reply = match ended {
            Some((lease_id, owner, permits)) => {
                pb::SemaphoreServiceForceReleaseResponse { released: true, lease_id, owner, permits }
            }
            None => pb::SemaphoreServiceForceReleaseResponse::default(),
        };
        ctx.audit(
            "semaphore.force_release",
            &format!(
                "semaphore {:?} permit {id} (released: {}, owner {:?})",
                name.as_str(),
                reply.released,
                reply.owner
            ),
        );
        Ok(Response::new(reply))
    }
}
