//! `coord limit …`: rate-limit checks and concurrency slots.

use std::{process::ExitCode, time::Duration};

use clap::Subcommand;
use serde_json::json;

use super::{CliError, ClientArgs};
use crate::pb::{
    AcquireSlotRequest, CheckRequest, FixedWindow, Gcra, Limit, ReleaseSlotRequest, SlidingLog, SlidingWindow,
    TokenBucket, limit::Algorithm, rate_limit_service_client::RateLimitServiceClient,
};

#[derive(Debug, Subcommand)]
pub enum LimitCommand {
    /// Check (and charge) a subject against a policy or an inline limit;
    /// exits 0 when allowed, 1 when denied
    Check {
        subject: String,
        /// A named policy of the server's policy file
        #[arg(long, conflicts_with = "limit")]
        policy: Option<String>,
        /// An inline limit: ALGO:N/PERIOD[:BURST], ALGO one of fixed,
        /// slide, log, bucket, gcra; e.g. fixed:100/1m, gcra:10/1s:20
        #[arg(long)]
        limit: Option<String>,
        #[arg(long, default_value_t = 1)]
        cost: u64,
    },
    /// Concurrency slots
    #[command(subcommand)]
    Slots(SlotsCommand),
}

#[derive(Debug, Subcommand)]
pub enum SlotsCommand {
    /// Take one of at most --max slots for --ttl; exits 1 when all are taken
    Acquire {
        subject: String,
        #[arg(long)]
        max: u64,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Renew this slot instead of taking a new one
        #[arg(long, default_value = "")]
        slot: String,
    },
    /// Free a slot
    Release { subject: String, slot: String },
}

/// Parses `ALGO:N/PERIOD[:BURST]`.
pub fn parse_limit(spec: &str) -> Result<Limit, CliError> {
    let usage = || CliError::Usage(format!("--limit {spec:?}: expected ALGO:N/PERIOD[:BURST], e.g. fixed:100/1m"));
    let mut parts = spec.split(':');
    let (algo, rate, burst) = (parts.next().ok_or_else(usage)?, parts.next().ok_or_else(usage)?, parts.next());
    let (n, period) = rate.split_once('/').ok_or_else(usage)?;
    let n: u64 = n.parse().map_err(|_| usage())?;
    let ms = humantime::parse_duration(period).map_err(|_| usage())?.as_millis() as i64;
    let burst: u64 = burst.map(str::parse).transpose().map_err(|_| usage())?.unwrap_or(n);
    let algorithm = match algo {
        "fixed" => Algorithm::FixedWindow(FixedWindow { limit: n, window_ms: ms }),
        "slide" => Algorithm::SlidingWindow(SlidingWindow { limit: n, window_ms: ms }),
        "log" => Algorithm::SlidingLog(SlidingLog { limit: n, window_ms: ms }),
        "bucket" => Algorithm::TokenBucket(TokenBucket { capacity: burst, refill_tokens: n, refill_period_ms: ms }),
        "gcra" => Algorithm::Gcra(Gcra { rate: n, period_ms: ms, burst }),
        _ => return Err(usage()),
    };
    Ok(Limit { name: String::new(), algorithm: Some(algorithm) })
}

pub async fn run(args: &ClientArgs, command: LimitCommand) -> Result<ExitCode, CliError> {
    let mut c = RateLimitServiceClient::new(args.channel().await?);
    match command {
        LimitCommand::Check { subject, policy, limit, cost } => {
            let limits = match (&policy, &limit) {
                (None, Some(spec)) => vec![parse_limit(spec)?],
                (Some(_), None) => Vec::new(),
                _ => return Err(CliError::Usage("give --policy or --limit".into())),
            };
            let req = CheckRequest { subject, limits, policy: policy.unwrap_or_default(), cost: Some(cost), mode: 0 };
            let reply = c.check(args.request(req)).await?.into_inner();
            let limits: Vec<_> = reply
                .limits
                .iter()
                .map(|l| {
                    json!({ "name": l.name, "allowed": l.allowed, "limit": l.limit, "remaining": l.remaining,
                            "retry_after_ms": l.retry_after_ms, "reset_after_ms": l.reset_after_ms })
                })
                .collect();
            args.print(&json!({ "allowed": reply.allowed, "source": reply.source().as_str_name(), "limits": limits }));
            Ok(if reply.allowed { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_NO) })
        }
        LimitCommand::Slots(SlotsCommand::Acquire { subject, max, ttl, slot }) => {
            let req = AcquireSlotRequest { subject, max_in_flight: max, ttl_ms: ttl.as_millis() as i64, slot_id: slot };
            let r = c.acquire_slot(args.request(req)).await?.into_inner();
            args.print(&json!({ "acquired": r.acquired, "slot_id": r.slot_id, "in_flight": r.in_flight,
                                "retry_after_ms": r.retry_after_ms }));
            Ok(if r.acquired { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_NO) })
        }
        LimitCommand::Slots(SlotsCommand::Release { subject, slot }) => {
            let r = c.release_slot(args.request(ReleaseSlotRequest { subject, slot_id: slot })).await?.into_inner();
            args.print(&json!({ "released": r.released }));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_specs_parse() {
        let l = parse_limit("gcra:10/1s:20").unwrap();
        assert_eq!(l.algorithm, Some(Algorithm::Gcra(Gcra { rate: 10, period_ms: 1000, burst: 20 })));
        let l = parse_limit("fixed:100/1m").unwrap();
        assert_eq!(l.algorithm, Some(Algorithm::FixedWindow(FixedWindow { limit: 100, window_ms: 60_000 })));
        assert!(parse_limit("fixed:100").is_err());
        assert!(parse_limit("nope:1/1s").is_err());
    }
}
