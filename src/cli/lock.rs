//! `coord lock …`: acquire and hold, run a command under a lock, inspect.

use std::{process::ExitCode, time::Duration};

use clap::Subcommand;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::transport::Channel;

use super::{CliError, ClientArgs};
use crate::pb::{
    AcquireRequest, AcquireStatus, DescribeRequest, ForceReleaseRequest, KeepAliveRequest, ListRequest, LockInfo,
    LockLostReason, PageRequest, ReleaseRequest, keep_alive_response::Event, lock_service_client::LockServiceClient,
};

type Client = LockServiceClient<Channel>;

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Acquire a lock and hold it (renewing it) until Ctrl-C; prints the fencing token
    Acquire {
        name: String,
        /// Lease TTL; renewed every third of it
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How long to wait for the lock (0: try once)
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Run a command while holding a lock; exits with the command's code.
    /// If the lock is lost the command is killed and coord exits with 75.
    Run {
        name: String,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// The command and its arguments (after `--`)
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a lock's holder, token, TTL and waiters
    Describe { name: String },
    /// List held locks
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Release a lock held by a lease
    Release {
        name: String,
        #[arg(long)]
        lease: String,
    },
    /// Release a lock whoever holds it (its holder is told LockLost)
    ForceRelease { name: String },
}

/// Exit code of `lock run` when the lock was lost (EX_TEMPFAIL).
pub const LOST_EXIT: u8 = 75;

pub async fn run(args: &ClientArgs, command: LockCommand) -> Result<ExitCode, CliError> {
    let mut c = Client::new(args.channel().await?);
    let value = match command {
        LockCommand::Acquire { name, ttl, wait } => return hold(args, &mut c, &name, ttl, wait, None).await,
        LockCommand::Run { name, ttl, wait, command } => {
            return hold(args, &mut c, &name, ttl, wait, Some(command)).await;
        }
        LockCommand::Describe { name } => {
            let lock = c.describe(args.request(DescribeRequest { name })).await?.into_inner().lock;
            lock.map(info).unwrap_or(Value::Null)
        }
        LockCommand::List { prefix, limit } => {
            let mut all = Vec::new();
            let mut cursor = String::new();
            loop {
                let page = PageRequest { limit, cursor };
                let req = ListRequest { prefix: prefix.clone(), page: Some(page) };
                let reply = c.list(args.request(req)).await?.into_inner();
                all.extend(reply.locks.into_iter().map(info));
                cursor = reply.page.map(|p| p.next_cursor).unwrap_or_default();
                if cursor.is_empty() || all.len() >= limit as usize {
                    break;
                }
            }
            Value::Array(all)
        }
        LockCommand::Release { name, lease } => {
            let reply = c.release(args.request(ReleaseRequest { name, lease_id: lease })).await?.into_inner();
            json!({ "status": reply.status().as_str_name(), "remaining_holds": reply.remaining_holds })
        }
        LockCommand::ForceRelease { name } => {
            let reply = c.force_release(args.request(ForceReleaseRequest { name })).await?.into_inner();
            json!({ "released": reply.released, "lease_id": reply.lease_id, "owner": reply.owner })
        }
    };
    args.print(&value);
    Ok(ExitCode::SUCCESS)
}

fn info(l: LockInfo) -> Value {
    json!({
        "name": l.name, "held": l.held, "owner": l.owner, "fencing_token": l.fencing_token,
        "ttl_ms": l.ttl_ms, "hold_count": l.hold_count, "waiters": l.waiters, "lease_id": l.lease_id,
    })
}

/// Acquires, keeps the lease alive, and either waits for Ctrl-C or runs
/// `command`; releases at the end.
async fn hold(
    args: &ClientArgs,
    c: &mut Client,
    name: &str,
    ttl: Duration,
    wait: Duration,
    command: Option<Vec<String>>,
) -> Result<ExitCode, CliError> {
    let owner = format!("coord-cli@{}", hostname());
    let mut request = args.request(AcquireRequest {
        name: name.to_owned(),
        ttl_ms: ttl.as_millis() as i64,
        wait_ms: wait.as_millis() as i64,
        owner,
        ..Default::default()
    });
    request.set_timeout(args.timeout + wait);
    let got = c.acquire(request).await?.into_inner();
    if got.status() != AcquireStatus::Acquired {
        eprintln!("coord: lock {name:?} not acquired (held by {:?} for {} ms more)", got.holder_owner, got.ttl_ms);
        return Ok(ExitCode::from(1));
    }
    let lease = got.lease_id.clone();
    let acquired = json!({ "name": name, "fencing_token": got.fencing_token, "ttl_ms": got.ttl_ms, "lease_id": lease });
    match (&command, args.output) {
        // Under `run`, stdout belongs to the command: report on stderr.
        (Some(_), _) => eprintln!("coord: holding {name:?} with fencing token {}", got.fencing_token),
        (None, _) => args.print(&acquired),
    }

    // The keepalive stream: renew every third of the TTL.
    let (tx, rx) = mpsc::channel(4);
    let mut events = c.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
    let interval = Duration::from_millis(got.ttl_ms.max(300) as u64 / 3);
    let renew = {
        let lease = lease.clone();
        tokio::spawn(async move {
            loop {
                if tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        })
    };
    let lost = async {
        while let Some(event) = events.next().await {
            match event.map(|e| e.event) {
                Ok(Some(Event::LockLost(l))) => {
                    return format!(
                        "lock lost: {}",
                        LockLostReason::try_from(l.reason).unwrap_or_default().as_str_name()
                    );
                }
                Ok(Some(Event::Renewed(r))) if r.ttl_ms <= 0 => return "lease expired".to_owned(),
                Ok(_) => {}
                Err(status) => return format!("keepalive failed: {}", status.message()),
            }
        }
        "keepalive stream ended".to_owned()
    };

    let code = match command {
        None => {
            tokio::select! {
                reason = lost => {
                    eprintln!("coord: {reason}");
                    ExitCode::from(LOST_EXIT)
                }
                _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
            }
        }
        Some(command) => {
            let mut child = tokio::process::Command::new(&command[0]).args(&command[1..]).kill_on_drop(true).spawn()?;
            tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    ExitCode::from(status.code().map(|c| c as u8).unwrap_or(1))
                }
                reason = lost => {
                    eprintln!("coord: {reason}; killing the command");
                    let _ = child.kill().await;
                    ExitCode::from(LOST_EXIT)
                }
            }
        }
    };
    renew.abort();
    // Best effort: a lost lock answers NOT_HELD or HELD_BY_OTHER.
    let _ = c.release(args.request(ReleaseRequest { name: name.to_owned(), lease_id: lease })).await;
    Ok(code)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}
