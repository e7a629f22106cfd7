//! The `coord` binary: `coord serve` runs the server; the other
//! subcommands are clients of a running coord.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coord::{
    backend::Backend,
    cli::{self, ClientArgs},
    config::{Config, ServeArgs},
    redis::embedded,
    server, telemetry,
};

// glibc malloc's arena locks showed up as ~15 % of the server's CPU under
// load (many small allocations from h2 and prost across worker threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "coord", version, about = "gRPC coordination service on Redis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no Redis configured: on a private embedded redis-server).
    Serve(Box<ServeArgs>),
    /// Locks: acquire, run a command under a lock, describe, list, release
    #[command(subcommand)]
    Lock(cli::lock::LockCommand),
    /// Semaphores: hold permits, run a command while holding them, describe, resize, release
    #[command(subcommand)]
    Sem(cli::sem::SemCommand),
    /// Leader election: campaign, run a command only while leading, show or follow the leader, resign
    #[command(subcommand)]
    Elect(cli::elect::ElectCommand),
    /// Rate limits and concurrency slots
    #[command(subcommand)]
    Limit(cli::limit::LimitCommand),
    /// Leaderboards
    #[command(subcommand)]
    Board(cli::board::BoardCommand),
    /// Publish a message (MESSAGE, or standard input when `-` or absent)
    Pub { channel: String, message: Option<String> },
    /// Print messages of channels and patterns as they come
    Sub {
        channels: Vec<String>,
        /// Glob pattern over channel names (repeatable)
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        /// Resume recoverable channels after OFFSET@EPOCH
        #[arg(long)]
        from: Option<String>,
    },
    /// Load a running coord and report throughput and latency (optionally vs redis-benchmark)
    Bench(Box<coord::bench::BenchArgs>),
    /// Make a new API key: prints the key (show it once, store it in a
    /// secret) and the principals-file entry that holds only its SHA-256
    NewKey {
        /// The principal the key belongs to
        principal: String,
    },
    /// Exit 0 only when coord reports SERVING (a Docker / Kubernetes probe)
    Health {
        /// A service name, e.g. coord.v1.LockService; empty: the whole server
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = &cli.client;
    let result = match cli.command {
        Command::Serve(serve_args) => return serve(*serve_args).await,
        Command::Lock(command) => cli::lock::run(args, command).await,
        Command::Sem(command) => cli::sem::run(args, command).await,
        Command::Elect(command) => cli::elect::run(args, command).await,
        Command::Limit(command) => cli::limit::run(args, command).await,
        Command::Board(command) => cli::board::run(args, command).await,
        Command::Pub { channel, message } => cli::pubsub::publish(args, channel, message).await,
        Command::Sub { channels, patterns, from } => cli::pubsub::subscribe(args, channels, patterns, from).await,
        // A probe: anything but SERVING is 1, also when coord is unreachable
        // (Docker reserves 2).
        Command::Health { service } => cli::health(args, &service).await.or_else(|e| {
            eprintln!("coord: {e}");
            Ok(ExitCode::from(1))
        }),
        Command::Bench(bench) => coord::bench::run(args, *bench).await,
        Command::NewKey { principal } => match coord::auth::principals::new_key() {
            Ok((key, id, digest)) => {
                println!("key: {key}");
                println!("# principals file entry of {principal:?} (the key itself is not stored):");
                println!("keys = [{{ id = {id:?}, sha256 = {digest:?} }}]");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(cli::CliError::Usage(format!("cannot make a key: {e}"))),
        },
    };
    result.unwrap_or_else(|e| cli::fail(&e))
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("coord: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        match server::check(&config) {
            Ok(summary) => println!("coord: {summary}"),
            Err(e) => {
                eprintln!("coord: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if args.print_config {
        print!("{}", config.to_redacted_toml());
    }
    if args.check_config || args.print_config {
        return ExitCode::SUCCESS;
    }
    telemetry::init(&config.log);

    // Started here, on the main thread, because the child's parent-death
    // signal is tied to the spawning thread (see redis::embedded).
    let embedded = if config.redis.embedded() {
        match embedded::start(Some(&config.redis.embedded_binary)).await {
            Ok(redis) => {
                tracing::info!(url = %redis.url(), pid = redis.pid().unwrap_or(0), "no Redis configured: started embedded redis-server (no persistence)");
                config.redis.url = redis.url();
                Some(redis)
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("coord: {e}");
                // A missing binary is a configuration error, as --check-config says.
                let code = if matches!(e, embedded::EmbeddedError::NotInstalled(_)) { 2 } else { 1 };
                return ExitCode::from(code);
            }
        }
    } else {
        None
    };

    let result = run(&config, embedded.is_some()).await;
    if let Some(redis) = embedded {
        redis.stop().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("coord: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: &Config, embedded: bool) -> Result<(), server::ServeError> {
    let backend = Backend::connect(config, embedded).map_err(server::ServeError::Config)?;
    let addr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| server::ServeError::Bind { addr: format!("{addr} (server.listen)"), source })?;
    server::serve(config, backend, listener, shutdown_signal()).await
}

/// SIGTERM is how Kubernetes asks a pod to stop; SIGINT is Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops coord");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
