//! One run of a schedule: the guards (overlap here and on other replicas, the firing claim), jitter,
//! attempts with a timeout and retries, a journal record for each attempt, the run's own log (a `run`
//! span around it and an `attempt` span around each attempt, which [`super::capture`] keeps), its
//! freshness metrics, and its notification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::RngExt;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};
use uuid::Uuid;

use super::capture::{self, ATTEMPT_SPAN, RUN_SPAN};
use super::freshness;
use super::guards::{Guards, ScheduleLock};
use super::jobs::{self, JobFailure, KafkaSide};
use super::journal::{self, Journal, RunRecord, Status, Trigger};
use super::notify::Notifier;
use super::schedule::{Overlap, Schedule};
use crate::config::Config;
use crate::retry::Backoff;

/// How long the guards may wait for PostgreSQL before the run goes ahead without them.
const GUARD_TIMEOUT: Duration = Duration::from_secs(3);

/// A process's one runner with its journal's writer. The scheduler and the HTTP run-now of `userpipe run`
/// share it, so one in-process overlap guard sees every run and the process has one journal owner.
pub struct Service {
    pub runner: Arc<Runner>,
    writer: Option<JoinHandle<()>>,
}

impl Service {
    /// A runner whose journal writes to `pool` (when given) until `shutdown` and its grace.
    pub fn start(
        config: &Config,
        pool: Option<PgPool>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let (journal, writer) = Journal::start(pool.clone(), shutdown.clone());
        let runner = Runner::new(config.clone(), pool, journal)?;
        Ok(Self { runner, writer })
    }

    /// The end: waits up to `settle` for the notifications still being posted, cancels `shutdown`, and
    /// waits for the journal's writer to write what is queued.
    pub async fn finish(
        self,
        settle: Duration,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.runner.settle(settle).await;
        drop(self.runner);
        shutdown.cancel();
        if let Some(writer) = self.writer {
            writer.await.context("the journal writer panicked")?;
        }
        Ok(())
    }
}

/// Runs jobs; shared by the scheduler and `userpipe jobs run`.
pub struct Runner {
    config: Config,
    /// The journal's database (the `prune-history` job prunes it; notifications read the last run).
    pool: Option<PgPool>,
    /// The firing claims and schedule locks, on connections of their own (none without a database).
    guards: Option<Guards>,
    journal: Journal,
    /// What fetch runs share: the producer, and whether the topics exist.
    kafka: KafkaSide,
    /// Schedules with a run going in this process, and that run's id.
    running: Mutex<HashMap<String, Uuid>>,
    notifier: Notifier,
}

impl Runner {
    pub fn new(
        config: Config,
        pool: Option<PgPool>,
        journal: Journal,
    ) -> anyhow::Result<Arc<Self>> {
        let kafka = KafkaSide::new(&config)?;
        let notifier = Notifier::new(&config.notify, pool.clone())?;
        Ok(Arc::new(Self {
            config,
            guards: pool.as_ref().map(Guards::new),
            pool,
            journal,
            kafka,
            running: Mutex::new(HashMap::new()),
            notifier,
        }))
    }

