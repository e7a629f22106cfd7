//! `coord sem …`: hold permits (or run a command while holding them),
//! inspect, resize, release.

use std::{process::ExitCode, time::Duration};

use clap::Subcommand;
use serde_json::{Value, json};

use super::{
    CliError, ClientArgs,
    lock::{Want, hold},
};
use crate::pb::{
    SemaphoreServiceDescribeRequest, SemaphoreServiceForceReleaseRequest, SemaphoreServiceReleaseRequest,
    SemaphoreServiceResizeRequest, semaphore_service_client::SemaphoreServiceClient,
};

/// What `sem acquire` and `sem run` take, and how long they wait.
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    name: String,
    /// Permits to take, all or nothing
    #[arg(long, default_value_t = 1)]
    permits: u32,
    /// The semaphore's size if this creates it
    #[arg(long, default_value_t = 1)]
    size: u32,
    /// Lease TTL; renewed every third of it
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// How long to wait for the permits (0: try once)
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

#[derive(Debug, Subcommand)]
pub enum SemCommand {
    /// Take permits and hold them (renewing them) until Ctrl-C; prints the permit id
    Acquire(HoldArgs),
    /// Run a command while holding permits; exits with the command's code.
    /// If the permits are lost the command is killed and coord exits with 75.
    Run {
        #[command(flatten)]
        hold: HoldArgs,
        /// The command and its arguments (after `--`)
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show size, permits in use, holders and waiters
    Describe {
        name: String,
        /// Most holders to list
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Set the size (growing wakes waiters; shrinking takes nothing back)
    Resize { name: String, size: u32 },
    /// Give a grant back
    Release {
        name: String,
        #[arg(long)]
        permit: u64,
        #[arg(long)]
        lease: String,
    },
    /// End a grant whoever holds it (its holder is told LockLost)
    ForceRelease {
        name: String,
        #[arg(long)]
        permit: u64,
    },
}

pub async fn run(args: &ClientArgs, command: SemCommand) -> Result<ExitCode, CliError> {
    let channel = args.channel().await?;
    let mut c = SemaphoreServiceClient::new(channel.clone());
    let value = match command {
        SemCommand::Acquire(h) => {
            let want = Want::Permits { permits: h.permits, size: h.size };
            return hold(args, channel, &h.name, want, h.ttl, h.wait, None).await;
        }
        SemCommand::Run { hold: h, command } => {
            let want = Want::Permits { permits: h.permits, size: h.size };
            return hold(args, channel, &h.name, want, h.ttl, h.wait, Some(command)).await;
        }
        SemCommand::Describe { name, limit } => {
            let d = c.describe(args.request(SemaphoreServiceDescribeRequest { name, limit })).await?.into_inner();
            let holders: Vec<Value> = d
                .holders
                .iter()
                .map(|h| {
                    json!({"permit_id": h.permit_id, "permits": h.permits, "lease_id": h.lease_id, "owner": h.owner, "ttl_ms": h.ttl_ms})
                })
                .collect();
            json!({"name": d.name, "size": d.size, "used": d.used, "waiters": d.waiters, "holders": holders})
        }
        SemCommand::Resize { name, size } => {
            let r = c.resize(args.request(SemaphoreServiceResizeRequest { name, size })).await?.into_inner();
            json!({"previous_size": r.previous_size, "used": r.used, "woken": r.woken})
        }
        SemCommand::Release { name, permit, lease } => {
            let r = c
                .release(args.request(SemaphoreServiceReleaseRequest { name, permit_id: permit, lease_id: lease }))
                .await?
                .into_inner();
            json!({"status": r.status().as_str_name(), "available": r.available})
        }
        SemCommand::ForceRelease { name, permit } => {
            let r = c
                .force_release(args.request(SemaphoreServiceForceReleaseRequest { name, permit_id: permit }))
                .await?
                .into_inner();
            json!({"released": r.released, "lease_id": r.lease_id, "owner": r.owner, "permits": r.permits})
        }
    };
    args.print(&value);
    Ok(ExitCode::SUCCESS)
}
