//! `/healthz` (the process is alive), `/readyz` (Kafka and PostgreSQL reachable, every role running), and
//! `/api/readiness`, the same verdict always answered with 200 for the status page.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::state::{CHECK_TIMEOUT, HttpState, RoleState};
use crate::kafka::Probe;

/// The readiness verdict, as `/readyz` answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// What keeps it from being ready: `kafka`, `postgresql` (unreachable, or a role waits for it), and
    /// `role <name>` for a role that stopped.
    pub missing: Vec<String>,
    pub kafka: String,
    pub postgresql: String,
    /// Each role: `running`, `waiting for kafka`, `waiting for postgresql`, `stopped`.
    pub roles: BTreeMap<String, String>,
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

/// Asks Kafka and PostgreSQL, and reads which roles run and what they wait for.
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
    let snapshot = state.roles.snapshot();
    let mut missing = Vec::new();
    let waits_for = |dependency: &'static str| {
        snapshot
            .values()
            .any(|r| *r == RoleState::Waiting(dependency))
    };
    if kafka != "ok" || waits_for("kafka") {
        missing.push("kafka".to_owned());
    }
    if postgresql.starts_with("unreachable") || waits_for("postgresql") {
        missing.push("postgresql".to_owned());
    }
    for (role, _) in snapshot.iter().filter(|(_, r)| **r == RoleState::Stopped) {
        missing.push(format!("role {role}"));
    }
    let roles = snapshot
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.describe()))
        .collect();
    Readiness {
        ready: missing.is_empty(),
        missing,
        kafka,
        postgresql,
        roles,
    }
}
