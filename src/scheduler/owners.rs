//! Who owns a run in `job_runs`: every journal writer (one in each process that journals: `userpipe run`'s
//! scheduler and HTTP "run now" share theirs) holds, for its lifetime, a session advisory lock keyed by its
//! owner id (new at every start) and registers itself in `job_owners` with the server's start time. A run
//! still `running` is marked `abandoned` only when its owner is provably gone; a run of a live process, on
//! this replica or another, is never marked.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::db::AdvisoryLock;
use crate::retry::Backoff;

/// How often the owner's session is checked; also the longest wait between attempts to take it again.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// After PostgreSQL (re)starts, how long a live owner may take to register again (it checks its session
/// every [`CHECK_EVERY`]): an owner registered only with an earlier start and not back by then is gone.
pub const REREGISTER_WITHIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A new owner id, for one journal writer, as written in `job_runs.owner`. One per writer, not one per
/// process: a process-wide id made a second writer wait forever for the lock the first one held.
pub fn new_owner() -> Uuid {
    Uuid::new_v4()
}

/// The advisory-lock key of `owner`.
fn lock_key(owner: Uuid) -> i32 {
    let b = owner.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// What is known of a registered owner other than this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its lock is held: it runs.
    Alive,
    /// Its lock is free, and it had taken it during the server's current run (its session ended while the
    /// server ran: the process stopped or was killed), or it has not come back long after the server's
    /// start.
    Gone,
    /// Its lock is free but the server started again shortly after it registered: a live owner may be on
    /// its way back. Asked again at the next look.
    NotYet,
}

/// The verdict on an owner whose lock is `held` or not, registered with the server start
/// `registered_with`, when the server's current run began at `server_started` and it is `now`. Pure.
pub fn verdict(
    held: bool,
    registered_with: DateTime<Utc>,
    server_started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Verdict {
    if held {
        Verdict::Alive
    } else if registered_with == server_started || now - server_started >= REREGISTER_WITHIN {
        Verdict::Gone
    } else {
        Verdict::NotYet
    }
}

/// Holds this process's owner lock on a session of its own until `stop`, taking it again, and registering
/// again, whenever the session is lost (PostgreSQL restarted or could not be reached). `registered` is told
/// once the first registration is in: runs written before it could never be proven abandoned.
pub async fn hold(
    options: PgConnectOptions,
    me: Uuid,
    instance: String,
    registered: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let first = Duration::from_millis(200);
    let mut backoff = Backoff::new(first, CHECK_EVERY);
    let mut registered = Some(registered);
    loop {
        match take(&options, me, &instance).await {
            Ok(Some(mut session)) => {
                debug!(message = "owner lock taken", owner = %me);
                if let Some(registered) = registered.take() {
                    let _ = registered.send(());
                }
                backoff = Backoff::new(first, CHECK_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => {
                            let _ = tokio::time::timeout(Duration::from_secs(1), session.close()).await;
                            return;
                        }
                        _ = tokio::time::sleep(CHECK_EVERY) => {}
                    }
                    if session.ping().await.is_err() {
                        warn!(message = "lost the owner session; taking the owner lock again", owner = %me);
                        break;
                    }
                }
            }
            Ok(None) => {
                // Another live session has the same key: this process's runs look alive to the others
                // meanwhile (never wrongly abandoned), so the journal need not wait.
                warn!(message = "the owner lock is held by another session; trying again", owner = %me);
                if let Some(registered) = registered.take() {
                    let _ = registered.send(());
                }
            }
            Err(error) => {
                // Until registered, this writer journals nothing: say so, with why.
                warn!(message = "cannot take the owner lock; trying again", owner = %me, error = %format!("{error:#}"))
            }
        }
        if backoff.wait(&stop).await.is_err() {
            return;
        }
    }
}

