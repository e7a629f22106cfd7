//! The gRPC adapter of LockService: validates and converts, then calls the
//! domain in `lock`.

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{
    AcquireOutcome, AcquireParams, HoldKind, Holder, LeaseId, LockInfo, Locks, LostReason, NodeResult, PermitHolder,
    ReleaseOutcome, RwMode, SemAcquire, SemKind, SemOutcome, SemReleaseOutcome, Vote,
    keepalive::{self, StreamEvent},
    lock_name,
};
use crate::{
    context::RequestContext,
    error::Error,
    pb::{self, lock_service_server::LockService},
};

/// Default and largest List page.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub struct Service {
    locks: Arc<Locks>,
    shutdown: CancellationToken,
}

impl Service {
    pub fn new(locks: Arc<Locks>, shutdown: CancellationToken) -> Self {
        Service { locks, shutdown }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl LockService for Service {
    async fn grant(&self, request: Request<pb::GrantRequest>) -> Reply<pb::GrantResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let (lease, ttl) = match ctx.principal.as_deref().and_then(|p| Some((p.name.as_str(), p.quota.leases?))) {
            Some((principal, max)) => {
                self.locks.grant_capped(&ctx.namespace, req.ttl_ms, &req.owner, principal, max).await?
            }
            None => self.locks.grant(&ctx.namespace, req.ttl_ms, &req.owner).await?,
        };
        Ok(Response::new(pb::GrantResponse { lease_id: lease.as_str().to_owned(), ttl_ms: ttl as i64 }))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Reply<pb::RevokeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let lease = LeaseId::parse(&request.get_ref().lease_id)?;
        let released = self.locks.revoke(&ctx.namespace, &lease).await?;
        if let Some(principal) = ctx.principal.as_deref().filter(|p| p.quota.leases.is_some()) {
            // Another principal's revoke is settled at that one's next Grant.
            self.locks.uncount_lease(&ctx.namespace, &lease, &principal.name).await?;
        }
        Ok(Response::new(pb::RevokeResponse { released }))
    }

    type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::KeepAliveResponse, Status>> + Send>>;

    async fn keep_alive(&self, request: Request<Streaming<pb::KeepAliveRequest>>) -> Reply<Self::KeepAliveStream> {
        let ctx = RequestContext::from_request(&request)?;
        let mut inbound = request.into_inner();
        let (req_tx, req_rx) = mpsc::channel::<Result<String, Error>>(64);
        let (out_tx, out_rx) = mpsc::channel::<Result<StreamEvent, Error>>(64);
        // The reader ends when the client closes its side or the connection
        // breaks; either way the stream loop then ends, revoking nothing. A
        // message that does not decode ends the stream with INVALID_ARGUMENT.
        tokio::spawn(async move {
            // Also ends when the stream loop does, so the request side is
            // reset rather than left open for the client to close.
            while let Some(message) = tokio::select! {
                m = inbound.next() => m,
                _ = req_tx.closed() => None,
            } {
                let request = match message {
                    Ok(m) => Ok(m.lease_id),
                    // A message that does not decode (see crate::codec).
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        let detail = status.message();
                        Err(Error::invalid("request", detail.strip_prefix("request: ").unwrap_or(detail)))
                    }
                    // The client went away (reset, cancelled): nobody to tell.
                    Err(_) => break,
                };
                let failed = request.is_err();
                if req_tx.send(request).await.is_err() || failed {
                    break;
                }
            }
        });
        tokio::spawn(keepalive::run(self.locks.clone(), ctx.namespace, req_rx, out_tx, self.shutdown.clone()));
        let stream = ReceiverStream::new(out_rx).map(|event| event.map(to_pb).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn acquire(&self, request: Request<pb::AcquireRequest>) -> Reply<pb::AcquireResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let holder = holder(&req.lease_id, req.ttl_ms)?;
        if req.wait_ms < 0 {
            return Err(Error::invalid("wait_ms", format!("must be >= 0, got {}", req.wait_ms)).into());
        }
        if let Some(mode) = rw_mode(req.mode)? {
            if !req.request_id.is_empty() {
                return Err(Error::invalid("request_id", "not supported with a mode (read/write locks)").into());
            }
            let params = SemAcquire {
                name: lock_name(&req.name)?,
                permits: 1,
                size: 1,
                mode,
                holder,
                wait: Duration::from_millis(req.wait_ms as u64),
                owner: req.owner,
                value: Vec::new(),
            };
            let outcome = acquire_counted(&self.locks, &ctx, SemKind::RwLock, params).await?;
            return Ok(Response::new(match outcome {
                SemOutcome::Acquired { permit, lease, ttl_ms, .. } => pb::AcquireResponse {
                    status: pb::AcquireStatus::Acquired.into(),
                    fencing_token: permit,
                    hold_count: 1,
                    ttl_ms,
                    lease_id: lease,
                    ..Default::default()
                },
                SemOutcome::NotAcquired { .. } => {
                    pb::AcquireResponse { status: pb::AcquireStatus::NotAcquired.into(), ..Default::default() }
                }
            }));
        }
        let params = AcquireParams {
            name: lock_name(&req.name)?,
            holder,
            wait: Duration::from_millis(req.wait_ms as u64),
            owner: req.owner,
            request_id: req.request_id,
        };
        // The acquire runs in its own task so that a caller going away
        // cancels it cleanly (the token) instead of dropping it mid-grant,
        // and a grant the caller can no longer receive is taken back.
        let cancel = CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let locks = self.locks.clone();
        let (reply_tx, reply_rx) = oneshot::channel();
        tokio::spawn(async move {
            let ns = ctx.namespace;
            let name = params.name.clone();
            let result = locks.acquire(&ns, params, ctx.deadline, cancel).await;
            if let Err(Ok(granted)) = reply_tx.send(result) {
                // The handler is gone: nobody will hear of this grant.
                locks.undo(&ns, &name, &granted).await;
            }
        });
        let outcome = reply_rx.await.map_err(|_| Error::Internal("acquire task ended without an answer".into()))??;
        Ok(Response::new(match outcome {
            AcquireOutcome::Acquired { lease, token, hold_count, ttl_ms, validity_ms, .. } => pb::AcquireResponse {
                status: pb::AcquireStatus::Acquired.into(),
                fencing_token: token,
                hold_count,
                ttl_ms,
                lease_id: lease,
                validity_ms,
                ..Default::default()
            },
            AcquireOutcome::NotAcquired { holder_owner, holder_ttl_ms, nodes } => pb::AcquireResponse {
                status: pb::AcquireStatus::NotAcquired.into(),
                ttl_ms: holder_ttl_ms,
                holder_owner,
                nodes: nodes.into_iter().map(node_to_pb).collect(),
                ..Default::default()
            },
        }))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Reply<pb::ReleaseResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = lock_name(&req.name)?;
        let lease = LeaseId::parse(&req.lease_id)?;
        if rw_mode(req.mode)?.is_some() {
            let status = match self.locks.sem_release(&ctx.namespace, SemKind::RwLock, &name, None, &lease).await? {
                SemReleaseOutcome::Released { .. } => pb::ReleaseStatus::Released,
                SemReleaseOutcome::NotHeld => pb::ReleaseStatus::NotHeld,
                SemReleaseOutcome::HeldByOther => pb::ReleaseStatus::HeldByOther,
            };
            return Ok(Response::new(pb::ReleaseResponse { status: status.into(), remaining_holds: 0 }));
        }
        let (status, remaining_holds) = match self.locks.release(&ctx.namespace, &name, &lease).await? {
            ReleaseOutcome::Released { remaining } => (pb::ReleaseStatus::Released, remaining),
            ReleaseOutcome::NotHeld => (pb::ReleaseStatus::NotHeld, 0),
            ReleaseOutcome::HeldByOther => (pb::ReleaseStatus::HeldByOther, 0),
        };
        Ok(Response::new(pb::ReleaseResponse { status: status.into(), remaining_holds }))
    }

    async fn describe(&self, request: Request<pb::DescribeRequest>) -> Reply<pb::DescribeResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let name = lock_name(&request.get_ref().name)?;
        if rw_mode(request.get_ref().mode)?.is_some() {
            let (info, mode, holders) = self.locks.rw_describe(&ctx.namespace, &name).await?;
            let mut lock = info_to_pb(info);
            lock.mode = match mode {
                None => pb::LockMode::Unspecified,
                Some(RwMode::Shared) => pb::LockMode::Shared,
                Some(RwMode::Exclusive) => pb::LockMode::Exclusive,
            }
            .into();
            lock.holders = holders.into_iter().map(holder_to_pb).collect();
            return Ok(Response::new(pb::DescribeResponse { lock: Some(lock) }));
        }
        let info = self.locks.describe(&ctx.namespace, &name).await?;
        Ok(Response::new(pb::DescribeResponse { lock: Some(info_to_pb(info)) }))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Reply<pb::ListResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let limit = match page.limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Error::invalid("page.limit", format!("must be at most {MAX_PAGE}, got {n}")).into());
            }
            n => n,
        };
        let cursor = (!page.cursor.is_empty()).then_some(page.cursor.as_str());
        let (locks, next) = self.locks.list(&ctx.namespace, &req.prefix, cursor, limit).await?;
        Ok(Response::new(pb::ListResponse {
            locks: locks.into_iter().map(info_to_pb).collect(),
            page: Some(pb::PageInfo { next_cursor: next.unwrap_or_default() }),
        }))
    }

    async fn force_release(&self, request: Request<pb::ForceReleaseRequest>) -> Reply<pb::ForceReleaseResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let name = lock_name(&request.get_ref().name)?;
        if rw_mode(request.get_ref().mode)?.is_some() {
            let token = request.get_ref().fencing_token;
            if token == 0 {
                return Err(
                    Error::invalid("fencing_token", "set it to a holder's token (see Describe) with a mode").into()
                );
            }
            let ended = self.locks.sem_force_release(&ctx.namespace, SemKind::RwLock, &name, Some(token)).await?;
            let (released, lease_id, owner) = match ended {
                Some((lease, owner, _)) => (true, lease, owner),
                None => (false, String::new(), String::new()),
            };
            ctx.audit(
                "lock.force_release",
                &format!("read/write lock {:?} token {token} (released: {released}, owner {owner:?})", name.as_str()),
            );
            return Ok(Response::new(pb::ForceReleaseResponse { released, lease_id, owner }));
        }
        let ended = self.locks.force_release(&ctx.namespace, &name).await?;
        let (released, lease_id, owner) = match ended {
            Some((lease, owner)) => (true, lease, owner),
            None => (false, String::new(), String::new()),
        };
        ctx.audit("lock.force_release", &format!("lock {:?} (released: {released}, owner {owner:?})", name.as_str()));
        Ok(Response::new(pb::ForceReleaseResponse { released, lease_id, owner }))
    }
}

