//! One run of a schedule: the guards (overlap here and on other replicas, the firing claim), jitter,
//! attempts with a timeout and retries, and a journal record for each attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;
use tracing::{debug, warn};
use uuid::Uuid;

use super::guards::{Guards, ScheduleLock};
use super::jobs::{self, JobFailure};
use super::journal::{self, Journal, RunRecord, Status, Trigger};
use super::schedule::{Overlap, Schedule};
use crate::config::Config;
use crate::retry::Backoff;

/// How long the guards may wait for PostgreSQL before the run goes ahead without them.
const GUARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs jobs; shared by the scheduler and `userpipe jobs run`.
pub struct Runner {
    config: Config,
    /// The firing claims and schedule locks, on connections of their own (none without a database).
    guards: Option<Guards>,
    journal: Journal,
    /// Shared by every fetch run: a producer's start-up costs more than publishing one user.
    producer: FutureProducer,
    /// Schedules with a run going in this process, and that run's id.
    running: Mutex<HashMap<String, Uuid>>,
}

impl Runner {
    pub fn new(
        config: Config,
        pool: Option<PgPool>,
        journal: Journal,
    ) -> anyhow::Result<Arc<Self>> {
        let producer = crate::kafka::producer(&config.kafka)?;
        Ok(Arc::new(Self {
            config,
            guards: pool.as_ref().map(Guards::new),
            journal,
            producer,
            running: Mutex::new(HashMap::new()),
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
        let job = schedule.job.kind();
        let skipped = |reason: String| {
            let record = RunRecord::started(run_id, 1, &schedule.name, job, trigger, scheduled_for)
                .finished(Status::Skipped)
                .with_reason(reason);
            self.journal.record(&record);
            Some(Status::Skipped)
        };

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
                    warn!(message = "running without the firing claim", schedule = %schedule.name, error = %format!("{e:#}"))
                }
                Err(_) => {
                    warn!(message = "running without the firing claim: postgresql did not answer in time", schedule = %schedule.name)
                }
            }
        }
        let exclusive = schedule.overlap == Overlap::Skip;
        if exclusive && let Some(previous) = self.running_here(&schedule.name) {
            return skipped(format!("the previous run {previous} is still running"));
        }
        let _lock: Option<ScheduleLock> = match &self.guards {
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

        if !schedule.jitter.is_zero() {
            let jitter = rand::rng().random_range(Duration::ZERO..=schedule.jitter);
            tokio::time::sleep(jitter).await;
        }
        let attempts = schedule.retries.saturating_add(1);
        let mut backoff = Backoff::new(schedule.retry_backoff, Duration::MAX);
        let mut status = Status::Failed;
        for attempt in 1..=attempts {
            let started = RunRecord::started(
                run_id,
                attempt as i32,
                &schedule.name,
                job,
                trigger,
                scheduled_for,
            );
            self.journal.record(&started);
            let work = jobs::execute(&self.config, &self.producer, &schedule.job, run_id);
            let outcome = tokio::time::timeout(schedule.timeout, work).await;
            let finished = match outcome {
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
            status = finished.status;
            if status == Status::Succeeded || attempt == attempts {
                break;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        Some(status)
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
