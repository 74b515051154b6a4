//! The process around a command: logging, the shutdown signal, and running work until a signal comes.

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::args::LogFormat;

/// Sets up logging to stderr: `USERPIPE_LOG` as the filter (`info` by default), text or JSON lines.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USERPIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A token cancelled at the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!(message = "SIGINT received, stopping"),
            _ = terminate => info!(message = "SIGTERM received, stopping"),
        }
        cancel.cancel();
    });
    token
}

/// Runs `work` until it ends or SIGINT/SIGTERM comes; then it is dropped (its clean-up runs) and this
/// fails.
pub async fn until_signal<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let shutdown = shutdown_on_signal();
    tokio::select! {
        result = work => result,
        _ = shutdown.cancelled() => anyhow::bail!("stopped by a signal; nothing was kept"),
    }
}
