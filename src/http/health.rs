//! `/healthz` (the process is alive) and `/readyz` (Kafka and PostgreSQL reachable, every role running).

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
    let ready = missing.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            missing,
            kafka,
            postgresql,
            roles,
        }),
    )
        .into_response()
}
