//! History retention: the `prune-history` job deletes runs older than `scheduler.history` from
//! `job_runs`, with their log lines and firing claims, but keeps each schedule's newest
//! `scheduler.history_keep` runs whatever their age, and never a run still going. The scheduler runs it
//! daily as a built-in schedule (a file `prune-history.toml` replaces it); being a run, it is journaled
//! like any other.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tracing::info;

/// The built-in schedule's name, and its job's kind.
pub const SCHEDULE: &str = "prune-history";

/// The built-in schedule: daily at 03:17 UTC, when little else runs.
pub const BUILTIN: &str = "# built in: prune the run history daily (a file prune-history.toml replaces it)\n\
    job = \"prune-history\"\ncron = \"17 3 * * *\"\ntimeout = \"30m\"\n";

/// What a pruning deleted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneReport {
    /// Runs older than this were deleted, each schedule's newest `keep` aside.
    pub cutoff: DateTime<Utc>,
    pub keep: usize,
    pub runs: i64,
    pub attempts: i64,
    pub log_lines: i64,
    pub firings: i64,
}

/// Deletes the history older than `max_age` (each schedule keeping its newest `keep` runs), in one
/// transaction.
pub async fn prune(pool: &PgPool, max_age: Duration, keep: usize) -> anyhow::Result<PruneReport> {
    let cutoff = Utc::now() - chrono::Duration::from_std(max_age).context("history too long")?;
    let mut tx = pool.begin().await.context("cannot reach postgresql")?;
    // A run is as old as its newest attempt; a run with an attempt still going is never deleted.
    let (runs, attempts, log_lines): (i64, i64, i64) = sqlx::query_as(
        "WITH ranked AS ( \
             SELECT run_id, max(started_at) AS started, bool_or(status = 'running') AS going, \
                    row_number() OVER (PARTITION BY schedule ORDER BY max(started_at) DESC) AS newest \
             FROM job_runs GROUP BY schedule, run_id), \
         old AS (SELECT run_id FROM ranked WHERE newest > $2 AND started < $1 AND NOT going), \
         attempts AS (DELETE FROM job_runs WHERE run_id IN (SELECT run_id FROM old) RETURNING run_id), \
         lines AS (DELETE FROM job_run_logs WHERE run_id IN (SELECT run_id FROM old) RETURNING 1) \
         SELECT (SELECT count(DISTINCT run_id) FROM attempts), (SELECT count(*) FROM attempts), \
                (SELECT count(*) FROM lines)",
    )
    .bind(cutoff)
    .bind(keep as i64)
    .fetch_one(&mut *tx)
    .await
    .context("cannot delete old job runs")?;
    // Log lines of runs whose record never reached the table; firing claims of runs no longer kept.
    let orphans = sqlx::query(
        "DELETE FROM job_run_logs l WHERE l.at < $1 \
           AND NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.run_id = l.run_id)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await
    .context("cannot delete old run logs")?
    .rows_affected();
    let firings = sqlx::query(
        "DELETE FROM job_firings f WHERE f.scheduled_for < $1 \
           AND NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.run_id = f.run_id)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await
    .context("cannot delete old firing claims")?
    .rows_affected();
    tx.commit().await.context("cannot commit the pruning")?;
    let report = PruneReport {
        cutoff,
        keep,
        runs,
        attempts,
        log_lines: log_lines + orphans as i64,
        firings: firings as i64,
    };
    info!(message = "run history pruned", cutoff = %cutoff, keep, runs, attempts, log_lines = report.log_lines, firings = report.firings);
    Ok(report)
}
