//! The archiver's account (`pg_stat_archiver`, the `.ready` files waiting for it, and the archive script's
//! own word on its last failure) and the judgement of its health: off, failing, or behind. The judgement
//! is pure.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

/// The archiver's account, from `pg_stat_archiver` and `pg_wal/archive_status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArchiverStats {
    pub archive_mode: String,
    /// `archive_timeout` in seconds (0: off).
    pub archive_timeout_seconds: i64,
    pub archived_count: i64,
    pub failed_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    /// Seconds since the last segment was archived, by the server's clock.
    pub last_archived_age_seconds: Option<f64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// Why the archive command last failed, in its own words: `pgconf/archive-wal.sh` keeps its last error
    /// in `archive-wal.failed` in the data folder (read with `pg_read_file`, which needs a superuser or
    /// `pg_read_server_files`); `None` when there is none or it cannot be read.
    pub last_failure: Option<String>,
    /// Finished segments waiting for the archive (`.ready` files).
    pub waiting_segments: i64,
    /// Seconds the oldest of them has waited.
    pub oldest_waiting_age_seconds: Option<f64>,
    /// The server's time of the reading.
    pub checked_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ArchiverRow {
    archived_count: i64,
    failed_count: i64,
    last_archived_wal: Option<String>,
    last_archived_time: Option<DateTime<Utc>>,
    last_failed_wal: Option<String>,
    last_failed_time: Option<DateTime<Utc>>,
    archive_mode: String,
    archive_timeout: i64,
    waiting: i64,
    oldest_waiting: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

/// Reads the archiver's statistics (`pg_ls_archive_statusdir` needs a superuser, `pg_monitor`, or a grant of its own).
pub async fn archiver(conn: &mut PgConnection) -> anyhow::Result<ArchiverStats> {
    let row: ArchiverRow = sqlx::query_as(
        "SELECT a.archived_count, a.failed_count, a.last_archived_wal, a.last_archived_time, \
                a.last_failed_wal, a.last_failed_time, \
                current_setting('archive_mode') AS archive_mode, \
                (SELECT setting::bigint FROM pg_settings WHERE name = 'archive_timeout') AS archive_timeout, \
                r.waiting, r.oldest_waiting, now() AS now \
         FROM pg_stat_archiver a, \
              (SELECT count(*) AS waiting, min(modification) AS oldest_waiting \
               FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') r",
    )
    .fetch_one(&mut *conn)
    .await
    .context("cannot read pg_stat_archiver")?;
    let last_failure = script_failure(conn).await;
    let age = |t: Option<DateTime<Utc>>| {
        t.map(|t| (row.now - t).num_milliseconds().max(0) as f64 / 1000.0)
    };
    Ok(ArchiverStats {
        last_archived_age_seconds: age(row.last_archived_time),
        oldest_waiting_age_seconds: age(row.oldest_waiting),
        archive_mode: row.archive_mode,
        archive_timeout_seconds: row.archive_timeout,
        archived_count: row.archived_count,
        failed_count: row.failed_count,
        last_archived_wal: row.last_archived_wal,
        last_archived_time: row.last_archived_time,
        last_failed_wal: row.last_failed_wal,
        last_failed_time: row.last_failed_time,
        last_failure,
        waiting_segments: row.waiting,
        checked_at: row.now,
    })
}

/// The archive script's last error (`archive-wal.failed` in the data folder), when there is one and this
/// session may read it.
async fn script_failure(conn: &mut PgConnection) -> Option<String> {
    let text: Option<String> =
        sqlx::query_scalar("SELECT pg_read_file('archive-wal.failed', 0, 2000, true)")
            .fetch_one(conn)
            .await
            .ok()?;
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// What is wrong with archiving, if anything: it is off; its latest attempt failed; or segments have
/// waited longer than twice `archive_timeout` while nothing was archived for as long.
pub fn archiving_problem(stats: &ArchiverStats) -> Option<String> {
    if stats.archive_mode == "off" {
        return Some("archiving is off (archive_mode = off)".into());
    }
    if let Some(failed_at) = stats.last_failed_time
        && stats.last_archived_time.is_none_or(|ok| failed_at >= ok)
    {
        let why = match &stats.last_failure {
            Some(reason) => format!(": {reason}"),
            None => "; see the postgresql log".into(),
        };
        return Some(format!(
            "archiving fails: the last attempt, for {} at {}, failed ({} failures counted){why}",
            stats.last_failed_wal.as_deref().unwrap_or("?"),
            failed_at.to_rfc3339(),
            stats.failed_count
        ));
    }
    let limit = 2.0 * stats.archive_timeout_seconds as f64;
    if limit > 0.0
        && let Some(waited) = stats.oldest_waiting_age_seconds
        && waited > limit
        && stats
            .last_archived_age_seconds
            .is_none_or(|age| age > limit)
    {
        let last = match stats.last_archived_age_seconds {
            Some(age) => format!("the last segment was archived {age:.0}s ago"),
            None => "no segment was ever archived".into(),
        };
        return Some(format!(
            "archiving is behind: {} segment(s) wait, the oldest for {waited:.0}s, and {last}, more than twice archive_timeout ({limit:.0}s)",
            stats.waiting_segments
        ));
    }
    None
}

/// An archiver that keeps up, as seen at 2026-01-03T02:00:00Z: what the tests here and in `archive_check`
/// change a field or two of.
#[cfg(test)]
pub(super) fn keeping_up() -> ArchiverStats {
    let now: DateTime<Utc> = "2026-01-03T02:00:00Z".parse().unwrap();
    ArchiverStats {
        archive_mode: "on".into(),
        archive_timeout_seconds: 60,
        archived_count: 10,
        failed_count: 0,
        last_archived_wal: Some("000000010000000000000009".into()),
        last_archived_time: Some(now - chrono::Duration::seconds(30)),
        last_archived_age_seconds: Some(30.0),
        last_failed_wal: None,
        last_failed_time: None,
        last_failure: None,
        waiting_segments: 0,
        oldest_waiting_age_seconds: None,
        checked_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archiving_health() {
        assert_eq!(archiving_problem(&keeping_up()), None);
        let off = ArchiverStats {
            archive_mode: "off".into(),
            ..keeping_up()
        };
        assert!(
            archiving_problem(&off)
                .unwrap()
                .starts_with("archiving is off")
        );
        // The last attempt failed: failing.
        let s = keeping_up();
        let failing = ArchiverStats {
            failed_count: 3,
            last_failed_wal: Some("00000001000000000000000A".into()),
            last_failed_time: Some(s.checked_at - chrono::Duration::seconds(5)),
            ..s.clone()
        };
        let problem = archiving_problem(&failing).unwrap();
        assert!(
            problem.starts_with("archiving fails: the last attempt, for 00000001000000000000000A"),
            "{problem}"
        );
        assert!(
            problem.ends_with("(3 failures counted); see the postgresql log"),
            "{problem}"
        );
        // The archive script said why: its words take the place of the pointer to the log.
        let said = ArchiverStats {
            last_failure: Some("cannot copy a to b: No space left on device".into()),
            ..failing.clone()
        };
        let problem = archiving_problem(&said).unwrap();
        assert!(
            problem.ends_with("(3 failures counted): cannot copy a to b: No space left on device"),
            "{problem}"
        );
        // A failure that a success followed: healthy.
        let recovered = ArchiverStats {
            last_failed_time: Some(s.checked_at - chrono::Duration::seconds(50)),
            ..failing
        };
        assert_eq!(archiving_problem(&recovered), None);
        // Idle for an hour, nothing waiting: healthy.
        let idle = ArchiverStats {
            last_archived_age_seconds: Some(3600.0),
            ..s.clone()
        };
        assert_eq!(archiving_problem(&idle), None);
        // Idle for an hour, a segment finished a moment ago: not yet behind.
        let fresh = ArchiverStats {
            waiting_segments: 1,
            oldest_waiting_age_seconds: Some(2.0),
            ..idle.clone()
        };
        assert_eq!(archiving_problem(&fresh), None);
        // A segment has waited more than twice archive_timeout and nothing was archived since: behind.
        let stuck = ArchiverStats {
            waiting_segments: 2,
            oldest_waiting_age_seconds: Some(120.4),
            last_archived_age_seconds: Some(500.0),
            ..s.clone()
        };
        let problem = archiving_problem(&stuck).unwrap();
        assert!(problem.starts_with("archiving is behind: 2 segment(s) wait, the oldest for 120s, and the last segment was archived 500s ago"), "{problem}");
        // Exactly twice archive_timeout is not yet behind.
        let edge = ArchiverStats {
            oldest_waiting_age_seconds: Some(120.0),
            ..stuck.clone()
        };
        assert_eq!(archiving_problem(&edge), None);
        let never = ArchiverStats {
            last_archived_age_seconds: None,
            last_archived_time: None,
            ..stuck
        };
        assert!(
            archiving_problem(&never)
                .unwrap()
                .contains("no segment was ever archived")
        );
    }
}
