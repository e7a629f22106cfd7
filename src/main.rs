//! The `coord` binary: `coord serve` runs the server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coord::{
    config::{Config, ServeArgs},
    redis::embedded,
    server::{self, Backend},
    telemetry,
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
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no Redis configured: on a private embedded redis-server).
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("coord: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_redacted_toml());
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
                return ExitCode::from(1);
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
    let backend = Backend::connect(config, embedded)?;
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
