//! The journal of job runs: each attempt's start and finish, logged as a structured event and kept in
//! PostgreSQL `job_runs`, and the runs' own log lines (`job_run_logs`, see [`super::runlog`]). Table
//! writes go through queues with retries, so jobs run on, and are logged, while PostgreSQL is unreachable;
//! the tables catch up once it is back.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::owners;
use super::runlog::{self, LogLine};
use crate::db::is_data_error;
use crate::metrics::{METRICS, RunLabels, ScheduleLabels};
use crate::retry::{Attempt, Backoff, until_done};

/// Records waiting for PostgreSQL; past this the table misses records (the log still has them).
const QUEUE: usize = 10_000;
/// Run log lines waiting for PostgreSQL; past this, lines are dropped (the process's log still has them).
const LINES_QUEUE: usize = 20_000;
/// Run log lines written in one statement.
const LINES_BATCH: usize = 1000;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Start,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Start => "start",
        }
    }
}

impl TryFrom<String> for Trigger {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        [Trigger::Schedule, Trigger::Manual, Trigger::Start]
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| format!("unknown trigger {text:?}"))
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    Abandoned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Skipped => "skipped",
            Status::Abandoned => "abandoned",
        }
    }

    /// Every status, in the order of a run's life.
    pub const ALL: [Status; 6] = [
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Skipped,
        Status::Abandoned,
    ];

    /// The run did not do its work: failed, timed out, or cut off.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut | Status::Abandoned)
    }
}

impl TryFrom<String> for Status {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status {text:?}: the statuses are {}",
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of one run, as logged and as kept in `job_runs`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RunRecord {
    pub run_id: Uuid,
    pub attempt: i32,
    pub schedule: String,
    pub job: String,
    #[sqlx(try_from = "String")]
    pub trigger: Trigger,
    /// The firing this run is for (scheduled runs only).
    pub scheduled_for: Option<DateTime<Utc>>,
    #[sqlx(try_from = "String")]
    pub status: Status,
    /// Why it was skipped, timed out or abandoned.
    pub reason: Option<String>,
    pub error: Option<String>,
    /// The job's own account: users fetched, backup id and size, ...
    pub detail: Option<serde_json::Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The userpipe process that ran it (`host:pid`).
    pub instance: String,
    /// The attempts the run may make (its schedule's `retries` plus one).
    pub max_attempts: i32,
    /// That process's owner id (`scheduler::owners`); none on runs recorded before owners were.
    pub owner: Option<Uuid>,
}

impl RunRecord {
    /// A record that attempt `attempt` of `max_attempts` of a run started now.
    pub fn started(
        run_id: Uuid,
        (attempt, max_attempts): (i32, i32),
        schedule: &str,
        job: &str,
        trigger: Trigger,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            run_id,
            attempt,
            max_attempts,
            schedule: schedule.to_owned(),
            job: job.to_owned(),
            trigger,
            scheduled_for,
            status: Status::Running,
            reason: None,
            error: None,
            detail: None,
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
            instance: instance(),
            // Stamped by the journal writer that writes it (`owners`).
            owner: None,
        }
    }

