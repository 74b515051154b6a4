//! The HTTP endpoints of `userpipe run`: `/healthz` (alive), `/readyz` (Kafka and PostgreSQL reachable and
//! every role running), `/metrics` (Prometheus), `/api/jobs` (recent job runs as JSON).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::kafka::Probe;
use crate::metrics::METRICS;
use crate::pg::{backup, conf};
use crate::scheduler::journal::{self, RunFilter, Status};

/// How long a readiness check waits for Kafka or PostgreSQL.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Which roles of this process are running.
#[derive(Debug, Default)]
pub struct Roles(Mutex<BTreeMap<&'static str, bool>>);

impl Roles {
    pub fn set(&self, role: &'static str, running: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(role, running);
    }

    fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    pub kafka: Arc<Probe>,
    pub pool: Option<PgPool>,
    pub roles: Arc<Roles>,
    /// The base backups, for the time of the newest verified one.
    pub backup_dir: PathBuf,
}

/// The readiness verdict, as `/readyz` answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub kafka: String,
    pub postgresql: String,
    pub roles: BTreeMap<String, bool>,
}

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(jobs))
        .with_state(state);
    if let Ok(address) = listener.local_addr() {
        info!(message = "http endpoints listening", %address);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let kafka = match Probe::check(&state.kafka, CHECK_TIMEOUT).await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("unreachable: {e}"),
    };
    let postgresql = match &state.pool {
        None => "not used".to_owned(),
        Some(pool) => {
            match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
                Ok(Ok(_)) => "ok".to_owned(),
                Ok(Err(e)) => format!("unreachable: {e}"),
                Err(_) => "unreachable: no answer within 2s".to_owned(),
            }
        }
    };
    let roles: BTreeMap<String, bool> = state
        .roles
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let ready =
        kafka == "ok" && !postgresql.starts_with("unreachable") && roles.values().all(|r| *r);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            kafka,
            postgresql,
            roles,
        }),
    )
        .into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let failed = match &state.pool {
        None => -1,
        Some(pool) => {
            let read = async {
                let mut conn = pool.acquire().await?;
                conf::archiver(&mut conn).await
            };
            match tokio::time::timeout(CHECK_TIMEOUT, read).await {
                Ok(Ok(stats)) => stats.failed_count,
                _ => -1,
            }
        }
    };
    METRICS.archiver_failed.set(failed);
    let dir = state.backup_dir.clone();
    let newest = tokio::task::spawn_blocking(move || newest_verified_backup(&dir))
        .await
        .ok()
        .flatten();
    METRICS
        .last_verified_backup
        .set(newest.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.render(),
    )
        .into_response()
}

/// `GET /api/jobs?schedule=&status=&limit=`
#[derive(Debug, Deserialize)]
struct JobsQuery {
    schedule: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn jobs(State(state): State<HttpState>, Query(query): Query<JobsQuery>) -> Response {
    let Some(pool) = &state.pool else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this process has no database\n",
        )
            .into_response();
    };
    let status = match query.status.as_deref().map(str::parse::<Status>) {
        None => None,
        Some(Ok(status)) => Some(status),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let filter = RunFilter {
        schedule: query.schedule,
        status,
        since: None,
        limit: query.limit.unwrap_or(50).clamp(1, 1000),
    };
    match tokio::time::timeout(Duration::from_secs(5), journal::list(pool, &filter)).await {
        Ok(Ok(runs)) => Json(runs).into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "postgresql did not answer within 5s\n",
        )
            .into_response(),
    }
}

/// When the newest backup that passed verification finished.
fn newest_verified_backup(dir: &Path) -> Option<chrono::DateTime<chrono::Utc>> {
    backup::list(dir)
        .ok()?
        .into_iter()
        .filter_map(|b| b.metadata)
        .filter(|m| m.verification.ok)
        .map(|m| m.finished_at)
        .max()
}