    /// Runs `schedule` once for `trigger`; returns the final status, or `None` when another replica
    /// claimed this firing.
    pub async fn fire(
        &self,
        schedule: &Schedule,
        trigger: Trigger,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> Option<Status> {
        let run_id = Uuid::new_v4();
        if let (Some(guards), Some(at)) = (&self.guards, scheduled_for) {
            let instance = journal::instance();
            let claim = guards.claim_firing(&schedule.name, at, run_id, &instance);
            match tokio::time::timeout(GUARD_TIMEOUT, claim).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    debug!(message = "firing claimed by another replica", schedule = %schedule.name, scheduled_for = %at);
                    return None;
                }
                Ok(Err(e)) => {
                    warn!(message = "running without the firing claim", %run_id, schedule = %schedule.name, error = %format!("{e:#}"))
                }
                Err(_) => {
                    warn!(message = "running without the firing claim: postgresql did not answer in time", %run_id, schedule = %schedule.name)
                }
            }
        }
        // From here on, every event of the run is kept in its log.
        let _capture = self
            .journal
            .log_queue()
            .map(|queue| capture::attach(run_id, queue));
        let span = info_span!(RUN_SPAN, %run_id, schedule = %schedule.name);
        let (first_start, last) = self
            .run(schedule, run_id, trigger, scheduled_for)
            .instrument(span)
            .await;
        let ended = last.finished_at.unwrap_or_else(Utc::now);
        freshness::finished(&schedule.name, last.status, ended);
        self.notifier.run_ended(
            &schedule.notify,
            &last,
            first_start.unwrap_or(last.started_at),
        );
        Some(last.status)
    }

    /// The guarded part of a run; returns when its first attempt started, and its last record.
    async fn run(
        &self,
        schedule: &Schedule,
        run_id: Uuid,
        trigger: Trigger,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> (Option<DateTime<Utc>>, RunRecord) {
        let job = schedule.job.kind();
        let attempts = schedule.retries.saturating_add(1);
        let max_attempts = attempts.min(i32::MAX as u32) as i32;
        let skipped = |reason: String| {
            freshness::skipped(&schedule.name);
            let record = RunRecord::started(
                run_id,
                (1, max_attempts),
                &schedule.name,
                job,
                trigger,
                scheduled_for,
            )
            .finished(Status::Skipped)
            .with_reason(reason);
            self.journal.record(&record);
            (None, record)
        };

        let exclusive = schedule.overlap == Overlap::Skip;
        if exclusive && let Some(previous) = self.running_here(&schedule.name) {
            return skipped(format!("the previous run {previous} is still running"));
        }
        let lock: Option<ScheduleLock> = match &self.guards {
            None => None,
            Some(guards) => match tokio::time::timeout(
                GUARD_TIMEOUT,
                guards.try_lock(&schedule.name, exclusive),
            )
            .await
            {
                Ok(Ok(Some(lock))) => Some(lock),
                Ok(Ok(None)) => {
                    return skipped("the previous run is still running on another replica".into());
                }
                Ok(Err(e)) => {
                    warn!(message = "running without the schedule lock", schedule = %schedule.name, error = %format!("{e:#}"));
                    None
                }
                Err(_) => {
                    warn!(message = "running without the schedule lock: postgresql did not answer in time", schedule = %schedule.name);
                    None
                }
            },
        };
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if exclusive && let Some(previous) = running.get(&schedule.name) {
                let previous = *previous;
                drop(running);
                return skipped(format!("the previous run {previous} is still running"));
            }
            running.insert(schedule.name.clone(), run_id);
        }
        let _clear = ClearOnDrop {
            runner: self,
            name: &schedule.name,
            run_id,
        };
        let _going = freshness::running(&schedule.name);

        if !schedule.jitter.is_zero() {
            let jitter = rand::rng().random_range(Duration::ZERO..=schedule.jitter);
            tokio::time::sleep(jitter).await;
        }
        let ended = self
            .attempts(
                schedule,
                (run_id, job, max_attempts),
                trigger,
                scheduled_for,
            )
            .await;
        if let Some(lock) = lock {
            // Left unanswered, the dropped session still lets the lock go, later.
            let _ = tokio::time::timeout(GUARD_TIMEOUT, lock.release()).await;
        }
        ended
    }

    /// A run's attempts, retried with backoff as its schedule says, until one ends the run; returns when
    /// the first started, and the last record.
    async fn attempts(
        &self,
        schedule: &Schedule,
        (run_id, job, max_attempts): (Uuid, &str, i32),
        trigger: Trigger,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> (Option<DateTime<Utc>>, RunRecord) {
        let mut backoff = Backoff::new(schedule.retry_backoff, Duration::MAX);
        let mut first_start = None;
        let mut attempt = 1;
        loop {
            let started = RunRecord::started(
                run_id,
                (attempt, max_attempts),
                &schedule.name,
                job,
                trigger,
                scheduled_for,
            );
            first_start.get_or_insert(started.started_at);
            let finished = self
                .attempt(schedule, started)
                .instrument(info_span!(ATTEMPT_SPAN, attempt))
                .await;
            if finished.ends_run() {
                return (first_start, finished);
            }
            tokio::time::sleep(backoff.next_delay()).await;
            attempt += 1;
        }
    }

    /// One attempt, from its `started` record to its finished one, both journaled.
    async fn attempt(&self, schedule: &Schedule, started: RunRecord) -> RunRecord {
        self.journal.record(&started);
        let work = jobs::execute(
            &self.config,
            &self.kafka,
            self.pool.as_ref(),
            &schedule.job,
            started.run_id,
        );
        let finished = match tokio::time::timeout(schedule.timeout, work).await {
            Ok(Ok(detail)) => started.finished(Status::Succeeded).with_detail(detail),
            Ok(Err(e)) => {
                let failed = started
                    .finished(Status::Failed)
                    .with_error(format!("{e:#}"));
                match e.downcast_ref::<JobFailure>() {
                    Some(failure) => failed.with_detail(failure.detail.clone()),
                    None => failed,
                }
            }
            Err(_) => started.finished(Status::TimedOut).with_reason(format!(
                "cancelled after the timeout of {}",
                humantime::format_duration(schedule.timeout)
            )),
        };
        self.journal.record(&finished);
        finished
    }

    /// The journal's database, when there is one.
    pub fn pool(&self) -> Option<&PgPool> {
        self.pool.as_ref()
    }

    /// Waits up to `timeout` for the notifications still being posted (before the process exits).
    pub async fn settle(&self, timeout: Duration) {
        self.notifier.settle(timeout).await;
    }

    fn running_here(&self, name: &str) -> Option<Uuid> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }
}

/// Clears a schedule's running mark when its run ends, however it ends.
struct ClearOnDrop<'a> {
    runner: &'a Runner,
    name: &'a str,
    run_id: Uuid,
}

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        let mut running = self
            .runner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if running.get(self.name) == Some(&self.run_id) {
            running.remove(self.name);
        }
    }
}
