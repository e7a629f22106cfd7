//! Watching files that are reloaded live (rate-limit policies, Envoy rate
//! limit configuration directories, credentials, TLS certificates): their
//! contents are compared every `interval`, which also catches Kubernetes'
//! ConfigMap and Secret symlink swaps, and optionally re-read on SIGHUP.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// Calls `reload` whenever any of `files` changes (and on SIGHUP when
/// `sighup`), until `shutdown`. A directory changes when a file in it is
/// added, removed or changed.
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
    let contents = || files.iter().flat_map(|f| snapshot(f)).collect::<Vec<_>>();
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

/// A file's bytes, or every file's in a directory (by name).
fn snapshot(path: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            files.sort();
            files.into_iter().map(|f| (f.clone(), std::fs::read(&f).ok())).collect()
        }
        Err(_) => vec![(path.to_owned(), std::fs::read(path).ok())],
    }
}
