//! What the commands print: tables of job runs and backups, one run in detail, the schedules check, and
//! the one-line accounts of a fetch, a backup and a drill. Pure: each function returns the text.

use std::time::Duration;

use bytesize::ByteSize;
use comfy_table::Table;
use comfy_table::presets::NOTHING;

use crate::config::{Config, Origins};
use crate::pg::archive::Coverage;
use crate::pg::backup::{BackupReport, Listed, Pruned};
use crate::pg::conf::ArchiveCheck;
use crate::pg::drill::DrillReport;
use crate::pg::restore::RestoreReport;
use crate::pipeline::fetch::FetchReport;
use crate::scheduler::journal::RunRecord;
use crate::scheduler::runlog::{KEPT_PER_RUN, LogEntry};
use crate::scheduler::{Loaded, Schedule, files};

/// `header` and `rows` as aligned columns, two spaces apart, no borders.
pub(super) fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for row in rows {
        table.add_row(row);
    }
    let mut text: String = table
        .lines()
        .map(|line| line.trim_end().to_owned() + "\n")
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    text
}

/// A duration in the units a person reads: `350ms`, `1m 5s`, `2h 3m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    // Down to the second past a minute, to the millisecond below it.
    let shown = if ms >= 60_000 {
        Duration::from_secs(ms / 1000)
    } else {
        Duration::from_millis(ms)
    };
    humantime::format_duration(shown).to_string()
}

/// `jobs`: run attempts, one line each, newest first.
pub fn runs_table(records: &[RunRecord]) -> String {
    let header = [
        "STARTED", "SCHEDULE", "JOB", "TRIGGER", "TRY", "STATUS", "DURATION", "RUN ID", "NOTE",
    ];
    let rows = records.iter().map(|r| {
        let note = r
            .error
            .as_deref()
            .or(r.reason.as_deref())
            .map(str::to_owned)
            .unwrap_or_else(|| r.detail.as_ref().map(|d| d.to_string()).unwrap_or_default());
        [
            r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.schedule.clone(),
            r.job.clone(),
            r.trigger.to_string(),
            r.attempt.to_string(),
            r.status.to_string(),
            r.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
            r.run_id.to_string(),
            note.chars().take(80).collect(),
        ]
    });
    table(header, rows)
}

/// `jobs show`: one attempt, a field a line.
pub fn describe_run(r: &RunRecord) -> String {
    let mut text = format!(
        "run {} attempt {}\n  schedule  {}\n  job       {}\n  trigger   {}\n  status    {}\n  started   {}\n",
        r.run_id,
        r.attempt,
        r.schedule,
        r.job,
        r.trigger,
        r.status,
        r.started_at.to_rfc3339()
    );
    let optional = [
        ("scheduled", r.scheduled_for.map(|t| t.to_rfc3339())),
        ("finished", r.finished_at.map(|t| t.to_rfc3339())),
        ("duration", r.duration_ms.map(duration)),
        ("reason", r.reason.clone()),
        ("error", r.error.clone()),
        ("detail", r.detail.as_ref().map(|d| d.to_string())),
        ("instance", Some(r.instance.clone())),
    ];
    for (label, value) in optional {
        if let Some(value) = value {
            text.push_str(&format!("  {label:<9} {value}\n"));
        }
    }
    text
}

/// `jobs logs`: one line of a run's log (`time level attempt message fields`), after a marker when lines
/// were dropped before it.
pub fn log_entry(entry: &LogEntry) -> String {
    let line = &entry.line;
    let mut text = String::new();
    if entry.dropped_before > 0 {
        let why = if line.seq - entry.dropped_before == 1 {
            format!("a run keeps its last {KEPT_PER_RUN}")
        } else {
            "the log writer's queue was full".to_owned()
        };
        text.push_str(&format!(
            "... {} line(s) dropped: {why} ...\n",
            entry.dropped_before
        ));
    }
    text.push_str(&format!(
        "{} {:>5} #{} {}",
        line.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        line.level,
        line.attempt,
        line.message
    ));
    if let Some(fields) = line.fields.as_object() {
        for (key, value) in fields {
            match value {
                serde_json::Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => {
                    text.push_str(&format!(" {key}={s}"))
                }
                other => text.push_str(&format!(" {key}={other}")),
            }
        }
    }
    text.push('\n');
    text
}

