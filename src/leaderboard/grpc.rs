//! The gRPC adapter of LeaderboardService: validates, converts, calls the
//! domain.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    Entry, Leaderboards, Selector, Submission,
    board::{Instance, Operator, Order, Period, Spec},
};
use crate::{
    context::RequestContext,
    error::{Error, Result},
    pb::{self, leaderboard_service_server::LeaderboardService},
};

pub struct Service {
    boards: Arc<Leaderboards>,
}

impl Service {
    pub fn new(boards: Arc<Leaderboards>) -> Self {
        Service { boards }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl LeaderboardService for Service {
    async fn create_board(&self, request: Request<pb::CreateBoardRequest>) -> Reply<pb::CreateBoardResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let board = request.into_inner().board.ok_or_else(|| Error::invalid("board", "is required"))?;
        let name = Leaderboards::name("board.name", &board.name)?;
        let order = match pb::SortOrder::try_from(board.order) {
            Ok(pb::SortOrder::Unspecified | pb::SortOrder::Descending) => Order::Descending,
            Ok(pb::SortOrder::Ascending) => Order::Ascending,
            Err(_) => return Err(Error::invalid("board.order", format!("unknown sort order {}", board.order)).into()),
        };
        let operator = operator_from_pb(board.operator, "board.operator")?.unwrap_or(Operator::Best);
        let periods = board
            .periods
            .iter()
            .enumerate()
            .map(|(i, p)| period_from_pb(p, &format!("board.periods[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let week_start = match pb::Weekday::try_from(board.week_start) {
            Ok(pb::Weekday::Unspecified) => 0,
            Ok(day) => day as u8 - 1,
            Err(_) => return Err(Error::invalid("board.week_start", "must be a weekday").into()),
        };
        let spec = Spec::new(order, operator, &periods, board.retention, week_start, "board")?;
        let (board, created) = self.boards.create(&ctx.namespace, &name, spec).await?;
        Ok(Response::new(pb::CreateBoardResponse { board: Some(board_to_pb(&board)), created }))
    }

    async fn get_board(&self, request: Request<pb::GetBoardRequest>) -> Reply<pb::GetBoardResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let name = Leaderboards::name("board", &request.get_ref().board)?;
        let (board, current) = self.boards.get(&ctx.namespace, &name).await?;
        Ok(Response::new(pb::GetBoardResponse {
            board: Some(board_to_pb(&board)),
            current: current.iter().map(instance_to_pb).collect(),
        }))
    }

    async fn delete_board(&self, request: Request<pb::DeleteBoardRequest>) -> Reply<pb::DeleteBoardResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let name = Leaderboards::name("board", &request.get_ref().board)?;
        let deleted = self.boards.delete(&ctx.namespace, &name).await?;
        ctx.audit("board.delete", &format!("board {:?} (deleted: {deleted})", name.as_str()));
        Ok(Response::new(pb::DeleteBoardResponse { deleted }))
    }

    async fn submit(&self, request: Request<pb::SubmitRequest>) -> Reply<pb::SubmitResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = Leaderboards::name("board", &req.board)?;
        let submission = Submission {
            member: Leaderboards::name("member", &req.member)?,
            score: req.score,
            subscore: req.subscore,
            operator: operator_from_pb(req.operator, "operator")?,
            metadata: req.metadata,
            request_id: (!req.request_id.is_empty()).then_some(req.request_id),
        };
        let submitted = self.boards.submit(&ctx.namespace, &name, &submission).await?;
        Ok(Response::new(pb::SubmitResponse {
            replayed: submitted.replayed,
            results: submitted
                .results
                .into_iter()
                .map(|r| pb::PeriodResult {
                    period: Some(instance_to_pb(&r.instance)),
                    entry: r.entry.map(entry_to_pb),
                    changed: r.changed,
                    count: r.count,
                })
                .collect(),
        }))
    }