fn to_pb(event: StreamEvent) -> pb::KeepAliveResponse {
    use pb::keep_alive_response::Event;
    let event = match event {
        StreamEvent::Renewed { lease, ttl_ms } => Event::Renewed(pb::LeaseRenewed { lease_id: lease, ttl_ms }),
        StreamEvent::Lost { kind, name, lease, reason, token } => Event::LockLost(pb::LockLost {
            kind: match kind {
                HoldKind::Lock => pb::HoldKind::Lock,
                HoldKind::Semaphore => pb::HoldKind::Semaphore,
                HoldKind::RwLock => pb::HoldKind::ReadWriteLock,
                HoldKind::Leadership => pb::HoldKind::Leadership,
            }
            .into(),
            name,
            lease_id: lease,
            reason: match reason {
                LostReason::Expired => pb::LockLostReason::Expired,
                LostReason::ForceReleased => pb::LockLostReason::ForceReleased,
                LostReason::LeaseRevoked => pb::LockLostReason::LeaseRevoked,
                LostReason::BackendUnavailable => pb::LockLostReason::BackendUnavailable,
                LostReason::QuorumLost => pb::LockLostReason::QuorumLost,
            }
            .into(),
            fencing_token: token,
        }),
    };
    pb::KeepAliveResponse { event: Some(event) }
}

