//! Notifications of finished runs: a webhook (`[notify]` in `userpipe.toml`, overridden by a schedule
//! file's own `[notify]`) gets a JSON message with a Slack-compatible `text` when a run fails, when a
//! schedule recovers (its first success after a failure), or after every run (`on = "always"`).
//!
//! Messages are posted in the background with a timeout and three attempts: notifying never delays or
//! fails a run. A message that cannot be posted is logged and counted
//! (`userpipe_notifications_total{result="failed"}`). The webhook URL is a secret: only its host is ever
//! shown. Which message a run gets ([`decide`]) and what it says ([`message`]) are pure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use super::journal::{RunRecord, Status, Trigger};
use crate::config::{NotifyConfig, NotifyOn, Secret, redact_webhook};
use crate::metrics::{METRICS, NotifyLabels};
use crate::retry::Backoff;

/// Attempts at posting one message.
const ATTEMPTS: u32 = 3;
/// How long the previous run's status may take to read before the process's own memory is used.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// A schedule file's `[notify]` table: each key it sets overrides `userpipe.toml`'s.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// The webhook for this schedule (a secret).
    #[serde(default)]
    pub url: Option<Secret>,
    /// `failure`, `always` or `never`.
    #[serde(default)]
    pub on: Option<NotifyOn>,
}

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The run failed, timed out or was abandoned.
    Failure,
    /// The first success after a failure.
    Recovery,
    /// Any other finished run (`on = "always"`).
    Finished,
}

/// Which message, if any, a run that ended with `status` gets, given the status of the schedule's
/// previous run (skipped runs aside).
pub fn decide(on: NotifyOn, status: Status, previous: Option<Status>) -> Option<Event> {
    let event = if status.is_failure() {
        Event::Failure
    } else if status == Status::Succeeded && previous.is_some_and(Status::is_failure) {
        Event::Recovery
    } else {
        Event::Finished
    };
    match (on, event) {
        (NotifyOn::Never, _) | (NotifyOn::Failure, Event::Finished) => None,
        _ => Some(event),
    }
}

/// The JSON posted to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// One line for people (Slack and compatible chats show it).
    pub text: String,
    pub event: Event,
    pub schedule: String,
    pub job: String,
    pub run_id: Uuid,
    pub status: Status,
    pub trigger: Trigger,
    /// Attempts made.
    pub attempts: i32,
    /// The error of the last attempt, or why it was skipped or timed out.
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From the first attempt's start to the last one's end.
    pub duration_ms: i64,
    /// The run in userpipe's HTTP API.
    pub link: String,
    pub instance: String,
}

/// The message for `event` about a run that started at `started_at` and ended with `last`.
pub fn message(
    event: Event,
    last: &RunRecord,
    started_at: DateTime<Utc>,
    base_url: &str,
) -> Message {
    let finished = last.finished_at.unwrap_or(last.started_at);
    let duration_ms = (finished - started_at).num_milliseconds().max(0);
    let took = humantime::format_duration(Duration::from_secs((duration_ms / 1000) as u64));
    let error = last.error.clone().or_else(|| last.reason.clone());
    let link = format!(
        "{}/api/jobs/{}",
        base_url.trim_end_matches('/'),
        last.run_id
    );
    let tries = if last.attempt > 1 {
        format!(" after {} attempts", last.attempt)
    } else {
        String::new()
    };
    let what = match event {
        Event::Recovery => format!("recovered: {} succeeded{tries} in {took}", last.job),
        _ => format!("{} {}{tries} in {took}", last.job, last.status),
    };
    let mut text = format!("userpipe: schedule {} {what}", last.schedule);
    if let Some(error) = &error {
        let short: String = error.chars().take(300).collect();
        text.push_str(&format!(": {short}"));
    }
    text.push_str(&format!(" (run {link})"));
    Message {
        text,
        event,
        schedule: last.schedule.clone(),
        job: last.job.clone(),
        run_id: last.run_id,
        status: last.status,
        trigger: last.trigger,
        attempts: last.attempt,
        error,
        started_at,
        finished_at: last.finished_at,
        duration_ms,
        link,
        instance: last.instance.clone(),
    }
}

