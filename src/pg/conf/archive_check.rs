//! The archive check (`pgconf check --archive`, as `pgbackrest check` does): force a WAL switch, then wait
//! (bounded) until the segment switched away from is in the archive as userpipe sees it
//! (`backup.wal_archive`). It names why when it is not: archiving is off, the archive command fails (with
//! its last error when the server's log can be read), the server archives somewhere else, or the
//! segment does not come in time. A base backup waits the same way for its last segment. The judgement
//! of each look at the archiver is pure.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::PgConnection;

use super::archiver::{ArchiverStats, archiver};

/// Failed attempts after which the archive command counts as failing (PostgreSQL's archiver tries a
/// segment three times in a row before it pauses).
const FAILED_ATTEMPTS: i64 = 3;
/// Bytes from the end of the server's log searched for the archive command's error.
const LOG_TAIL_BYTES: i64 = 256 * 1024;

/// What the archive check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchiveCheck {
    /// The segment waited for.
    pub segment: Option<String>,
    /// It reached the archive.
    pub arrived: bool,
    pub waited_ms: u64,
    /// Why the check failed; `None` when the segment arrived.
    pub problem: Option<String>,
}

impl ArchiveCheck {
    fn failed(segment: Option<String>, waited: Duration, problem: String) -> Self {
        Self {
            segment,
            arrived: false,
            waited_ms: waited.as_millis() as u64,
            problem: Some(problem),
        }
    }
}

/// Forces a WAL switch on the server of `conn` and waits up to `wait` until the segment switched away
/// from is in `archive`. Needs a superuser, or EXECUTE on `pg_create_restore_point` and `pg_switch_wal`.
pub async fn check_archive(
    conn: &mut PgConnection,
    archive: &Path,
    wait: Duration,
) -> anyhow::Result<ArchiveCheck> {
    let (mode, command, library, in_recovery): (String, String, String, bool) = sqlx::query_as(
        "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
                coalesce(current_setting('archive_library', true), ''), pg_is_in_recovery()",
    )
    .fetch_one(&mut *conn)
    .await
    .context("cannot read the archiving settings")?;
    let refuse = |problem: String| Ok(ArchiveCheck::failed(None, Duration::ZERO, problem));
    if mode == "off" {
        return refuse("archiving is off (archive_mode = off)".into());
    }
    if in_recovery {
        return refuse(
            "the server is a standby in recovery, where WAL cannot be switched: check its primary"
                .into(),
        );
    }
    if command.trim().is_empty() && library.trim().is_empty() {
        return refuse(
            "archive_command is empty: the server keeps every finished segment, waiting to archive it".into(),
        );
    }
    if !archive.is_dir() {
        return refuse(format!(
            "the WAL archive {} (backup.wal_archive) is not a folder userpipe can see",
            archive.display()
        ));
    }
    // A record to switch away from, so the switch always finishes a segment.
    sqlx::query("SELECT pg_create_restore_point('userpipe archive check')")
        .execute(&mut *conn)
        .await
        .context("cannot write a restore point (pg_create_restore_point needs a superuser or EXECUTE on it)")?;
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(&mut *conn)
        .await
        .context("cannot switch WAL (pg_switch_wal needs a superuser or EXECUTE on it)")?;
    await_archived(conn, archive, &segment, wait).await
}

