//! `coord elect …`: campaign and lead (or run a command only while leading),
//! show or follow the leader, resign, depose.

use std::{process::ExitCode, time::Duration};

use clap::Subcommand;
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;

use super::{
    CliError, ClientArgs,
    lock::{Want, hold},
};
use crate::pb::{
    ElectionServiceForceResignRequest, ElectionServiceLeaderRequest, ElectionServiceObserveRequest,
    ElectionServiceResignRequest, ElectionState, Leadership, election_service_client::ElectionServiceClient,
};

/// What `elect campaign` and `elect run` take.
#[derive(Debug, Clone, clap::Args)]
pub struct CampaignArgs {
    election: String,
    /// The value to lead with (e.g. this instance's address)
    #[arg(long, default_value = "")]
    value: String,
    /// Lease TTL; renewed every third of it
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// How long to wait for the leadership (0: until elected)
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ElectCommand {
    /// Wait until elected, then lead (renewing) until Ctrl-C; prints the term
    Campaign(CampaignArgs),
    /// Wait until elected, then run a command only while leading; exits with
    /// the command's code. If the leadership is lost the command is killed
    /// and coord exits with 75.
    Run {
        #[command(flatten)]
        campaign: CampaignArgs,
        /// The command and its arguments (after `--`)
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show the current leader (or none) and the candidates waiting
    Leader { election: String },
    /// Print the leader, then every change, until Ctrl-C
    Observe { election: String },
    /// Give up a leadership
    Resign {
        election: String,
        #[arg(long)]
        lease: String,
        #[arg(long)]
        term: u64,
    },
    /// End the current leadership whoever holds it (its leader is told)
    ForceResign {
        election: String,
        /// Only the leadership of this term (default: whoever leads)
        #[arg(long, default_value_t = 0)]
        term: u64,
    },
}

fn state_json(s: &ElectionState) -> Value {
    if !s.has_leader {
        return json!({"leader": false, "last_term": s.term});
    }
    json!({
        "leader": true, "term": s.term, "value": String::from_utf8_lossy(&s.value),
        "lease_id": s.lease_id, "owner": s.owner, "ttl_ms": s.ttl_ms,
    })
}

pub async fn run(args: &ClientArgs, command: ElectCommand) -> Result<ExitCode, CliError> {
    let channel = args.channel().await?;
    let mut c = ElectionServiceClient::new(channel.clone());
    let value = match command {
        ElectCommand::Campaign(a) => {
            let want = Want::Leadership(a.value.into_bytes());
            return hold(args, channel, &a.election, want, a.ttl, a.wait, None).await;
        }
        ElectCommand::Run { campaign: a, command } => {
            let want = Want::Leadership(a.value.into_bytes());
            return hold(args, channel, &a.election, want, a.ttl, a.wait, Some(command)).await;
        }
        ElectCommand::Leader { election } => {
            let r = c.leader(args.request(ElectionServiceLeaderRequest { election })).await?.into_inner();
            let mut v = state_json(&r.state.unwrap_or_default());
            v["candidates"] = json!(r.candidates);
            v
        }
        ElectCommand::Observe { election } => {
            let mut request = tonic::Request::new(ElectionServiceObserveRequest { election });
            *request.metadata_mut() = args.metadata();
            let mut stream = c.observe(request).await?.into_inner();
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                };
                let Some(next) = next else { return Ok(ExitCode::SUCCESS) };
                args.print(&state_json(&next?.state.unwrap_or_default()));
            }
        }
        ElectCommand::Resign { election, lease, term } => {
            let leadership = Leadership { election, lease_id: lease, term };
            let r = c.resign(args.request(ElectionServiceResignRequest { leadership: Some(leadership) })).await?;
            json!({"resigned": r.into_inner().resigned})
        }
        ElectCommand::ForceResign { election, term } => {
            let r = c.force_resign(args.request(ElectionServiceForceResignRequest { election, term })).await?;
            let r = r.into_inner();
            json!({"resigned": r.resigned, "term": r.term, "lease_id": r.lease_id, "owner": r.owner})
        }
    };
    args.print(&value);
    Ok(ExitCode::SUCCESS)
}