/// `schedules check`: each valid schedule with its next three fire times after `now`, then the count.
/// The errors are printed apart, on stderr.
pub fn schedules_check(
    loaded: &Loaded,
    dir: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut text = String::new();
    for (schedule, file) in &loaded.schedules {
        text.push_str(&schedule_line(schedule, files::is_builtin(file)));
        for fire in schedule.next_fires(now, 3) {
            text.push_str(&format!("    {}\n", fire.format("%a %Y-%m-%d %H:%M:%S %Z")));
        }
    }
    text.push_str(&format!(
        "{} valid, {} invalid schedule file(s) in {}\n",
        loaded.schedules.len(),
        loaded.errors.len(),
        dir.display()
    ));
    text
}

fn schedule_line(schedule: &Schedule, builtin: bool) -> String {
    let state = match (schedule.enabled, builtin) {
        (false, _) => " (disabled)",
        (true, true) => " (built in; a file of that name replaces it)",
        (true, false) => "",
    };
    format!(
        "{}: {} at `{}` in {}{state}\n",
        schedule.name,
        schedule.job.kind(),
        schedule.cron_text,
        schedule.timezone
    )
}

/// `fetch`: what one fetch run did.
pub fn fetch_report(report: &FetchReport, topic: &str) -> String {
    format!(
        "published {} of {} users to {topic} (skipped {}, run {})\n",
        report.published, report.received, report.skipped, report.run_id
    )
}

/// `backup run`: the backup kept, and what retention deleted.
pub fn backup_report(report: &BackupReport) -> String {
    let mut text = format!(
        "backup {} verified: {} at {} (WAL {} to {}), took {}\n",
        report.id,
        ByteSize(report.bytes).display().iec(),
        report.path.display(),
        report.start_lsn,
        report.end_lsn,
        duration(report.duration_ms as i64)
    );
    if let Some(compressed) = &report.compressed {
        text.push_str(&format!(
            "stored as {}: {} ({:.0}% of {}), compressing took {}\n",
            crate::pg::backup::ARCHIVE_FILE,
            ByteSize(compressed.bytes).display().iec(),
            percent(compressed.bytes, report.bytes),
            ByteSize(report.bytes).display().iec(),
            duration(compressed.duration_ms as i64)
        ));
    }
    if !report.pruned.is_empty() {
        text.push_str(&format!("retention deleted {}\n", report.pruned.join(", ")));
    }
    if report.wal_removed > 0 {
        text.push_str(&format!(
            "expired {} archived WAL file(s), {}\n",
            report.wal_removed,
            ByteSize(report.wal_bytes_freed).display().iec()
        ));
    }
    if let Some(problem) = &report.archive_problem {
        text.push_str(&format!("WAL ARCHIVE: {problem}\n"));
    }
    text
}

/// `part` as a percentage of `whole`.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 100.0;
    }
    part as f64 * 100.0 / whole as f64
}

