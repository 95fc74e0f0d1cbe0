//! Graceful shutdown: a cancellation token cancelled by SIGTERM or SIGINT (Ctrl-C).
//!
//! Services pass the token to [`crate::bus::run_consumer`] and their servers; on the signal the
//! batch in hand is finished, its offsets committed, and the service exits.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Returns a token cancelled on the first SIGTERM or SIGINT. Must be called inside a tokio
/// runtime. Once tokio handles a signal it keeps handling it, so later signals do not interrupt
/// the commit; a stuck process needs SIGKILL.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(
            signal = name,
            "shutting down: finishing the batch in hand and committing"
        );
        cancel.cancel();
    });
    Ok(token)
}
