//! Per-schedule freshness in the metrics, for alerting: when a schedule last succeeded and last ran,
//! whether a run goes now, its next firing, and the firings the overlap guard skipped. A schedule's
//! gauges exist from when it is loaded (times 0 until known) and go when it is removed; at start they are
//! read back from `job_runs`, so a restart does not forget the last success.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tracing::debug;

use super::journal::Status;
use crate::metrics::{METRICS, ScheduleLabels};

fn labels(schedule: &str) -> ScheduleLabels {
    ScheduleLabels {
        schedule: schedule.to_owned(),
    }
}

fn unix(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// A schedule was loaded: its gauges exist (0 until a run is known), its next firing is `next`.
pub fn loaded(schedule: &str, next: Option<DateTime<Utc>>) {
    let labels = labels(schedule);
    // Created at 0; the guards get_or_create returns are let go at once.
    drop(METRICS.job_last_success.get_or_create(&labels));
    drop(METRICS.job_last_run.get_or_create(&labels));
    drop(METRICS.job_running.get_or_create(&labels));
    next_fire(schedule, next);
}

/// A schedule was removed: its gauges go.
pub fn removed(schedule: &str) {
    let labels = labels(schedule);
    METRICS.job_last_success.remove(&labels);
    METRICS.job_last_run.remove(&labels);
    METRICS.job_next_fire.remove(&labels);
    if METRICS.job_running.get_or_create(&labels).get() <= 0 {
        METRICS.job_running.remove(&labels);
    }
}

/// The schedule's next firing; `None` when it has none (disabled).
pub fn next_fire(schedule: &str, next: Option<DateTime<Utc>>) {
    let labels = labels(schedule);
    match next {
        Some(at) => {
            METRICS.job_next_fire.get_or_create(&labels).set(unix(at));
        }
        None => {
            METRICS.job_next_fire.remove(&labels);
        }
    }
}

/// A run of `schedule` starts doing its work; the returned value marks it going until dropped.
pub fn running(schedule: &str) -> Going {
    METRICS.job_running.get_or_create(&labels(schedule)).inc();
    Going {
        schedule: schedule.to_owned(),
    }
}

/// A run that is going, in `userpipe_job_running`.
pub struct Going {
    schedule: String,
}

impl Drop for Going {
    fn drop(&mut self) {
        METRICS
            .job_running
            .get_or_create(&labels(&self.schedule))
            .dec();
    }
}

/// A firing of `schedule` was skipped by the overlap guard.
pub fn skipped(schedule: &str) {
    METRICS.job_skipped.get_or_create(&labels(schedule)).inc();
}

/// A run of `schedule` ended with `status` at `at`.
pub fn finished(schedule: &str, status: Status, at: DateTime<Utc>) {
    if status == Status::Skipped {
        return;
    }
    let labels = labels(schedule);
    raise(&METRICS.job_last_run, &labels, unix(at));
    if status == Status::Succeeded {
        raise(&METRICS.job_last_success, &labels, unix(at));
    }
}

/// Sets a time gauge to `value` unless it already holds a later time.
fn raise(
    family: &prometheus_client::metrics::family::Family<ScheduleLabels, crate::metrics::FloatGauge>,
    labels: &ScheduleLabels,
    value: f64,
) {
    let gauge = family.get_or_create(labels);
    if gauge.get() < value {
        gauge.set(value);
    }
}

/// Reads the last success and last run of `schedules` from `job_runs` (within 10 s; when PostgreSQL
/// does not answer, the gauges wait for the next runs).
pub async fn read_back(pool: &PgPool, schedules: &[String]) {
    let query = sqlx::query_as::<_, (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>)>(
        "SELECT schedule, max(finished_at) FILTER (WHERE status = 'succeeded'), \
                max(finished_at) FILTER (WHERE status NOT IN ('skipped', 'running')) \
         FROM job_runs WHERE schedule = ANY($1) GROUP BY schedule",
    )
    .bind(schedules)
    .fetch_all(pool);
    match tokio::time::timeout(Duration::from_secs(10), query).await {
        Ok(Ok(rows)) => {
            for (schedule, success, run) in rows {
                let labels = labels(&schedule);
                if let Some(at) = success {
                    raise(&METRICS.job_last_success, &labels, unix(at));
                }
                if let Some(at) = run {
                    raise(&METRICS.job_last_run, &labels, unix(at));
                }
            }
        }
        Ok(Err(e)) => debug!(message = "cannot read the schedules' last runs", error = %e),
        Err(_) => debug!(message = "cannot read the schedules' last runs: no answer within 10s"),
    }
}
