//! `/healthz` (the process is alive), `/readyz` (Kafka and PostgreSQL reachable, every role running), and
//! `/api/readiness`, the same verdict always answered with 200 for the status page.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::state::{CHECK_TIMEOUT, HttpState};
use crate::kafka::Probe;

/// The readiness verdict, as `/readyz` answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub kafka: String,
    pub postgresql: String,
    pub roles: BTreeMap<String, bool>,
}

pub async fn readyz(State(state): State<HttpState>) -> Response {
    let readiness = readiness(&state).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

/// `GET /api/readiness`: what `/readyz` says, with 200 whatever the verdict (a page asking it every few
/// seconds should not log a failed request each time).
pub async fn api_readiness(State(state): State<HttpState>) -> Json<Readiness> {
    Json(readiness(&state).await)
}

/// Asks Kafka and PostgreSQL, and reads which roles run.
pub async fn readiness(state: &HttpState) -> Readiness {
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
    Readiness {
        ready,
        kafka,
        postgresql,
        roles,
    }
}
