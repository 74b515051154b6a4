//! Writing actions: `POST /api/schedules/{name}/run` runs a schedule now (trigger `manual`), under the same
//! overlap guard as its scheduled runs, and answers at once (202); the run shows up on the timeline. Only
//! with `Authorization: Bearer <http.token>`: without a configured token every writing action is refused
//! (403), with a wrong or missing one it is unauthorized (401).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::info;

use super::state::HttpState;
use crate::scheduler::journal::Trigger;
use crate::scheduler::load_dir;

/// Why a writing action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token is configured: writing actions are off (403).
    Off,
    /// The token is missing or wrong (401).
    Unauthorized,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Off => (
                StatusCode::FORBIDDEN,
                "writing actions are off: set http.token (USERPIPE_HTTP__TOKEN) to allow them\n",
            )
                .into_response(),
            Refused::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a writing action needs the header Authorization: Bearer <http.token>\n",
            )
                .into_response(),
        }
    }
}

/// Whether `headers` carry the configured bearer `token` (compared in constant time).
pub fn authorize(token: &str, headers: &HeaderMap) -> Result<(), Refused> {
    if token.is_empty() {
        return Err(Refused::Off);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(Refused::Unauthorized),
    }
}

pub async fn run_now(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(state.config.http.token.expose(), &headers) {
        return refused.into_response();
    }
    let dir = state.config.scheduler.dir.clone();
    let loaded = match tokio::task::spawn_blocking(move || load_dir(&dir)).await {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let Some(schedule) = loaded
        .schedules
        .into_iter()
        .map(|(s, _)| s)
        .find(|s| s.name == name)
    else {
        if let Some(error) = loaded
            .errors
            .iter()
            .find(|e| e.file.file_stem().is_some_and(|s| s == name.as_str()))
        {
            return (
                StatusCode::CONFLICT,
                format!("invalid schedule file: {error}\n"),
            )
                .into_response();
        }
        return (StatusCode::NOT_FOUND, format!("no schedule {name:?}\n")).into_response();
    };
    info!(message = "run requested over http", schedule = %schedule.name);
    let runner = state.runner.clone();
    state.runs.spawn(async move {
        runner.fire(&schedule, Trigger::Manual, None).await;
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({ "schedule": name, "trigger": "manual" })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn check(token: &str, authorization: Option<&str>) -> Result<(), Refused> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        authorize(token, &headers)
    }

    #[test]
    fn only_the_configured_bearer_token_may_write() {
        assert_eq!(check("", Some("Bearer ")), Err(Refused::Off));
        assert_eq!(check("", None), Err(Refused::Off));
        for wrong in [
            None,
            Some("Bearer nope"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
        ] {
            assert_eq!(
                check("s3cret", wrong),
                Err(Refused::Unauthorized),
                "{wrong:?}"
            );
        }
        assert_eq!(check("s3cret", Some("Bearer s3cret")), Ok(()));
        assert_eq!(Refused::Off.into_response().status(), StatusCode::FORBIDDEN);
        assert_eq!(
            Refused::Unauthorized.into_response().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