    async fn get_ranks(&self, request: Request<pb::GetRanksRequest>) -> Reply<pb::GetRanksResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = Leaderboards::name("board", &req.board)?;
        let selector = selector_from_pb(req.period.as_ref())?;
        if req.members.is_empty() {
            return Err(Error::invalid("members", format!("give 1 to {} members", super::MAX_MEMBERS)).into());
        }
        let members = req
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| Leaderboards::name(&format!("members[{i}]"), m))
            .collect::<Result<Vec<_>>>()?;
        let ranks = self.boards.ranks(&ctx.namespace, &name, &selector, &members).await?;
        Ok(Response::new(pb::GetRanksResponse {
            period: Some(instance_to_pb(&ranks.instance)),
            entries: ranks
                .entries
                .into_iter()
                .map(|(member, entry)| pb::MemberEntry { member, entry: entry.map(entry_to_pb) })
                .collect(),
            count: ranks.count,
        }))
    }

    async fn top(&self, request: Request<pb::TopRequest>) -> Reply<pb::TopResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = Leaderboards::name("board", &req.board)?;
        let selector = selector_from_pb(req.period.as_ref())?;
        let cursor = (!req.cursor.is_empty()).then_some(req.cursor.as_str());
        let (page, next) = self.boards.top(&ctx.namespace, &name, &selector, req.limit, cursor, req.start_rank).await?;
        Ok(Response::new(pb::TopResponse {
            period: Some(instance_to_pb(&page.instance)),
            entries: page.entries.into_iter().map(entry_to_pb).collect(),
            next_cursor: next.unwrap_or_default(),
            count: page.count,
        }))
    }

    async fn around(&self, request: Request<pb::AroundRequest>) -> Reply<pb::AroundResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let name = Leaderboards::name("board", &req.board)?;
        let selector = selector_from_pb(req.period.as_ref())?;
        let member = Leaderboards::name("member", &req.member)?;
        let (window, found) = self
            .boards
            .around(&ctx.namespace, &name, &selector, &member, req.before, req.after, req.top_if_absent)
            .await?;
        Ok(Response::new(pb::AroundResponse {
            period: Some(instance_to_pb(&window.instance)),
            found,
            entries: window.entries.into_iter().map(entry_to_pb).collect(),
            count: window.count,
        }))
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Reply<pb::RemoveResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.get_ref();
        let name = Leaderboards::name("board", &req.board)?;
        let member = Leaderboards::name("member", &req.member)?;
        let removed = self.boards.remove(&ctx.namespace, &name, &member).await?;
        Ok(Response::new(pb::RemoveResponse { removed }))
    }

    async fn count(&self, request: Request<pb::CountRequest>) -> Reply<pb::CountResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.get_ref();
        let name = Leaderboards::name("board", &req.board)?;
        let selector = selector_from_pb(req.period.as_ref())?;
        let ranks = self.boards.ranks(&ctx.namespace, &name, &selector, &[]).await?;
        Ok(Response::new(pb::CountResponse { period: Some(instance_to_pb(&ranks.instance)), count: ranks.count }))
    }

    async fn percentile(&self, request: Request<pb::PercentileRequest>) -> Reply<pb::PercentileResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.get_ref();
        let name = Leaderboards::name("board", &req.board)?;
        let selector = selector_from_pb(req.period.as_ref())?;
        let member = Leaderboards::name("member", &req.member)?;
        let ranks = self.boards.ranks(&ctx.namespace, &name, &selector, std::slice::from_ref(&member)).await?;
        let rank = ranks.entries.first().and_then(|(_, e)| e.as_ref()).map(|e| e.rank);
        let count = ranks.count;
        Ok(Response::new(pb::PercentileResponse {
            period: Some(instance_to_pb(&ranks.instance)),
            found: rank.is_some(),
            rank: rank.unwrap_or(0),
            count,
            percentile: match rank {
                Some(rank) if count > 0 => 100.0 * (count - rank + 1) as f64 / count as f64,
                _ => 0.0,
            },
        }))
    }
}

