//! The process around a command: logging, the shutdown signal, and running work until a signal comes.

use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::args::LogFormat;
use crate::scheduler::CaptureLayer;

/// The log filter when `USERPIPE_LOG` does not set one: userpipe's own events from INFO, other crates'
/// (tokio-cron-scheduler logs every firing at INFO) only from WARN.
pub const DEFAULT_LOG_FILTER: &str = "warn,userpipe=info";

/// Sets up logging to stderr: `USERPIPE_LOG` as the filter ([`DEFAULT_LOG_FILTER`] by default), text or
/// JSON lines; and the capture of each job run's events into its own log (the same filter applies).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USERPIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let base = tracing_subscriber::registry()
        .with(filter)
        .with(CaptureLayer);
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => base.with(output).init(),
        LogFormat::Json => base.with(output.json().flatten_event(true)).init(),
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
