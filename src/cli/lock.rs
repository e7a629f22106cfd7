//! `coord lock …`: acquire and hold, run a command under a lock (or a
//! read/write hold), inspect. `hold` also serves `coord sem`.

use std::{process::ExitCode, time::Duration};

use clap::Subcommand;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{CliError, ClientArgs};
use crate::{
    client::{ClientError, LockClient, LockGuard, LockOptions},
    pb::{
        DescribeRequest, ForceReleaseRequest, ListRequest, LockInfo, LockMode, PageRequest, ReleaseRequest,
        lock_service_client::LockServiceClient,
    },
};

type Client = LockServiceClient<Channel>;

/// A read/write lock's mode (`--shared` / `--exclusive`); neither: a plain
/// lock.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ModeArgs {
    /// Hold the name's read/write lock for reading (many readers)
    #[arg(long, conflicts_with = "exclusive")]
    shared: bool,
    /// Hold the name's read/write lock for writing (one writer, no readers)
    #[arg(long)]
    exclusive: bool,
}

impl ModeArgs {
    fn mode(self) -> Option<LockMode> {
        match (self.shared, self.exclusive) {
            (true, _) => Some(LockMode::Shared),
            (_, true) => Some(LockMode::Exclusive),
            _ => None,
        }
    }
}

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
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// Run a command while holding a lock; exits with the command's code.
    /// If the lock is lost the command is killed and coord exits with 75.
    Run {
        name: String,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
        #[command(flatten)]
        mode: ModeArgs,
        /// The command and its arguments (after `--`)
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a lock's holder, token, TTL and waiters (with --shared or
    /// --exclusive: the read/write lock's mode and holders)
    Describe {
        name: String,
        #[command(flatten)]
        mode: ModeArgs,
    },
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
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// Release a lock whoever holds it (its holder is told LockLost)
    ForceRelease { name: String },
}

/// Exit code of `lock run` when the lock was lost (EX_TEMPFAIL).
pub const LOST_EXIT: u8 = 75;