/// `backup prune [--dry-run]`: the backups and archived WAL deleted, or that would be.
pub fn prune_report(pruned: &Pruned, keep: usize) -> String {
    let (deleted, expired) = if pruned.wal.dry_run {
        ("would delete", "would expire")
    } else {
        ("deleted", "expired")
    };
    let mut text = if pruned.deleted.is_empty() {
        format!("no backup to delete (keep {keep})\n")
    } else {
        format!(
            "{deleted} backup(s) {} (keep {keep})\n",
            pruned.deleted.join(", ")
        )
    };
    let wal = &pruned.wal;
    match (&wal.skipped, &wal.kept_from) {
        (Some(why), _) => text.push_str(&format!("no archived WAL expired: {why}\n")),
        (None, Some(from)) if wal.removed.is_empty() => {
            text.push_str(&format!("no archived WAL before {from} to expire\n"))
        }
        (None, from) => {
            text.push_str(&format!(
                "{expired} {} archived WAL file(s) before {}, {}{}\n",
                wal.removed.len(),
                from.as_deref().unwrap_or("?"),
                ByteSize(wal.bytes_freed).display().iec(),
                if wal.dry_run { ":" } else { "" }
            ));
            if wal.dry_run {
                for name in &wal.removed {
                    text.push_str(&format!("  {name}\n"));
                }
            }
        }
    }
    text
}

/// `backup check`: whether the archive is complete from the oldest backup's start.
pub fn archive_coverage(coverage: Option<&Coverage>, archive: &std::path::Path) -> String {
    match coverage {
        None => "no backup: nothing to check the archive against\n".into(),
        Some(Coverage::Complete { from, to, segments }) => format!(
            "the archive {} holds every segment from {from} to {to} ({segments} segments)\n",
            archive.display()
        ),
        Some(other) => format!(
            "WAL ARCHIVE INCOMPLETE: {}\n",
            other.problem().unwrap_or_default()
        ),
    }
}

/// `pgconf check --archive`: where the forced segment went.
pub fn archive_check(check: &ArchiveCheck, archive: &std::path::Path) -> String {
    match (&check.problem, &check.segment) {
        (None, segment) => format!(
            "archive check: {} reached {} in {}\n",
            segment.as_deref().unwrap_or("the segment"),
            archive.display(),
            duration(check.waited_ms as i64)
        ),
        (Some(problem), _) => format!("archive check FAILED: {problem}\n"),
    }
}

/// `backup restore-test`: what the drill found.
pub fn drill_report(report: &DrillReport) -> String {
    let newest = report
        .recovered
        .newest_commit_time
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "none replayed".into());
    format!(
        "backup {} restores: {} rows in random_users, recovery took {:.1} s ({} WAL segments from the archive), newest commit {newest}\n",
        report.backup_id,
        report.recovered.rows,
        report.recovered.recovery_seconds,
        report.recovered.wal_segments_restored
    )
}

/// `backup restore`: what was written, what the throwaway copy recovered, and the command that finishes.
pub fn restore_report(report: &RestoreReport) -> String {
    let mut text = format!(
        "restored backup {} into {}: on start it recovers from the WAL archive to {}, then promotes\n",
        report.backup_id,
        report.to.display(),
        report.target
    );
    text.push_str("recovery settings appended to postgresql.auto.conf (ALTER SYSTEM RESET them once it runs):\n");
    for setting in &report.settings {
        text.push_str(&format!("  {setting}\n"));
    }
    if let Some(verified) = &report.verified {
        let newest = verified
            .newest_commit_time
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "none replayed".into());
        text.push_str(&format!(
            "verified: a throwaway copy recovered {} rows in random_users, newest commit {newest}, in {:.1} s\n",
            verified.rows, verified.recovery_seconds
        ));
    }
    text.push_str(&format!(
        "to finish, start it (it uses the backed-up server's settings, its port too):\n  {}\n",
        report.start_command.join(" ")
    ));
    text
}