    /// This record, finished now with `status`.
    pub fn finished(&self, status: Status) -> Self {
        let finished_at = Utc::now();
        Self {
            status,
            finished_at: Some(finished_at),
            duration_ms: Some((finished_at - self.started_at).num_milliseconds()),
            ..self.clone()
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Whether this attempt ended its run: it finished, and no further attempt follows.
    pub fn ends_run(&self) -> bool {
        match self.status {
            Status::Running => false,
            Status::Succeeded | Status::Skipped | Status::Abandoned => true,
            Status::Failed | Status::TimedOut => self.attempt >= self.max_attempts,
        }
    }

    /// Logs the record as a structured event.
    fn log(&self) {
        let detail = self.detail.as_ref().map(|d| d.to_string());
        let event = if self.status == Status::Running {
            "job run started"
        } else {
            "job run finished"
        };
        macro_rules! event {
            ($level:ident) => {
                $level!(
                    message = event,
                    run_id = %self.run_id,
                    schedule = %self.schedule,
                    job = %self.job,
                    trigger = %self.trigger,
                    attempt = self.attempt,
                    status = %self.status,
                    duration_ms = self.duration_ms,
                    reason = self.reason.as_deref(),
                    error = self.error.as_deref(),
                    detail = detail.as_deref(),
                )
            };
        }
        if self.status.is_failure() {
            event!(warn)
        } else {
            event!(info)
        }
    }
}

/// This process, as named in `job_runs.instance`.
pub fn instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Where run records and run log lines go.
#[derive(Clone)]
pub struct Journal {
    queue: Option<mpsc::Sender<RunRecord>>,
    lines: Option<mpsc::Sender<LogLine>>,
}

impl Journal {
    /// A journal that logs and, when `pool` is given, writes `job_runs` and `job_run_logs` in the
    /// background until `shutdown` (then it gets `SHUTDOWN_GRACE` and one second more to write what is
    /// queued).
    pub fn start(
        pool: Option<PgPool>,
        shutdown: CancellationToken,
    ) -> (Self, Option<JoinHandle<()>>) {
        let Some(pool) = pool else {
            let journal = Self {
                queue: None,
                lines: None,
            };
            return (journal, None);
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let (lines_tx, lines_rx) = mpsc::channel(LINES_QUEUE);
        let writer = tokio::spawn(write_records(pool, rx, lines_rx, shutdown));
        let journal = Self {
            queue: Some(tx),
            lines: Some(lines_tx),
        };
        (journal, Some(writer))
    }

    /// The queue of run log lines, when the journal writes a table.
    pub fn log_queue(&self) -> Option<mpsc::Sender<LogLine>> {
        self.lines.clone()
    }

    /// Logs `record`, counts it when finished, and queues it for the table.
    pub fn record(&self, record: &RunRecord) {
        record.log();
        if record.status != Status::Running {
            let labels = RunLabels {
                schedule: record.schedule.clone(),
                status: record.status.as_str().to_owned(),
            };
            METRICS.job_runs.get_or_create(&labels).inc();
            if let Some(ms) = record.duration_ms {
                let labels = ScheduleLabels {
                    schedule: record.schedule.clone(),
                };
                METRICS
                    .job_seconds
                    .get_or_create(&labels)
                    .observe(ms as f64 / 1000.0);
            }
        }
        if let Some(queue) = &self.queue
            && queue.try_send(record.clone()).is_err()
        {
            warn!(message = "journal queue full; this record is only in the log", run_id = %record.run_id);
        }
    }
}

async fn write_records(
    pool: PgPool,
    mut rx: mpsc::Receiver<RunRecord>,
    mut lines_rx: mpsc::Receiver<LogLine>,
    shutdown: CancellationToken,
) {
    let stop = CancellationToken::new();
    {
        let (shutdown, stop) = (shutdown.clone(), stop.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            // The scheduler gives running jobs SHUTDOWN_GRACE to finish; their records come after that.
            tokio::time::sleep(crate::SHUTDOWN_GRACE + Duration::from_secs(1)).await;
            stop.cancel();
        });
    }
    // First the schema; then the queue, in order.
    match crate::db::migrate_when_reachable(&pool, &stop).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            error!(message = "the journal cannot prepare its table; records are only in the log", error = %format!("{e:#}"));
            return;
        }
    }
    // This process's owner lock, held while it journals; the runs of owners that are gone are marked now
    // and every REAP_EVERY (a replica not provably gone at first may be later).
    let keeper = stop.child_token();
    let (registered, is_registered) = tokio::sync::oneshot::channel();
    let me = owners::new_owner();
    let holder = tokio::spawn(owners::hold(
        (*pool.connect_options()).clone(),
        me,
        instance(),
        registered,
        keeper.clone(),
    ));
    // Records only once this process is registered as their owner: a run it wrote before, and then died,
    // could never be proven abandoned.
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = is_registered => write_queue(&pool, me, &mut rx, &mut lines_rx, &stop).await,
    }
    keeper.cancel();
    let _ = holder.await;
}

/// How often the runs of gone owners are looked for.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// Writes the queued records and log lines in order until the queue closes or `stop`, marking the runs of
/// gone owners abandoned between.
async fn write_queue(
    pool: &PgPool,
    me: Uuid,
    rx: &mut mpsc::Receiver<RunRecord>,
    lines_rx: &mut mpsc::Receiver<LogLine>,
    stop: &CancellationToken,
) {
    let (pool, stop) = (pool.clone(), stop.clone());
    let mut reap = tokio::time::interval(REAP_EVERY);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lines = Vec::with_capacity(LINES_BATCH);
    let mut lines_open = true;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = reap.tick() => {
                if let Err(e) = owners::mark_abandoned(&pool, me).await {
                    warn!(message = "cannot mark abandoned runs", error = %format!("{e:#}"));
                }
            }
            record = rx.recv() => {
                // The lines a run logged before this record go first: once a record says a run ended,
                // its log is complete in the table.
                while lines.len() < LINES_QUEUE && let Ok(line) = lines_rx.try_recv() {
                    lines.push(line);
                }
                for batch in lines.chunks(LINES_BATCH) {
                    if write_lines(&pool, batch, &stop).await.is_err() {
                        return;
                    }
                }
                lines.clear();
                let Some(mut record) = record else { return };
                record.owner = Some(me);
                if write_record(&pool, &record, &stop).await.is_err() {
                    return;
                }
            }
            received = lines_rx.recv_many(&mut lines, LINES_BATCH), if lines_open => {
                lines_open = received > 0;
                if write_lines(&pool, &lines, &stop).await.is_err() {
                    return;
                }
                lines.clear();
            }
        }
    }
}

