//! `/api/jobs`: recent job runs as JSON, filtered by schedule and status.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::state::HttpState;
use crate::scheduler::journal::{self, RunFilter, Status};

/// `GET /api/jobs?schedule=&status=&limit=`
#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    pub schedule: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
}

pub async fn jobs(State(state): State<HttpState>, Query(query): Query<JobsQuery>) -> Response {
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