fn operator_from_pb(value: i32, field: &str) -> Result<Option<Operator>> {
    Ok(match pb::Operator::try_from(value) {
        Ok(pb::Operator::Unspecified) => None,
        Ok(pb::Operator::Set) => Some(Operator::Set),
        Ok(pb::Operator::Best) => Some(Operator::Best),
        Ok(pb::Operator::Increment) => Some(Operator::Increment),
        Ok(pb::Operator::Decrement) => Some(Operator::Decrement),
        Err(_) => return Err(Error::invalid(field, format!("unknown operator {value}"))),
    })
}

fn period_from_pb(period: &pb::Period, field: &str) -> Result<Period> {
    let kind = pb::PeriodKind::try_from(period.kind)
        .map_err(|_| Error::invalid(format!("{field}.kind"), format!("unknown period kind {}", period.kind)))?;
    if kind != pb::PeriodKind::Fixed && period.length_ms != 0 {
        return Err(Error::invalid(format!("{field}.length_ms"), "only FIXED periods have a length"));
    }
    Ok(match kind {
        pb::PeriodKind::Unspecified | pb::PeriodKind::AllTime => Period::AllTime,
        pb::PeriodKind::Daily => Period::Daily,
        pb::PeriodKind::Weekly => Period::Weekly,
        pb::PeriodKind::Monthly => Period::Monthly,
        pb::PeriodKind::Fixed => Period::Fixed { length_ms: period.length_ms },
    })
}

fn period_to_pb(period: Period) -> pb::Period {
    let (kind, length_ms) = match period {
        Period::AllTime => (pb::PeriodKind::AllTime, 0),
        Period::Daily => (pb::PeriodKind::Daily, 0),
        Period::Weekly => (pb::PeriodKind::Weekly, 0),
        Period::Monthly => (pb::PeriodKind::Monthly, 0),
        Period::Fixed { length_ms } => (pb::PeriodKind::Fixed, length_ms),
    };
    pb::Period { kind: kind.into(), length_ms }
}

fn selector_from_pb(selector: Option<&pb::PeriodSelector>) -> Result<Selector> {
    let Some(s) = selector else { return Ok(Selector::default()) };
    let period = match &s.period {
        Some(p) => period_from_pb(p, "period.period")?,
        None => Period::AllTime,
    };
    Ok(Selector { period, ago: s.ago, id: (!s.id.is_empty()).then(|| s.id.clone()) })
}

fn instance_to_pb(instance: &Instance) -> pb::PeriodInstance {
    pb::PeriodInstance {
        period: Some(period_to_pb(instance.period)),
        id: instance.id.clone(),
        start_ms: instance.start_ms,
        end_ms: instance.end_ms,
    }
}

fn board_to_pb(board: &super::Board) -> pb::Board {
    let spec = &board.spec;
    pb::Board {
        name: board.name.clone(),
        order: match spec.order {
            Order::Descending => pb::SortOrder::Descending,
            Order::Ascending => pb::SortOrder::Ascending,
        }
        .into(),
        operator: match spec.operator {
            Operator::Set => pb::Operator::Set,
            Operator::Best => pb::Operator::Best,
            Operator::Increment => pb::Operator::Increment,
            Operator::Decrement => pb::Operator::Decrement,
        }
        .into(),
        periods: spec.periods.iter().map(|p| period_to_pb(*p)).collect(),
        retention: spec.retention,
        week_start: i32::from(spec.week_start) + 1,
        created_at_ms: board.created_at_ms,
    }
}

fn entry_to_pb(e: Entry) -> pb::Entry {
    pb::Entry {
        member: e.member,
        score: e.score,
        subscore: e.subscore,
        rank: e.rank,
        metadata: e.metadata,
        num_submits: e.num_submits,
        reached_at_ms: e.reached_at_ms,
    }
}