/// Opens a session, takes the owner lock on it, and registers with the server's start time.
async fn take(
    options: &PgConnectOptions,
    me: Uuid,
    instance: &str,
) -> anyhow::Result<Option<PgConnection>> {
    let mut session = PgConnection::connect_with(options)
        .await
        .context("cannot reach postgresql")?;
    let key = lock_key(me);
    if !AdvisoryLock::Owner(key)
        .try_take(&mut session, true)
        .await?
    {
        let _ = session.close().await;
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO job_owners (owner, instance, lock_key, server_started_at) \
         VALUES ($1, $2, $3, pg_postmaster_start_time()) \
         ON CONFLICT (owner) DO UPDATE SET server_started_at = EXCLUDED.server_started_at, \
           registered_at = now()",
    )
    .bind(me)
    .bind(instance)
    .bind(key)
    .execute(&mut session)
    .await
    .context("cannot register the owner")?;
    Ok(Some(session))
}

/// Marks `abandoned` every run still `running` whose owner (other than `me`) is provably gone, and forgets
/// those owners. Runs of live owners, and runs written before owners were recorded, are left as they are.
/// Returns how many runs were marked.
pub async fn mark_abandoned(pool: &PgPool, me: Uuid) -> anyhow::Result<u64> {
    let owners: Vec<(Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT owner, lock_key, server_started_at FROM job_owners WHERE owner <> $1",
    )
    .bind(me)
    .fetch_all(pool)
    .await
    .context("cannot read the job owners")?;
    if owners.is_empty() {
        return Ok(0);
    }
    let (server_started, now): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT pg_postmaster_start_time(), now()")
            .fetch_one(pool)
            .await
            .context("cannot read the server's start time")?;
    // Each lock is tested by taking it on a session of this function's own, and letting go at once: a lock
    // taken can never stay behind in the pool.
    let mut session = PgConnection::connect_with(&pool.connect_options())
        .await
        .context("cannot reach postgresql to test the owner locks")?;
    let mut marked = 0;
    for (gone, key, registered_with) in owners {
        let lock = AdvisoryLock::Owner(key);
        let free = lock.try_take(&mut session, true).await?;
        if free {
            lock.release(&mut session, true).await?;
        }
        if verdict(!free, registered_with, server_started, now) != Verdict::Gone {
            continue;
        }
        let mut tx = pool.begin().await.context("cannot mark abandoned runs")?;
        let runs: Vec<(Uuid, i32, String)> = sqlx::query_as(
            "UPDATE job_runs SET status = 'abandoned', finished_at = now(), \
               duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint, \
               reason = 'the process running it stopped before it finished' \
             WHERE owner = $1 AND status = 'running' RETURNING run_id, attempt, schedule",
        )
        .bind(gone)
        .fetch_all(&mut *tx)
        .await
        .context("cannot mark a run abandoned")?;
        sqlx::query("DELETE FROM job_owners WHERE owner = $1")
            .bind(gone)
            .execute(&mut *tx)
            .await
            .context("cannot forget a gone owner")?;
        tx.commit().await.context("cannot mark abandoned runs")?;
        for (run_id, attempt, schedule) in &runs {
            info!(message = "job run marked abandoned", %run_id, attempt, schedule, owner = %gone);
        }
        marked += runs.len() as u64;
    }
    let _ = session.close().await;
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_gone_only_when_its_lock_is_free_and_it_cannot_be_on_its_way_back() {
        let started: DateTime<Utc> = "2026-05-01T12:00:00Z".parse().unwrap();
        let before = started - chrono::TimeDelta::hours(1);
        let soon = started + chrono::TimeDelta::seconds(10);
        let later = started + REREGISTER_WITHIN;
        // A held lock: alive, whatever else.
        assert_eq!(verdict(true, started, started, soon), Verdict::Alive);
        assert_eq!(verdict(true, before, started, later), Verdict::Alive);
        // Free, taken in this run of the server: its session ended while the server ran.
        assert_eq!(verdict(false, started, started, soon), Verdict::Gone);
        // Free, taken before the server restarted: not yet known, until a live owner would be back.
        assert_eq!(verdict(false, before, started, soon), Verdict::NotYet);
        assert_eq!(verdict(false, before, started, later), Verdict::Gone);
    }

    #[test]
    fn the_lock_key_comes_from_the_owner_id() {
        let id: Uuid = "7570696e-0000-4000-8000-000000000000".parse().unwrap();
        assert_eq!(lock_key(id), 0x7570_696e);
        assert_ne!(new_owner(), new_owner(), "one owner per journal writer");
    }
}
