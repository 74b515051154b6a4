//! `/api/jobs`: recent job runs as JSON, filtered by schedule and status; `/api/jobs/{run_id}`: one run
//! with every attempt; `/api/jobs/{run_id}/logs`: the run's own log, from a line number on.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::state::HttpState;
use crate::scheduler::journal::{self, RunFilter, RunRecord, Status, Trigger};
use crate::scheduler::runlog::{self, LogEntry};

/// How long PostgreSQL may take to answer one request.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /api/jobs?schedule=&status=&limit=`
#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    pub schedule: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
}

pub async fn jobs(State(state): State<HttpState>, Query(query): Query<JobsQuery>) -> Response {
    let Some(pool) = &state.pool else {
        return no_database();
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
    answer(journal::list(pool, &filter), |runs| {
        Json(runs).into_response()
    })
    .await
}

/// One run, as `GET /api/jobs/{run_id}` answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Run {
    pub run_id: Uuid,
    pub schedule: String,
    pub job: String,
    pub trigger: Trigger,
    /// The status of its latest attempt.
    pub status: Status,
    /// Whether the run is over (its latest attempt ended it); else an attempt runs or another follows.
    pub over: bool,
    /// Every attempt, first first.
    pub attempts: Vec<RunRecord>,
    /// Where its log is.
    pub logs: String,
}

pub async fn run(State(state): State<HttpState>, Path(run_id): Path<Uuid>) -> Response {
    let Some(pool) = &state.pool else {
        return no_database();
    };
    answer(journal::show(pool, run_id), |attempts| {
        let Some(last) = attempts.last() else {
            return (StatusCode::NOT_FOUND, format!("no job run {run_id}\n")).into_response();
        };
        Json(Run {
            run_id,
            schedule: last.schedule.clone(),
            job: last.job.clone(),
            trigger: last.trigger,
            status: last.status,
            over: journal::run_over(&attempts),
            logs: format!("/api/jobs/{run_id}/logs"),
            attempts,
        })
        .into_response()
    })
    .await
}

/// `GET /api/jobs/{run_id}/logs?after=&limit=`
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    /// Only lines numbered after this (0: from the first kept line).
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// A page of a run's log, as `GET /api/jobs/{run_id}/logs` answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunLog {
    pub run_id: Uuid,
    /// Whether the run is over: once it is, and `lines` is empty, its log is complete.
    pub over: bool,
    /// Oldest first; `dropped_before` counts the lines missing just before each one.
    pub lines: Vec<serde_json::Value>,
    /// Ask with `after` set to this for the lines that come next.
    pub next_after: i64,
}

pub async fn logs(
    State(state): State<HttpState>,
    Path(run_id): Path<Uuid>,
    Query(query): Query<LogsQuery>,
) -> Response {
    let Some(pool) = &state.pool else {
        return no_database();
    };
    let after = query.after.unwrap_or(0).max(0);
    let limit = query.limit.unwrap_or(1000).clamp(1, 5000);
    let read = async {
        // The run's state first: lines written before it said "over" are then all there.
        let attempts = journal::show(pool, run_id).await?;
        let lines = runlog::read(pool, run_id, after, limit).await?;
        anyhow::Ok((attempts, lines))
    };
    answer(read, |(attempts, lines)| {
        if attempts.is_empty() && lines.is_empty() && after == 0 {
            return (StatusCode::NOT_FOUND, format!("no job run {run_id}\n")).into_response();
        }
        let next_after = lines.last().map_or(after, |l| l.seq);
        let entries: Vec<LogEntry> = runlog::entries(after, lines);
        Json(RunLog {
            run_id,
            over: journal::run_over(&attempts),
            lines: entries
                .iter()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect(),
            next_after,
        })
        .into_response()
    })
    .await
}

/// The answer of a process without a database.
fn no_database() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "this process has no database\n",
    )
        .into_response()
}

/// `respond` with what `query` read, or 503 when PostgreSQL fails or takes longer than 5 s.
async fn answer<T>(
    query: impl Future<Output = anyhow::Result<T>>,
    respond: impl FnOnce(T) -> Response,
) -> Response {
    match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(Ok(value)) => respond(value),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "postgresql did not answer within 5s\n",
        )
            .into_response(),
    }
}