fn node_to_pb(node: NodeResult) -> pb::NodeOutcome {
    let vote = match node.vote {
        Vote::Acquired => pb::NodeVote::Acquired,
        Vote::Held => pb::NodeVote::Held,
        Vote::Timeout => pb::NodeVote::Timeout,
        Vote::Error => pb::NodeVote::Error,
        Vote::Quarantined => pb::NodeVote::Quarantined,
    };
    pb::NodeOutcome { node: node.node, vote: vote.into(), detail: node.detail }
}

fn info_to_pb(info: LockInfo) -> pb::LockInfo {
    pb::LockInfo {
        name: info.name,
        held: info.held,
        lease_id: info.lease,
        owner: info.owner,
        fencing_token: info.token,
        ttl_ms: info.ttl_ms,
        hold_count: info.hold_count,
        waiters: info.waiters,
        ..Default::default()
    }
}

fn holder_to_pb(h: PermitHolder) -> pb::LockHolder {
    pb::LockHolder { lease_id: h.lease, owner: h.owner, fencing_token: h.permit, ttl_ms: h.ttl_ms }
}

/// A request's read/write mode; None for a plain lock.
fn rw_mode(mode: i32) -> Result<Option<RwMode>, Error> {
    match pb::LockMode::try_from(mode) {
        Ok(pb::LockMode::Unspecified) => Ok(None),
        Ok(pb::LockMode::Shared) => Ok(Some(RwMode::Shared)),
        Ok(pb::LockMode::Exclusive) => Ok(Some(RwMode::Exclusive)),
        Err(_) => Err(Error::invalid("mode", format!("unknown lock mode {mode}"))),
    }
}

