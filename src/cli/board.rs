//! `coord board …`: leaderboards.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{CliError, ClientArgs};
use crate::pb::{
    AroundRequest, Board, CreateBoardRequest, Entry, GetRanksRequest, Operator, Period, PeriodKind, PeriodSelector,
    RemoveRequest, SortOrder, SubmitRequest, TopRequest, leaderboard_service_client::LeaderboardServiceClient,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Op {
    Set,
    Best,
    Increment,
    Decrement,
}

impl From<Op> for Operator {
    fn from(op: Op) -> Self {
        match op {
            Op::Set => Operator::Set,
            Op::Best => Operator::Best,
            Op::Increment => Operator::Increment,
            Op::Decrement => Operator::Decrement,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BoardCommand {
    /// Create a board (idempotent for the same settings)
    Create {
        name: String,
        /// Lowest score first
        #[arg(long)]
        ascending: bool,
        #[arg(long, value_enum, default_value_t = Op::Best)]
        operator: Op,
        /// Periods besides all-time: daily, weekly, monthly or a length (1h)
        #[arg(long = "period", value_delimiter = ',')]
        periods: Vec<String>,
        /// Past periods kept readable
        #[arg(long, default_value_t = 0)]
        retention: u32,
    },
    /// Submit a score; prints the entry and rank in every period
    Submit {
        board: String,
        member: String,
        #[arg(allow_hyphen_values = true)]
        score: i64,
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        subscore: i64,
        /// Override the board's operator
        #[arg(long, value_enum)]
        operator: Option<Op>,
        #[arg(long)]
        metadata: Option<String>,
    },
    /// The best entries
    Top {
        board: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[arg(long, default_value = "")]
        cursor: String,
        #[command(flatten)]
        period: PeriodArgs,
    },
    /// Entries and ranks of members
    Rank {
        board: String,
        #[arg(required = true)]
        members: Vec<String>,
        #[command(flatten)]
        period: PeriodArgs,
    },
    /// The entries around a member
    Around {
        board: String,
        member: String,
        #[arg(long, default_value_t = 5)]
        before: u32,
        #[arg(long, default_value_t = 5)]
        after: u32,
        #[command(flatten)]
        period: PeriodArgs,
    },
    /// Remove a member from the current periods
    Remove { board: String, member: String },
}

#[derive(Debug, Clone, clap::Args)]
pub struct PeriodArgs {
    /// Period to read: all-time (default), daily, weekly, monthly or a length (1h)
    #[arg(long)]
    period: Option<String>,
    /// 0 = current instance, 1 = the previous one, …
    #[arg(long, default_value_t = 0)]
    ago: u32,
}

fn period(text: &str) -> Result<Period, CliError> {
    let kind = match text {
        "all-time" | "all_time" => PeriodKind::AllTime,
        "daily" => PeriodKind::Daily,
        "weekly" => PeriodKind::Weekly,
        "monthly" => PeriodKind::Monthly,
        length => {
            let d = humantime::parse_duration(length).map_err(|_| {
                CliError::Usage(format!("period {text:?}: all-time, daily, weekly, monthly or a length"))
            })?;
            return Ok(Period { kind: PeriodKind::Fixed.into(), length_ms: d.as_millis() as i64 });
        }
    };
    Ok(Period { kind: kind.into(), length_ms: 0 })
}

impl PeriodArgs {
    fn selector(&self) -> Result<Option<PeriodSelector>, CliError> {
        Ok(Some(PeriodSelector {
            period: self.period.as_deref().map(period).transpose()?,
            ago: self.ago,
            id: String::new(),
        }))
    }
}

fn entry(e: &Entry) -> Value {
    json!({ "rank": e.rank, "member": e.member, "score": e.score, "subscore": e.subscore,
            "submits": e.num_submits, "metadata": e.metadata })
}

pub async fn run(args: &ClientArgs, command: BoardCommand) -> Result<ExitCode, CliError> {
    let mut c = LeaderboardServiceClient::new(args.channel().await?);
    let value = match command {
        BoardCommand::Create { name, ascending, operator, periods, retention } => {
            let board = Board {
                name,
                order: if ascending { SortOrder::Ascending } else { SortOrder::Descending }.into(),
                operator: Operator::from(operator).into(),
                periods: periods.iter().map(|p| period(p)).collect::<Result<_, _>>()?,
                retention,
                ..Default::default()
            };
            let r = c.create_board(args.request(CreateBoardRequest { board: Some(board) })).await?.into_inner();
            json!({ "board": r.board.map(|b| b.name).unwrap_or_default(), "created": r.created })
        }
        BoardCommand::Submit { board, member, score, subscore, operator, metadata } => {
            let req = SubmitRequest {
                board,
                member,
                score,
                subscore,
                operator: operator.map(Operator::from).unwrap_or(Operator::Unspecified).into(),
                metadata,
                request_id: String::new(),
            };
            let r = c.submit(args.request(req)).await?.into_inner();
            Value::Array(
                r.results
                    .iter()
                    .map(|p| {
                        let mut v = p.entry.as_ref().map(entry).unwrap_or(json!({}));
                        v["period"] = json!(p.period.as_ref().map(|i| i.id.clone()).unwrap_or_default());
                        v["changed"] = json!(p.changed);
                        v["count"] = json!(p.count);
                        v
                    })
                    .collect(),
            )
        }
        BoardCommand::Top { board, limit, cursor, period } => {
            let req = TopRequest { board, period: period.selector()?, limit, cursor, start_rank: 0 };
            let r = c.top(args.request(req)).await?.into_inner();
            match args.output {
                super::Output::Json => json!({ "entries": r.entries.iter().map(entry).collect::<Vec<_>>(),
                                               "count": r.count, "next_cursor": r.next_cursor }),
                super::Output::Table => Value::Array(r.entries.iter().map(entry).collect()),
            }
        }
        BoardCommand::Rank { board, members, period } => {
            let req = GetRanksRequest { board, period: period.selector()?, members };
            let r = c.get_ranks(args.request(req)).await?.into_inner();
            Value::Array(
                r.entries
                    .iter()
                    .map(|m| m.entry.as_ref().map(entry).unwrap_or(json!({ "member": m.member, "rank": null })))
                    .collect(),
            )
        }
        BoardCommand::Around { board, member, before, after, period } => {
            let req = AroundRequest { board, period: period.selector()?, member, before, after, top_if_absent: false };
            let r = c.around(args.request(req)).await?.into_inner();
            Value::Array(r.entries.iter().map(entry).collect())
        }
        BoardCommand::Remove { board, member } => {
            let r = c.remove(args.request(RemoveRequest { board, member })).await?.into_inner();
            json!({ "removed": r.removed })
        }
    };
    args.print(&value);
    Ok(ExitCode::SUCCESS)
}