/// Waits up to `wait` until `segment` is in `archive`, reading the archiver of `conn` meanwhile to fail
/// early when the archive command keeps failing or the server archives somewhere else.
pub async fn await_archived(
    conn: &mut PgConnection,
    archive: &Path,
    segment: &str,
    wait: Duration,
) -> anyhow::Result<ArchiveCheck> {
    let clock = Instant::now();
    let before = archiver(conn).await?;
    let target = archive.join(segment);
    loop {
        let in_archive = target.exists();
        let now = if in_archive {
            None
        } else {
            Some(archiver(conn).await?)
        };
        match judge(segment, archive, in_archive, &before, now.as_ref()) {
            Look::Arrived => {
                return Ok(ArchiveCheck {
                    segment: Some(segment.to_owned()),
                    arrived: true,
                    waited_ms: clock.elapsed().as_millis() as u64,
                    problem: None,
                });
            }
            Look::Failing(mut problem) => {
                if let Some(error) = archive_error_from_log(conn).await {
                    problem.push_str(&format!("; the server's log says: {error}"));
                } else {
                    problem.push_str("; the server's log has the command's error");
                }
                return Ok(ArchiveCheck::failed(
                    Some(segment.into()),
                    clock.elapsed(),
                    problem,
                ));
            }
            Look::Elsewhere(problem) => {
                return Ok(ArchiveCheck::failed(
                    Some(segment.into()),
                    clock.elapsed(),
                    problem,
                ));
            }
            Look::Waiting => {}
        }
        if clock.elapsed() >= wait {
            let now = archiver(conn).await?;
            let problem = not_in_time(segment, archive, wait, &now);
            return Ok(ArchiveCheck::failed(
                Some(segment.into()),
                clock.elapsed(),
                problem,
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one look at the archive and the archiver means.
#[derive(Debug, PartialEq)]
enum Look {
    Arrived,
    Waiting,
    /// The archive command fails again and again.
    Failing(String),
    /// The server archived the segment, but not into the folder userpipe reads.
    Elsewhere(String),
}

fn judge(
    segment: &str,
    archive: &Path,
    in_archive: bool,
    before: &ArchiverStats,
    now: Option<&ArchiverStats>,
) -> Look {
    if in_archive {
        return Look::Arrived;
    }
    let Some(now) = now else {
        return Look::Waiting;
    };
    let failures = now.failed_count - before.failed_count;
    let latest_failed = now
        .last_failed_time
        .is_some_and(|failed| now.last_archived_time.is_none_or(|ok| failed >= ok));
    if failures >= FAILED_ATTEMPTS && latest_failed {
        let error = now
            .last_failure
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Look::Failing(format!(
            "the archive command fails: its last attempt, for {}, failed ({failures} failed attempts since the check began){error}",
            now.last_failed_wal.as_deref().unwrap_or("?")
        ));
    }
    let archived_it = now
        .last_archived_wal
        .as_deref()
        .filter(|last| last.len() == 24 && segment.len() == 24 && last[..8] == segment[..8])
        .is_some_and(|last| last[8..] >= segment[8..]);
    if archived_it {
        return Look::Elsewhere(format!(
            "PostgreSQL archived {} (pg_stat_archiver), but {segment} is not in {}: archive_command writes \
             somewhere else than backup.wal_archive",
            now.last_archived_wal.as_deref().unwrap_or_default(),
            archive.display()
        ));
    }
    Look::Waiting
}

fn not_in_time(segment: &str, archive: &Path, wait: Duration, now: &ArchiverStats) -> String {
    let last = match (&now.last_archived_wal, now.last_archived_age_seconds) {
        (Some(wal), Some(age)) => format!("the last one archived is {wal}, {age:.0}s ago"),
        _ => "no segment was ever archived".into(),
    };
    format!(
        "{segment} did not reach the archive {} within {} (backup.archive_wait): {} segment(s) wait for the \
         archiver, and {last}",
        archive.display(),
        humantime::format_duration(wait),
        now.waiting_segments
    )
}

/// The archive command's last error, from the end of the server's log, when the server writes its log
/// with the logging collector and this session may read it (a superuser, or `pg_read_server_files`).
async fn archive_error_from_log(conn: &mut PgConnection) -> Option<String> {
    let file: Option<String> = sqlx::query_scalar("SELECT pg_current_logfile()")
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    let text: String = sqlx::query_scalar(
        "SELECT pg_read_file($1, greatest(0, (pg_stat_file($1)).size - $2), $2)",
    )
    .bind(file?)
    .bind(LOG_TAIL_BYTES)
    .fetch_one(&mut *conn)
    .await
    .ok()?;
    archive_error_lines(&text)
}

/// In a server log: the last `archive command failed` line, after the line the command itself printed
/// just before it (when it printed one).
pub fn archive_error_lines(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains("archive command failed"))?;
    let failed = lines[at].trim();
    let failed = failed
        .find("archive command failed")
        .map_or(failed, |i| &failed[i..]);
    let before = at
        .checked_sub(1)
        .map(|i| lines[i].trim())
        .filter(|l| !l.is_empty() && !l.contains("archive command") && !l.contains("DETAIL:"));
    Some(match before {
        Some(own) => format!("{own} ({failed})"),
        None => failed.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::conf::archiver::keeping_up;

    /// Two failures long ago, and one segment waiting.
    fn stats() -> ArchiverStats {
        let now = keeping_up().checked_at;
        ArchiverStats {
            failed_count: 2,
            last_failed_time: Some(now - chrono::Duration::seconds(300)),
            waiting_segments: 1,
            oldest_waiting_age_seconds: Some(0.5),
            ..keeping_up()
        }
    }

    const SEGMENT: &str = "00000001000000000000000A";

    #[test]
    fn each_look_is_judged() {
        let archive = Path::new("/archive");
        let before = stats();
        assert_eq!(judge(SEGMENT, archive, true, &before, None), Look::Arrived);
        assert_eq!(
            judge(SEGMENT, archive, false, &before, Some(&before)),
            Look::Waiting
        );
        // Two failures so far: PostgreSQL may still succeed on its next try.
        let failing = ArchiverStats {
            failed_count: 4,
            last_failed_wal: Some(SEGMENT.into()),
            last_failed_time: Some(before.checked_at),
            ..before.clone()
        };
        assert_eq!(
            judge(SEGMENT, archive, false, &before, Some(&failing)),
            Look::Waiting
        );
        let failing = ArchiverStats {
            failed_count: 5,
            ..failing
        };
        assert_eq!(
            judge(SEGMENT, archive, false, &before, Some(&failing)),
            Look::Failing(format!(
                "the archive command fails: its last attempt, for {SEGMENT}, failed (3 failed attempts since the check began)"
            ))
        );
        // Failures that a success followed: not failing.
        let recovered = ArchiverStats {
            last_archived_time: Some(before.checked_at + chrono::Duration::seconds(1)),
            ..failing
        };
        assert_eq!(
            judge(SEGMENT, archive, false, &before, Some(&recovered)),
            Look::Waiting
        );
        // The server archived it (or later), yet it is not in the folder.
        let elsewhere = ArchiverStats {
            last_archived_wal: Some(SEGMENT.into()),
            ..before.clone()
        };
        let Look::Elsewhere(problem) = judge(SEGMENT, archive, false, &before, Some(&elsewhere))
        else {
            panic!("not judged elsewhere");
        };
        assert!(
            problem.starts_with(&format!(
                "PostgreSQL archived {SEGMENT} (pg_stat_archiver), but {SEGMENT} is not in /archive"
            )),
            "{problem}"
        );
        // Another timeline's segment says nothing about this one.
        let other_timeline = ArchiverStats {
            last_archived_wal: Some("00000002000000000000000B".into()),
            ..before.clone()
        };
        assert_eq!(
            judge(SEGMENT, archive, false, &before, Some(&other_timeline)),
            Look::Waiting
        );
    }

    #[test]
    fn a_segment_not_in_time_names_the_archiver_state() {
        let text = not_in_time(
            SEGMENT,
            Path::new("/archive"),
            Duration::from_secs(60),
            &stats(),
        );
        assert_eq!(
            text,
            "00000001000000000000000A did not reach the archive /archive within 1m (backup.archive_wait): 1 \
             segment(s) wait for the archiver, and the last one archived is 000000010000000000000009, 30s ago"
        );
    }

    #[test]
    fn the_archive_commands_error_is_read_from_the_log() {
        let log = "2026-01-03 02:00:00.000 UTC [42] LOG:  checkpoint complete\n\
                   archive-wal.sh: target folder /gone does not exist\n\
                   2026-01-03 02:00:01.000 UTC [43] LOG:  archive command failed with exit code 1\n\
                   2026-01-03 02:00:01.000 UTC [43] DETAIL:  The failed archive command was: /x.sh pg_wal/0001 /gone/0001\n";
        assert_eq!(
            archive_error_lines(log).as_deref(),
            Some(
                "archive-wal.sh: target folder /gone does not exist (archive command failed with exit code 1)"
            )
        );
        let silent = "x LOG:  archive command failed with exit code 1\nx DETAIL:  The failed archive command was: false\nx LOG:  archive command failed with exit code 1\n";
        assert_eq!(
            archive_error_lines(silent).as_deref(),
            Some("archive command failed with exit code 1")
        );
        assert_eq!(archive_error_lines("nothing here\n"), None);
    }
}