/// The holder an Acquire or Campaign names: a lease, or a TTL for a new
/// private lease (exactly one of them).
pub(crate) fn holder(lease_id: &str, ttl_ms: i64) -> Result<Holder, Error> {
    match (lease_id.is_empty(), ttl_ms) {
        (false, 0) => Ok(Holder::Lease(LeaseId::parse(lease_id)?)),
        (true, ttl) if ttl != 0 => Ok(Holder::Ttl(ttl)),
        (true, _) => Err(Error::invalid("lease_id", "set lease_id or ttl_ms")),
        (false, _) => Err(Error::invalid("ttl_ms", "set lease_id or ttl_ms, not both")),
    }
}

/// Runs a semaphore or read/write Acquire in its own task, so a caller
/// going away cancels it cleanly and a grant nobody can receive is given
/// back (as for locks).
pub(crate) async fn acquire_counted(
    locks: &Arc<Locks>,
    ctx: &RequestContext,
    kind: SemKind,
    params: SemAcquire,
) -> Result<SemOutcome, Error> {
    let cancel = CancellationToken::new();
    let _cancel_on_drop = cancel.clone().drop_guard();
    let (locks, ns, deadline) = (locks.clone(), ctx.namespace.clone(), ctx.deadline);
    let (reply_tx, reply_rx) = oneshot::channel();
    tokio::spawn(async move {
        let name = params.name.clone();
        let result = locks.sem_acquire(&ns, kind, params, deadline, &cancel).await;
        if let Err(Ok(SemOutcome::Acquired { permit, lease, .. })) = reply_tx.send(result)
            && let Ok(lease) = LeaseId::parse(&lease)
        {
            // The handler is gone: nobody will hear of this grant.
            let _ = locks.sem_release(&ns, kind, &name, Some(permit), &lease).await;
        }
    });
    reply_rx.await.map_err(|_| Error::Internal("acquire task ended without an answer".into()))?
}
