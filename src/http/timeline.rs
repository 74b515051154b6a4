//! `GET /api/timeline?range=24h|7d`: the status page's job timeline, the schedule files (enabled or not,
//! next fire times, errors) and one mark per run of the range from `job_runs`.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::state::HttpState;
use crate::scheduler::load_dir;
use crate::scheduler::timeline::{self, ScheduleRow};

/// Next fire times shown per schedule.
const NEXT_FIRES: usize = 3;

/// Longest wait for `job_runs`.
const JOURNAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
pub struct TimelineQuery {
    /// `24h` (the default) or `7d`.
    pub range: Option<String>,
}

/// The answer, but its `runs`: the array [`timeline::runs_json_since`] gets made by PostgreSQL, added
/// as it comes by [`with_runs`].
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub now: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub range: &'static str,
    /// Whether writing actions are on (`http.token` is set): the page shows "run now" buttons.
    pub writable: bool,
    pub schedules: Vec<ScheduleRow>,
    /// Why the schedule folder cannot be read, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedules_error: Option<String>,
    /// Why the runs cannot be read (no database in this process, PostgreSQL down), if they cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_error: Option<String>,
    /// What each run's values are, in order.
    pub run_fields: [&'static str; 8],
}

/// The range's name and length.
fn range(text: Option<&str>) -> Result<(&'static str, TimeDelta), String> {
    match text.unwrap_or("24h") {
        "24h" => Ok(("24h", TimeDelta::hours(24))),
        "7d" => Ok(("7d", TimeDelta::days(7))),
        other => Err(format!(
            "unknown range {other:?}: the ranges are 24h and 7d"
        )),
    }
}

/// `head` as a JSON object with a last field `runs` holding `runs`, JSON text made by PostgreSQL.
fn with_runs(head: &Timeline, runs: &str) -> String {
    // Serializing a struct of strings, times and flags cannot fail.
    let mut body = serde_json::to_string(head).unwrap_or_else(|_| "{}".into());
    body.pop(); // its closing brace
    body.push_str(",\"runs\":");
    body.push_str(runs);
    body.push('}');
    body
}

pub async fn timeline(
    State(state): State<HttpState>,
    Query(query): Query<TimelineQuery>,
) -> Response {
    let (name, length) = match range(query.range.as_deref()) {
        Ok(range) => range,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let now = Utc::now();
    let since = now - length;
    let dir = state.config.scheduler.dir.clone();
    let loaded = tokio::task::spawn_blocking(move || load_dir(&dir)).await;
    let (schedules, schedules_error) = match loaded {
        Ok(Ok(loaded)) => (timeline::schedule_rows(&loaded, now, NEXT_FIRES), None),
        Ok(Err(e)) => (Vec::new(), Some(format!("{e:#}"))),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let runs = match &state.pool {
        None => Err("this process has no database".to_owned()),
        Some(pool) => {
            let read = timeline::runs_json_since(pool, since);
            match tokio::time::timeout(JOURNAL_TIMEOUT, read).await {
                Ok(Ok(runs)) => Ok(runs),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("postgresql did not answer within 5s".to_owned()),
            }
        }
    };
    let head = Timeline {
        now,
        since,
        range: name,
        writable: !state.config.http.token.expose().is_empty(),
        schedules,
        schedules_error,
        runs_error: runs.as_ref().err().cloned(),
        run_fields: timeline::RUN_FIELDS,
    };
    let body = with_runs(&head, runs.as_deref().unwrap_or("[]"));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_a_day_or_a_week() {
        assert_eq!(range(None), Ok(("24h", TimeDelta::hours(24))));
        assert_eq!(range(Some("7d")), Ok(("7d", TimeDelta::days(7))));
        assert_eq!(
            range(Some("1y")),
            Err("unknown range \"1y\": the ranges are 24h and 7d".into())
        );
    }

    #[test]
    fn the_runs_become_the_last_field() {
        let head = Timeline {
            now: "2026-01-03T10:00:00Z".parse().unwrap(),
            since: "2026-01-02T10:00:00Z".parse().unwrap(),
            range: "24h",
            writable: false,
            schedules: Vec::new(),
            schedules_error: None,
            runs_error: None,
            run_fields: timeline::RUN_FIELDS,
        };
        let body = with_runs(&head, r#"[["x","fetch-users","failed"]]"#);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["runs"][0][2], "failed");
        assert_eq!(value["run_fields"][2], "status");
        assert_eq!(value["range"], "24h");
        assert_eq!(value["schedules"], serde_json::json!([]));
    }
}