/// Posts messages in the background; shared by every run of a runner.
pub struct Notifier {
    defaults: NotifyConfig,
    client: reqwest::Client,
    pool: Option<PgPool>,
    /// Each schedule's last run in this process (when it started, how it ended), for when PostgreSQL
    /// cannot say.
    last: Mutex<HashMap<String, (DateTime<Utc>, Status)>>,
    sending: TaskTracker,
}

impl Notifier {
    pub fn new(defaults: &NotifyConfig, pool: Option<PgPool>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(defaults.timeout)
            .user_agent(concat!("userpipe/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the notification client")?;
        Ok(Self {
            defaults: defaults.clone(),
            client,
            pool,
            last: Mutex::new(HashMap::new()),
            sending: TaskTracker::new(),
        })
    }

    /// Tells the schedule's webhook, if it has one, that a run that started at `started_at` ended with
    /// `last`. Returns at once; the message is posted in the background.
    pub fn run_ended(
        &self,
        settings: &NotifySettings,
        last: &RunRecord,
        started_at: DateTime<Utc>,
    ) {
        let previous_here = {
            let mut memory = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.status == Status::Skipped {
                memory.get(&last.schedule).copied()
            } else {
                memory.insert(last.schedule.clone(), (started_at, last.status))
            }
        };
        let url = settings.url.as_ref().unwrap_or(&self.defaults.url).clone();
        let on = settings.on.unwrap_or(self.defaults.on);
        if url.expose().is_empty() || on == NotifyOn::Never {
            return;
        }
        let (client, pool, last) = (self.client.clone(), self.pool.clone(), last.clone());
        let base_url = self.defaults.base_url.clone();
        self.sending.spawn(async move {
            let previous = previous_status(pool.as_ref(), &last, started_at, previous_here).await;
            let Some(event) = decide(on, last.status, previous) else {
                return;
            };
            let message = message(event, &last, started_at, &base_url);
            post(&client, &url, &message).await;
        });
    }

    /// Waits up to `timeout` for the messages still being posted.
    pub async fn settle(&self, timeout: Duration) {
        self.sending.close();
        if tokio::time::timeout(timeout, self.sending.wait())
            .await
            .is_err()
        {
            warn!(
                message = "notifications still being posted are given up",
                pending = self.sending.len()
            );
        }
        self.sending.reopen();
    }
}

/// The status of the schedule's run before the one that ended with `last` (skipped runs aside): from
/// `job_runs`, or this process's memory when that is newer or PostgreSQL does not answer.
async fn previous_status(
    pool: Option<&PgPool>,
    last: &RunRecord,
    started_at: DateTime<Utc>,
    here: Option<(DateTime<Utc>, Status)>,
) -> Option<Status> {
    let stored = match pool {
        None => None,
        Some(pool) => {
            let query = sqlx::query_as::<_, (DateTime<Utc>, String)>(
                "SELECT started_at, status FROM job_runs \
                 WHERE schedule = $1 AND run_id <> $2 AND started_at < $3 \
                   AND status NOT IN ('running', 'skipped') \
                 ORDER BY started_at DESC, attempt DESC LIMIT 1",
            )
            .bind(&last.schedule)
            .bind(last.run_id)
            .bind(started_at)
            .fetch_optional(pool);
            match tokio::time::timeout(LOOKUP_TIMEOUT, query).await {
                Ok(Ok(row)) => row.and_then(|(at, status)| Some((at, status.parse().ok()?))),
                _ => None,
            }
        }
    };
    let here = here.filter(|(at, _)| *at < started_at);
    match (stored, here) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a.1 } else { b.1 }),
        (a, b) => a.or(b).map(|(_, status)| status),
    }
}

