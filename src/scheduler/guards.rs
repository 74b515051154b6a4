//! The cross-replica guards, in PostgreSQL: a claim per firing (so each firing runs once across replicas)
//! and an advisory lock per schedule held for a run (so `overlap = "skip"` holds across replicas). They
//! have connections of their own, apart from the pool that the sink, the journal and the HTTP endpoints
//! share: that pool running dry must never make a run go ahead unguarded.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::db::AdvisoryLock;

/// Connections for firing claims: each claim is one short statement.
const CLAIM_CONNECTIONS: u32 = 2;

/// The guards' connections to the database of the pool they are made from.
#[derive(Clone)]
pub struct Guards {
    /// For claims, its own small pool.
    claims: PgPool,
    /// For schedule locks: each lock opens a session of its own for the run it guards.
    options: PgConnectOptions,
}

impl Guards {
    /// Guards on the database `pool` connects to, with connections apart from `pool`'s. Connects lazily.
    pub fn new(pool: &PgPool) -> Self {
        let options = (*pool.connect_options()).clone();
        let claims = PgPoolOptions::new()
            .max_connections(CLAIM_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.clone());
        Self { claims, options }
    }

    /// Takes the lock of `schedule` without waiting, on a session of its own: exclusive for a run that must
    /// not overlap, shared for one that may. `None` when someone else holds it.
    pub async fn try_lock(
        &self,
        schedule: &str,
        exclusive: bool,
    ) -> anyhow::Result<Option<ScheduleLock>> {
        let mut session = PgConnection::connect_with(&self.options)
            .await
            .context("cannot reach postgresql for the schedule lock")?;
        let taken = AdvisoryLock::Schedule(schedule)
            .try_take(&mut session, exclusive)
            .await
            .context("cannot take the schedule lock")?;
        if taken {
            Ok(Some(ScheduleLock {
                session,
                schedule: schedule.to_owned(),
                exclusive,
            }))
        } else {
            let _ = session.close().await;
            Ok(None)
        }
    }

    /// Claims the firing of `schedule` at `scheduled_for` for `run_id`. `false` when another replica has
    /// it.
    pub async fn claim_firing(
        &self,
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
        .execute(&self.claims)
        .await
        .context("cannot claim the firing")?;
        Ok(done.rows_affected() == 1)
    }
}

/// An advisory lock on one schedule, held by a session of its own. A run that ends releases it; dropped
/// (the run panicked or was abandoned), its session closes, and the server lets the lock go once its
/// process has noticed.
pub struct ScheduleLock {
    session: PgConnection,
    schedule: String,
    exclusive: bool,
}

impl ScheduleLock {
    /// Lets go of the lock at once, then ends the session: a run fired right after this one must find
    /// the lock free (left to the closed session, it was still held under load, and such a run was
    /// skipped as "still running on another replica").
    pub async fn release(mut self) {
        let _ = AdvisoryLock::Schedule(&self.schedule)
            .release(&mut self.session, self.exclusive)
            .await;
        let _ = self.session.close().await;
    }
}
