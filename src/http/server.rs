//! The HTTP server: the routes, served on a bound listener until shutdown, with a header-read timeout and a
//! connection limit so that slow or idle clients can neither crowd out the others nor hold up the stop;
//! and the sampler that keeps the pipeline's last hour for the status page.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::state::HttpState;
use super::{actions, health, jobs, metrics, page, pipeline, postgres, samples, timeline};
use crate::config::HttpConfig;

/// After shutdown, how long open connections get to finish the request they are serving; then they are
/// closed.
const DRAIN: Duration = Duration::from_secs(2);

/// What the server allows a client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's headers must arrive within this; else the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listener's backlog.
    pub max_connections: usize,
}

impl From<&HttpConfig> for Limits {
    fn from(config: &HttpConfig) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            max_connections: config.max_connections.max(1),
        }
    }
}

/// Serves the endpoints on `listener` until `shutdown`, then gives open connections [`DRAIN`] to finish
/// and closes the rest.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tokio::spawn(samples::sample(
        state.samples.clone(),
        state.config.clone(),
        state.kafka.clone(),
        shutdown.clone(),
    ));
    let app = axum::Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::app_js))
        .route("/style.css", get(page::style_css))
        .route("/favicon.svg", get(page::favicon))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/jobs", get(jobs::jobs))
        .route("/api/jobs/{run_id}", get(jobs::run))
        .route("/api/jobs/{run_id}/logs", get(jobs::logs))
        .route("/api/readiness", get(health::api_readiness))
        .route("/api/timeline", get(timeline::timeline))
        .route("/api/pipeline", get(pipeline::pipeline))
        .route("/api/postgres", get(postgres::postgres))
        .route("/api/schedules/{name}/run", post(actions::run_now))
        .with_state(state);
    if let Ok(address) = listener.local_addr() {
        info!(message = "http endpoints listening", %address, max_connections = limits.max_connections);
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let drain = CancellationToken::new();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // A slot first, then a connection: past the limit, clients wait in the backlog.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot?,
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    warn!(message = "cannot accept an http connection", %error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let drain = drain.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = drain.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                debug!(message = "http connection ended with an error", %peer, %error);
            }
        });
    }
    drop(listener);
    drain.cancel();
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            message = "http connections still open at shutdown are closed",
            connections = connections.len()
        );
        connections.shutdown().await;
    }
    Ok(())
}