/// Writes one record, retrying until done or `stop`.
async fn write_record(
    pool: &PgPool,
    record: &RunRecord,
    stop: &CancellationToken,
) -> Result<(), crate::retry::Abandoned> {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    until_done("cannot write the journal, retrying", backoff, stop, || async {
        match upsert(pool, record).await {
            Ok(()) => Attempt::Done(()),
            // Only a record the database refuses as data is dropped (the log keeps it); anything else
            // (unreachable, not migrated yet, read-only) passes once fixed.
            Err(e) if is_data_error(&e) => {
                error!(message = "journal record refused by the database", run_id = %record.run_id, error = %e);
                Attempt::Done(())
            }
            Err(e) => Attempt::Retry(e.to_string()),
        }
    })
    .await
}

/// Writes run log lines, retrying until done or `stop`.
async fn write_lines(
    pool: &PgPool,
    lines: &[LogLine],
    stop: &CancellationToken,
) -> Result<(), crate::retry::Abandoned> {
    if lines.is_empty() {
        return Ok(());
    }
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    until_done("cannot write run logs, retrying", backoff, stop, || async {
        match runlog::insert(pool, lines).await {
            Ok(()) => Attempt::Done(()),
            Err(e) if is_data_error(&e) => {
                error!(message = "run log lines refused by the database", lines = lines.len(), error = %e);
                Attempt::Done(())
            }
            Err(e) => Attempt::Retry(e.to_string()),
        }
    })
    .await
}

/// Writes a record; a later record of the same attempt replaces the earlier one.
pub async fn upsert(pool: &PgPool, r: &RunRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_runs (run_id, attempt, schedule, job, trigger, scheduled_for, status, reason, error, \
           detail, started_at, finished_at, duration_ms, instance, max_attempts, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (run_id, attempt) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason, \
           error = EXCLUDED.error, detail = EXCLUDED.detail, finished_at = EXCLUDED.finished_at, \
           duration_ms = EXCLUDED.duration_ms",
    )
    .bind(r.run_id)
    .bind(r.attempt)
    .bind(&r.schedule)
    .bind(&r.job)
    .bind(r.trigger.as_str())
    .bind(r.scheduled_for)
    .bind(r.status.as_str())
    .bind(&r.reason)
    .bind(&r.error)
    .bind(&r.detail)
    .bind(r.started_at)
    .bind(r.finished_at)
    .bind(r.duration_ms)
    .bind(&r.instance)
    .bind(r.max_attempts)
    .bind(r.owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// `SELECT <every column of a RunRecord> FROM job_runs <rest>`, as one static statement. The columns are
/// named, never `*`: a statement over `*` is prepared with the table's shape at the time, kept in the
/// connection's statement cache, and refused by PostgreSQL on that connection for good ("cached plan
/// must not change result type") once a migration adds a column, e.g. when this process read the journal
/// while another one was still migrating it.
macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT run_id, attempt, schedule, job, trigger, scheduled_for, status, reason, error, \
               detail, started_at, finished_at, duration_ms, instance, max_attempts, owner \
             FROM job_runs ",
            $rest
        )
    };
}
pub(crate) use select_runs;

/// Which runs `userpipe jobs` lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub schedule: Option<String>,
    pub status: Option<Status>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// The newest run attempts matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &RunFilter) -> anyhow::Result<Vec<RunRecord>> {
    sqlx::query_as(select_runs!(
        "WHERE ($1::text IS NULL OR schedule = $1) AND ($2::text IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR started_at >= $3) \
         ORDER BY started_at DESC, attempt DESC LIMIT $4"
    ))
    .bind(&filter.schedule)
    .bind(filter.status.map(Status::as_str))
    .bind(filter.since)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
    .context("cannot read job runs")
}

/// Whether the run whose attempts are `records` is over: its latest attempt ended it. Pure.
pub fn run_over(records: &[RunRecord]) -> bool {
    records
        .iter()
        .max_by_key(|r| r.attempt)
        .is_some_and(RunRecord::ends_run)
}

/// Every attempt of one run, first attempt first.
pub async fn show(pool: &PgPool, run_id: Uuid) -> anyhow::Result<Vec<RunRecord>> {
    sqlx::query_as(select_runs!("WHERE run_id = $1 ORDER BY attempt"))
        .bind(run_id)
        .fetch_all(pool)
        .await
        .context("cannot read the job run")
}