pub async fn run(args: &ClientArgs, command: LockCommand) -> Result<ExitCode, CliError> {
    let channel = args.channel().await?;
    let mut c = Client::new(channel.clone());
    let value = match command {
        LockCommand::Acquire { name, ttl, wait, mode } => {
            return hold(args, channel, &name, Want::lock(mode.mode()), ttl, wait, None).await;
        }
        LockCommand::Run { name, ttl, wait, mode, command } => {
            return hold(args, channel, &name, Want::lock(mode.mode()), ttl, wait, Some(command)).await;
        }
        LockCommand::Describe { name, mode } => {
            let mode = mode.mode().map_or(0, |m| m as i32);
            let lock = c.describe(args.request(DescribeRequest { name, mode })).await?.into_inner().lock;
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
        LockCommand::Release { name, lease, mode } => {
            let mode = mode.mode().map_or(0, |m| m as i32);
            let reply = c.release(args.request(ReleaseRequest { name, lease_id: lease, mode })).await?.into_inner();
            json!({ "status": reply.status().as_str_name(), "remaining_holds": reply.remaining_holds })
        }
        LockCommand::ForceRelease { name } => {
            let reply =
                c.force_release(args.request(ForceReleaseRequest { name, ..Default::default() })).await?.into_inner();
            json!({ "released": reply.released, "lease_id": reply.lease_id, "owner": reply.owner })
        }
    };
    args.print(&value);
    Ok(ExitCode::SUCCESS)
}

fn info(l: LockInfo) -> Value {
    let mut v = json!({
        "name": l.name, "held": l.held, "owner": l.owner, "fencing_token": l.fencing_token,
        "ttl_ms": l.ttl_ms, "hold_count": l.hold_count, "waiters": l.waiters, "lease_id": l.lease_id,
    });
    if let Ok(mode @ (LockMode::Shared | LockMode::Exclusive)) = LockMode::try_from(l.mode) {
        v["mode"] = json!(mode.as_str_name().trim_start_matches("LOCK_MODE_"));
        v["holders"] = l
            .holders
            .iter()
            .map(|h| json!({"lease_id": h.lease_id, "owner": h.owner, "fencing_token": h.fencing_token, "ttl_ms": h.ttl_ms}))
            .collect();
    }
    v
}

/// What `hold` acquires.
#[derive(Debug, Clone)]
pub enum Want {
    Lock,
    ReadWrite(LockMode),
    Permits {
        permits: u32,
        size: u32,
    },
    /// Leadership of an election, with the candidate's value.
    Leadership(Vec<u8>),
}

impl Want {
    fn lock(mode: Option<LockMode>) -> Self {
        mode.map_or(Want::Lock, Want::ReadWrite)
    }

    async fn acquire(&self, client: &LockClient, name: &str, options: LockOptions) -> Result<LockGuard, ClientError> {
        match self {
            Want::Lock => client.lock(name, options).await,
            Want::ReadWrite(mode) => client.rw_lock(name, *mode, options).await,
            Want::Permits { permits, size } => client.permits(name, *permits, *size, options).await,
            Want::Leadership(value) => client.campaign(name, value, options).await,
        }
    }
}

/// Acquires with a [`LockClient`], whose guard keeps the lease alive, and
/// either waits for Ctrl-C or runs `command`; releases at the end.
pub async fn hold(
    args: &ClientArgs,
    channel: Channel,
    name: &str,
    want: Want,
    ttl: Duration,
    wait: Duration,
    command: Option<Vec<String>>,
) -> Result<ExitCode, CliError> {
    let mut client = LockClient::new(channel);
    if let Some(ns) = &args.namespace {
        client = client.with_namespace(ns).map_err(cli_error)?;
    }
    if let Some(token) = &args.token {
        client = client.with_token(token).map_err(cli_error)?;
    }
    let owner = format!("coord-cli@{}", hostname());
    let options = LockOptions { ttl, wait, owner, timeout: args.timeout, ..Default::default() };
    let guard = match want.acquire(&client, name, options).await {
        Ok(guard) => guard,
        Err(ClientError::NotAcquired { holder_owner, holder_ttl, .. }) => {
            match want {
                Want::Lock => eprintln!(
                    "coord: lock {name:?} not acquired (held by {holder_owner:?} for {} ms more)",
                    holder_ttl.as_millis()
                ),
                _ => eprintln!("coord: {name:?} not acquired in time"),
            }
            return Ok(ExitCode::from(super::EXIT_NO));
        }
        Err(e) => return Err(cli_error(e)),
    };
    let token = guard.fencing_token();
    match &command {
        // Under `run`, stdout belongs to the command: report on stderr.
        Some(_) => eprintln!("coord: holding {name:?} with fencing token {token}"),
        None if matches!(want, Want::Permits { .. }) => args.print(&json!({
            "name": name, "permit_id": token, "ttl_ms": guard.ttl().as_millis() as u64, "lease_id": guard.lease_id(),
        })),
        None if matches!(want, Want::Leadership(_)) => args.print(&json!({
            "election": name, "term": token, "ttl_ms": guard.ttl().as_millis() as u64, "lease_id": guard.lease_id(),
        })),
        None => args.print(&json!({
            "name": name, "fencing_token": token, "ttl_ms": guard.ttl().as_millis() as u64, "lease_id": guard.lease_id(),
        })),
    }

    let code = match command {
        None => {
            tokio::select! {
                lost = guard.lost() => {
                    eprintln!("coord: {name:?} lost: {lost}");
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
                lost = guard.lost() => {
                    eprintln!("coord: {name:?} lost: {lost}; killing the command");
                    let _ = child.kill().await;
                    ExitCode::from(LOST_EXIT)
                }
            }
        }
    };
    // Best effort: a lost lock answers NOT_HELD or HELD_BY_OTHER.
    let _ = guard.release().await;
    Ok(code)
}

pub fn cli_error(e: ClientError) -> CliError {
    match e {
        ClientError::Status(status) => CliError::Status(status),
        ClientError::Connect(e) => CliError::Connect(e),
        ClientError::InvalidArgument(message) => CliError::Usage(message),
        other @ ClientError::NotAcquired { .. } => CliError::Usage(other.to_string()),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}
