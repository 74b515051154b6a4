//! `/metrics`: the Prometheus registry in the OpenMetrics text format, with what is read at scrape time
//! (the archiver's statistics, the newest verified backup).

use std::path::Path;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::state::{CHECK_TIMEOUT, HttpState};
use crate::metrics::{ArchiverReading, METRICS};
use crate::pg::{backup, conf};

pub async fn metrics(State(state): State<HttpState>) -> Response {
    let reading = match &state.pool {
        None => None,
        Some(pool) => {
            let read = async {
                let mut conn = pool.acquire().await?;
                conf::archiver(&mut conn).await
            };
            match tokio::time::timeout(CHECK_TIMEOUT, read).await {
                Ok(Ok(stats)) => Some(archiver_reading(&stats)),
                _ => None,
            }
        }
    };
    METRICS.set_archiver(reading);
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

/// The archiver's statistics as the metrics export them.
fn archiver_reading(stats: &conf::ArchiverStats) -> ArchiverReading {
    let unix = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0)
    };
    ArchiverReading {
        archived: stats.archived_count.max(0) as u64,
        failed: stats.failed_count.max(0) as u64,
        last_archived: unix(stats.last_archived_time),
        last_failed: unix(stats.last_failed_time),
        pending_segments: stats.waiting_segments,
        oldest_pending_seconds: stats.oldest_waiting_age_seconds.unwrap_or(0.0),
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
