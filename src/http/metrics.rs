//! `/metrics`: the Prometheus registry in the OpenMetrics text format, with the gauges read at scrape time
//! (the archiver's failures, the newest verified backup).

use std::path::Path;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::state::{CHECK_TIMEOUT, HttpState};
use crate::metrics::METRICS;
use crate::pg::{backup, conf};

pub async fn metrics(State(state): State<HttpState>) -> Response {
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
