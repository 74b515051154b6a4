//! The cross-replica guards, in PostgreSQL: a claim per firing (so each firing runs once across replicas)
//! and an advisory lock per schedule held for a run (so `overlap = "skip"` holds across replicas).

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use crate::db::AdvisoryLock;

/// An advisory lock on one schedule, held by its own session. Dropping it closes that session, which
/// releases the lock, also when the run panicked or was abandoned.
pub struct ScheduleLock {
    _session: PoolConnection<Postgres>,
}

impl ScheduleLock {
    /// Ends the session, releasing the lock.
    pub async fn release(self) {}
}

/// Takes the lock of `schedule` without waiting: exclusive for a run that must not overlap, shared for
/// one that may. `None` when someone else holds it.
pub async fn try_lock(
    pool: &PgPool,
    schedule: &str,
    exclusive: bool,
) -> anyhow::Result<Option<ScheduleLock>> {
    let mut session = pool
        .acquire()
        .await
        .context("cannot reach postgresql for the schedule lock")?;
    session.close_on_drop();
    let taken = AdvisoryLock::Schedule(schedule)
        .try_take(&mut session, exclusive)
        .await
        .context("cannot take the schedule lock")?;
    Ok(taken.then_some(ScheduleLock { _session: session }))
}

/// Claims the firing of `schedule` at `scheduled_for` for `run_id`. `false` when another replica has it.
pub async fn claim_firing(
    pool: &PgPool,
    schedule: &str,
    scheduled_for: DateTime<Utc>,
    run_id: Uuid,
    instance: &str,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO job_firings (schedule, scheduled_for, run_id, instance) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (schedule, scheduled_for) DO NOTHING",
    )
    .bind(schedule)
    .bind(scheduled_for)
    .bind(run_id)
    .bind(instance)
    .execute(pool)
    .await
    .context("cannot claim the firing")?;
    Ok(done.rows_affected() == 1)
}