/// Posts `message` to `url`: up to three attempts, retrying what may pass (no answer, 429, 5xx).
async fn post(client: &reqwest::Client, url: &Secret, message: &Message) {
    let to = redact_webhook(url.expose());
    let labels = |result: &str| NotifyLabels {
        schedule: message.schedule.clone(),
        result: result.to_owned(),
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    let mut attempt = 1;
    let error = loop {
        let sent = client.post(url.expose()).json(message).send().await;
        let (error, retry) = match sent {
            Ok(response) if response.status().is_success() => {
                info!(message = "notification sent", run_id = %message.run_id, schedule = %message.schedule, event = ?message.event, to = %to);
                METRICS.notifications.get_or_create(&labels("sent")).inc();
                return;
            }
            Ok(response) => {
                let status = response.status();
                let retry = status.is_server_error() || status.as_u16() == 429;
                (
                    format!("the webhook answered http {}", status.as_u16()),
                    retry,
                )
            }
            // The error without its URL: the URL is a secret.
            Err(e) => (e.without_url().to_string(), true),
        };
        if !retry || attempt >= ATTEMPTS {
            break format!("{error} (after {attempt} attempt(s))");
        }
        attempt += 1;
        tokio::time::sleep(backoff.next_delay()).await;
    };
    warn!(message = "cannot send the notification", run_id = %message.run_id, schedule = %message.schedule, to = %to, %error);
    METRICS.notifications.get_or_create(&labels("failed")).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_runs_notify() {
        use NotifyOn::{Always, Failure, Never};
        use Status::{Abandoned, Failed, Skipped, Succeeded, TimedOut};
        let check = |on, status, previous, expected| {
            assert_eq!(
                decide(on, status, previous),
                expected,
                "{on:?} {status:?} after {previous:?}"
            );
        };
        check(Failure, Failed, None, Some(Event::Failure));
        check(Failure, TimedOut, Some(Succeeded), Some(Event::Failure));
        check(Failure, Failed, Some(Failed), Some(Event::Failure));
        check(Failure, Succeeded, Some(Failed), Some(Event::Recovery));
        check(Failure, Succeeded, Some(Abandoned), Some(Event::Recovery));
        check(Failure, Succeeded, Some(Succeeded), None);
        check(Failure, Succeeded, None, None);
        check(Failure, Skipped, Some(Failed), None);
        check(Always, Succeeded, Some(Succeeded), Some(Event::Finished));
        check(Always, Skipped, None, Some(Event::Finished));
        check(Always, Succeeded, Some(TimedOut), Some(Event::Recovery));
        check(Never, Failed, None, None);
    }

    #[test]
    fn a_message_says_what_happened_with_a_link() {
        let run_id = Uuid::from_u128(7);
        let started: DateTime<Utc> = "2026-01-03T02:00:00Z".parse().unwrap();
        let mut last = RunRecord::started(
            run_id,
            (2, 2),
            "base-backup",
            "base-backup",
            Trigger::Schedule,
            Some(started),
        );
        last.started_at = started + chrono::Duration::seconds(30);
        let mut last = last
            .finished(Status::Failed)
            .with_error("pg_basebackup failed: could not connect");
        last.finished_at = Some(started + chrono::Duration::seconds(75));
        let message = message(Event::Failure, &last, started, "https://ops.example/");
        assert_eq!(
            message.text,
            "userpipe: schedule base-backup base-backup failed after 2 attempts in 1m 15s: \
             pg_basebackup failed: could not connect (run https://ops.example/api/jobs/00000000-0000-0000-0000-000000000007)"
        );
        assert_eq!(message.duration_ms, 75_000);
        assert_eq!(message.attempts, 2);
        let json = serde_json::to_value(&message).unwrap();
        for key in [
            "text",
            "schedule",
            "job",
            "run_id",
            "status",
            "error",
            "duration_ms",
            "link",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert_eq!(json["status"], "failed");
        assert_eq!(json["event"], "failure");

        last.status = Status::Succeeded;
        last.error = None;
        let recovered = super::message(Event::Recovery, &last, started, "");
        assert_eq!(
            recovered.text,
            "userpipe: schedule base-backup recovered: base-backup succeeded after 2 attempts in 1m 15s \
             (run /api/jobs/00000000-0000-0000-0000-000000000007)"
        );
    }
}
