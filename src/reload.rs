//! Watching files that are reloaded live (rate-limit policies, credentials,
//! TLS certificates): their contents are compared every `interval`, which
//! also catches Kubernetes' ConfigMap and Secret symlink swaps, and
//! optionally re-read on SIGHUP.

use std::{path::PathBuf, time::Duration};

use tokio_util::sync::CancellationToken;

/// Calls `reload` whenever any of `files` changes (and on SIGHUP when
/// `sighup`), until `shutdown`.
pub async fn on_change(
    files: Vec<PathBuf>,
    interval: Duration,
    sighup: bool,
    shutdown: CancellationToken,
    mut reload: impl FnMut(),
) {
    if files.is_empty() {
        return;
    }
    let contents = || files.iter().map(|f| std::fs::read(f).ok()).collect::<Vec<_>>();
    let mut last = contents();
    let mut hangup =
        if sighup { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok() } else { None };
    loop {
        let signalled = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = signalled => {
                tracing::info!("SIGHUP: reloading {files:?}");
                last = contents();
                reload();
            }
            _ = tokio::time::sleep(interval) => {
                let now = contents();
                if now != last {
                    last = now;
                    reload();
                }
            }
        }
    }
}