/// `backup list`: one line per backup, oldest first.
pub fn backups_table(listed: &[Listed]) -> String {
    let header = [
        "ID",
        "STARTED (UTC)",
        "TOOK",
        "SIZE",
        "STORED",
        "WAL (TIMELINE START END)",
        "SERVER",
        "VERIFIED",
    ];
    let rows = listed.iter().map(|l| match &l.metadata {
        Some(m) => [
            l.id.clone(),
            m.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            duration((m.finished_at - m.started_at).num_milliseconds()),
            ByteSize(m.bytes).display().iec().to_string(),
            match &m.compressed {
                Some(c) => format!(
                    "{} zstd ({:.0}%)",
                    ByteSize(c.bytes).display().iec(),
                    percent(c.bytes, m.bytes)
                ),
                None => "plain".into(),
            },
            format!("{} {} {}", m.timeline, m.start_lsn, m.end_lsn),
            m.server_version
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
            if m.verification.ok {
                format!("yes {}", m.verification.at.format("%Y-%m-%d %H:%M"))
            } else {
                format!("FAILED: {}", m.verification.problems.join("; "))
            },
        ],
        None => [
            l.id.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            l.problem.clone().unwrap_or_default(),
        ],
    });
    table(header, rows)
}

/// `config show`: the configuration in effect as TOML, secrets redacted, each value followed by a
/// comment saying where it came from (default, file and line, environment variable).
pub fn config_show(config: &Config, origins: &Origins) -> String {
    let rendered = config.to_redacted_toml();
    let mut text = String::from(
        "# the configuration in effect, secrets redacted; after each value, where it came from\n",
    );
    let mut section = String::new();
    let lines: Vec<&str> = rendered.lines().collect();
    let width = lines
        .iter()
        .map(|l| l.len())
        .filter(|&n| n <= 48)
        .max()
        .unwrap_or(0);
    for line in lines {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        }
        let key = line.split_once(" = ").map(|(key, _)| key).filter(|key| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        match key {
            Some(key) => {
                let origin = origins.of(&format!("{section}{key}"));
                text.push_str(&format!("{line:<width$}  # {origin}\n"));
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_trailing_blanks() {
        let text = table(
            ["ID", "STATUS"],
            [
                ["a-long-id".to_owned(), "ok".to_owned()],
                ["b".to_owned(), String::new()],
            ],
        );
        assert_eq!(text, "ID         STATUS\na-long-id  ok\nb\n");
    }

    #[test]
    fn durations_read_easily() {
        assert_eq!(duration(350), "350ms");
        assert_eq!(duration(1_500), "1s 500ms");
        assert_eq!(duration(65_432), "1m 5s");
        assert_eq!(duration(7_384_000), "2h 3m 4s");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn a_log_line_reads_on_one_line_with_a_marker_for_dropped_lines() {
        use crate::scheduler::runlog::{LogLine, entries};
        let line = |seq: i64, message: &str, fields: serde_json::Value| LogLine {
            run_id: uuid::Uuid::nil(),
            seq,
            attempt: 2,
            at: "2026-01-03T02:00:01.5Z".parse().unwrap(),
            level: "WARN".into(),
            target: "userpipe::pg::program".into(),
            message: message.into(),
            fields,
        };
        let lines = vec![
            line(
                235,
                "pg_basebackup: error: could not connect",
                serde_json::json!({"program": "pg_basebackup", "code": 2, "error": "no route"}),
            ),
            line(236, "next", serde_json::json!({})),
            line(240, "later", serde_json::json!({})),
        ];
        let text: String = entries(0, lines).iter().map(log_entry).collect();
        assert_eq!(
            text,
            "... 234 line(s) dropped: a run keeps its last 1000 ...\n\
             2026-01-03T02:00:01.500Z  WARN #2 pg_basebackup: error: could not connect program=pg_basebackup code=2 error=\"no route\"\n\
             2026-01-03T02:00:01.500Z  WARN #2 next\n\
             ... 3 line(s) dropped: the log writer's queue was full ...\n\
             2026-01-03T02:00:01.500Z  WARN #2 later\n"
        );
    }

    #[test]
    fn sizes_read_easily() {
        assert_eq!(ByteSize(0).display().iec().to_string(), "0 B");
        assert_eq!(ByteSize(1536).display().iec().to_string(), "1.5 KiB");
        assert_eq!(ByteSize(23_586_816).display().iec().to_string(), "22.5 MiB");
    }
}
