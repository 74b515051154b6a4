//! What the status page's job timeline shows: each schedule file as it stands (enabled or not, its next
//! fire times, or the error that keeps it from loading), and the runs of a time window from `job_runs`,
//! one mark per run (its last attempt's status) rather than one per attempt. The schedule rows are pure.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::files::Loaded;
use super::journal::{RunRecord, select_runs};

/// Longest `why` a mark carries; the run's own page has the whole text.
pub const WHY_CHARS: i32 = 300;

/// One schedule file, as the timeline's row header shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScheduleRow {
    pub name: String,
    /// `None` when the file does not load.
    pub job: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub enabled: bool,
    /// The next fire times (none while disabled).
    pub next: Vec<DateTime<Utc>>,
    /// Why the file does not load, with its line and column; the scheduler keeps running the last valid
    /// version, if it had one.
    pub error: Option<String>,
}

/// The rows for the schedule folder's contents at `now`, in name order, each with its next `n` fire times.
pub fn schedule_rows(loaded: &Loaded, now: DateTime<Utc>, n: usize) -> Vec<ScheduleRow> {
    let mut rows: Vec<ScheduleRow> = loaded
        .schedules
        .iter()
        .map(|(s, _)| ScheduleRow {
            name: s.name.clone(),
            job: Some(s.job.kind().to_owned()),
            cron: Some(s.cron_text.clone()),
            timezone: Some(s.timezone.to_string()),
            enabled: s.enabled,
            next: if s.enabled {
                s.next_fires(now, n)
                    .into_iter()
                    .map(|t| t.with_timezone(&Utc))
                    .collect()
            } else {
                Vec::new()
            },
            error: None,
        })
        .collect();
    rows.extend(loaded.errors.iter().map(|e| {
        ScheduleRow {
            name: e
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            job: None,
            cron: None,
            timezone: None,
            enabled: false,
            next: Vec::new(),
            error: Some(e.to_string()),
        }
    }));
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// The fields of each run in [`runs_json_since`], in order.
pub const RUN_FIELDS: [&str; 8] = [
    "run_id",
    "schedule",
    "status",
    "trigger",
    "attempts",
    "started_at_ms",
    "duration_ms",
    "why",
];

/// The runs whose last attempt started at `since` or later, oldest first, as a JSON array made by
/// PostgreSQL: one value for the whole range, rather than decoding and encoding thousands of rows one by
/// one (a week of a minutely schedule is 10,000 runs, and the page asks every few seconds). One array per
/// run (not per attempt), its values in the order of [`RUN_FIELDS`] (half the bytes of objects):
///
/// - `run_id`, `schedule`; `status`: its last attempt's; `trigger`; `attempts`: how many so far;
/// - `started_at_ms`: when its first attempt started, Unix milliseconds; `duration_ms`: from then until
///   its last attempt finished (`null` while that runs);
/// - `why`: the last attempt's error, else its reason, cut to [`WHY_CHARS`] characters (or `null`).
///
/// JIT compilation is turned off for it: the planner's cost estimate for 10,000 rows crosses
/// `jit_above_cost`, and compiling takes longer than the query itself.
pub async fn runs_json_since(pool: &PgPool, since: DateTime<Utc>) -> anyhow::Result<String> {
    let mut tx = pool
        .begin()
        .await
        .context("cannot read the job runs of the timeline")?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let runs = sqlx::query_scalar(
        "SELECT coalesce(json_agg(json_build_array(run_id, schedule, status, trigger, attempts, \
             started_at_ms, duration_ms, why) ORDER BY started_at_ms), '[]')::text FROM ( \
           SELECT j.run_id, j.schedule, j.status, j.trigger, j.attempt AS attempts, \
             round(date_part('epoch', first.started_at) * 1000)::bigint AS started_at_ms, \
             round(date_part('epoch', j.finished_at - first.started_at) * 1000)::bigint AS duration_ms, \
             left(coalesce(j.error, j.reason), $2) AS why \
           FROM job_runs j CROSS JOIN LATERAL ( \
             SELECT CASE WHEN j.attempt = 1 THEN j.started_at ELSE \
               (SELECT f.started_at FROM job_runs f WHERE f.run_id = j.run_id AND f.attempt = 1) END \
               AS started_at) first \
           WHERE j.started_at >= $1 AND NOT EXISTS ( \
             SELECT 1 FROM job_runs later WHERE later.run_id = j.run_id AND later.attempt > j.attempt) \
         ) r",
    )
    .bind(since)
    .bind(WHY_CHARS)
    .fetch_one(&mut *tx)
    .await
    .context("cannot read the job runs of the timeline")?;
    tx.commit().await?;
    Ok(runs)
}

/// The last attempt of the newest finished run of `job` (any schedule), if there is one.
pub async fn last_finished_run_of(pool: &PgPool, job: &str) -> anyhow::Result<Option<RunRecord>> {
    sqlx::query_as(select_runs!(
        "WHERE job = $1 AND status <> 'running' ORDER BY started_at DESC, attempt DESC LIMIT 1"
    ))
    .bind(job)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("cannot read the last {job} run"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scheduler::schedule::parse;

    #[test]
    fn rows_show_next_fires_disabled_schedules_and_file_errors() {
        let every_minute = parse(
            Path::new("fetch-users.toml"),
            "job = \"fetch-users\"\ncron = \"* * * * *\"\n",
        )
        .unwrap();
        let disabled = parse(
            Path::new("base-backup.toml"),
            "job = \"base-backup\"\ncron = \"0 2 * * 6\"\nenabled = false\n",
        )
        .unwrap();
        let broken = parse(
            Path::new("drill.toml"),
            "job = \"restore-drill\"\ncron = \"nope\"\n",
        )
        .unwrap_err();
        let loaded = Loaded {
            schedules: vec![(every_minute, String::new()), (disabled, String::new())],
            errors: vec![broken],
        };
        let now: DateTime<Utc> = "2026-01-03T10:15:30Z".parse().unwrap();
        let rows = schedule_rows(&loaded, now, 2);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["base-backup", "drill", "fetch-users"]);

        assert!(!rows[0].enabled);
        assert!(rows[0].next.is_empty(), "a disabled schedule does not fire");
        assert_eq!(rows[0].job.as_deref(), Some("base-backup"));

        assert!(rows[1].job.is_none());
        let error = rows[1].error.as_deref().unwrap();
        assert!(error.starts_with("drill.toml:2:"), "{error}");

        assert!(rows[2].enabled);
        assert_eq!(
            rows[2].next,
            [
                "2026-01-03T10:16:00Z".parse::<DateTime<Utc>>().unwrap(),
                "2026-01-03T10:17:00Z".parse().unwrap()
            ]
        );
    }
}
