//! The command line's arguments (clap): every command, its flags and their help.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::app::Role;
use crate::scheduler::journal::Status;

/// The most users a benchmark publishes, or per second.
const MAX_COUNT: u64 = 100_000_000;
/// The most entries a listing shows.
const MAX_LIST: u64 = 100_000;
/// How far back `--since` may reach: 100 years.
const MAX_SINCE: Duration = Duration::from_secs(100 * 36_525 * 864);

/// `--since`: how far back from now, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(DateTime<Utc>),
}

impl Since {
    /// The time it names, seen at `now`; `None` when it is before the earliest time there is.
    pub fn at(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Since::At(time) => Some(time),
            Since::Ago(ago) => now.checked_sub_signed(chrono::Duration::from_std(ago).ok()?),
        }
    }
}

/// Reads `--since`: a duration of at most 100 years, or an RFC 3339 time.
fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        if ago > MAX_SINCE {
            return Err("a duration back from now can reach at most 100 years (36525d)".into());
        }
        return Ok(Since::Ago(ago));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Since::At(t.with_timezone(&Utc)))
        .map_err(|_| "neither a duration (2h, 3d) nor an RFC 3339 time".into())
}

/// userpipe: the user-data pipeline on Kafka and PostgreSQL, and its operations.
#[derive(Debug, Parser)]
#[command(name = "userpipe", version)]
pub struct Cli {
    /// Configuration file [default: $USERPIPE_CONFIG, else ./userpipe.toml when it exists]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format: `text` for people, `json` for machines
    #[arg(
        long,
        global = true,
        value_enum,
        env = "USERPIPE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline roles until SIGTERM or SIGINT
    Run {
        /// Roles to run, comma separated: timestamp, tags, sink [default: all]
        #[arg(long, value_delimiter = ',')]
        roles: Vec<Role>,
    },
    /// Fetch users once and publish them to the users topic
    Fetch {
        /// How many users (1 to 5000)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5000))]
        count: u64,
        /// A randomuser.me-compatible URL, or `generator` [default: fetch.source]
        #[arg(long)]
        source: Option<String>,
        /// Seed of the generator, for repeatable runs
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The database schema
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Measure the pipeline end to end against the running stack
    Bench {
        /// Users to push through
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
        users: u64,
        /// Publish at this steady rate (users per second) instead of as fast as possible
        #[arg(long, conflicts_with = "preload", value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
        rate: Option<u64>,
        /// Publish every user first, then time only the pipeline draining them (its capacity)
        #[arg(long)]
        preload: bool,
        /// Pipeline processes (`userpipe run --roles timestamp,tags,sink`) sharing the consumer groups
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        replicas: u16,
        /// Kill one of the replicas (SIGKILL) once a third of the users have landed
        #[arg(long, requires = "replicas")]
        kill_one: bool,
        /// Rows of the ceiling's COPY, measured in the same run
        #[arg(long, default_value_t = crate::bench::CEILING_ROWS)]
        ceiling_rows: usize,
    },
    /// Exit 0 when the running `userpipe run` on `http.listen` says it is ready (the container's HEALTHCHECK)
    Health,
    /// The configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Schedule files
    Schedules {
        #[command(subcommand)]
        command: SchedulesCommand,
    },
    /// The WAL-archiving settings of pgconf.file against the running PostgreSQL
    Pgconf {
        #[command(subcommand)]
        command: PgconfCommand,
    },
    /// Base backups: take, list, verify, prune, and prove one restores
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Job runs: list the recent ones (default), show one, print its log, or run a schedule now
    #[command(args_conflicts_with_subcommands = true)]
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
        #[command(flatten)]
        list: JobsList,
    },
    /// Dead letters: what was set aside and why, and sending it back once the cause is fixed
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Print a shell completion script: source it, or install it where the shell looks
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a folder
    Man {
        /// Write userpipe.1, userpipe-run.1, ... into this folder instead
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Each dead-letter topic of the pipeline: its letters by stage and reason, how many were replayed,
    /// the oldest and the newest
    List,
    /// The letters of a dead-letter topic, oldest first: origin, stage, reason, time, a payload excerpt
    Show {
        /// The dead-letter topic, e.g. users_info.dlq
        topic: String,
        /// Only letters whose error (or reason) holds this text, in any case
        #[arg(long)]
        reason: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=MAX_LIST))]
        limit: u64,
        /// JSON lines with the whole payload (an excerpt when stdout is a terminal)
        #[arg(long)]
        json: bool,
    },
    /// Send letters back to their origin topic, each with a header naming the letter; a letter is sent
    /// once, however often this runs
    Replay {
        /// The dead-letter topic, e.g. users_info.dlq
        topic: String,
        /// Only letters whose error (or reason) holds this text, in any case
        #[arg(long)]
        reason: Option<String>,
        /// Say what would be sent, and send nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Check every schedule file and show each one's next three fire times; exit 1 if any is invalid
    Check {
        /// The schedule folder [default: scheduler.dir]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct JobsList {
    /// Only this schedule
    #[arg(long)]
    pub schedule: Option<String>,
    /// Only this status
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// Only runs started since then: a duration back from now (`2h`, `3d`; at most 100 years) or an
    /// RFC 3339 time
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Since>,
    /// At most this many
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=MAX_LIST as i64))]
    pub limit: i64,
    /// One JSON object per line instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every attempt of one run
    Show {
        run_id: Uuid,
        /// One JSON object per line instead of text
        #[arg(long)]
        json: bool,
    },
    /// The run's own log: its events and the output of the programs it started (its last 1000 lines)
    Logs {
        run_id: Uuid,
        /// Keep printing new lines until the run is over
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run a schedule now (trigger `manual`), under the same overlap guard as scheduled runs
    Run { schedule: String },
}

#[derive(Debug, Subcommand)]
pub enum PgconfCommand {
    /// Compare with the server; exit 0 when in force, 3 on drift, 4 when a restart is needed (1 when the
    /// archive check fails and the settings are in force)
    Check {
        /// Also force a WAL switch and wait (backup.archive_wait) until the segment is in
        /// backup.wal_archive
        #[arg(long)]
        archive: bool,
    },
    /// Show the settings that differ, server first
    Diff,
    /// Write the differences with ALTER SYSTEM and reload; exit 4 when a restart is still needed
    Apply,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a base backup now, verify it, then apply retention
    Run,
    /// The backups in backup.dir, oldest first
    List {
        /// JSON lines instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Check a backup again with pg_verifybackup; exit 1 when it fails
    Verify { id: String },
    /// Delete what retention chooses (all but the newest backup.keep verified backups), then the archived
    /// WAL no kept backup needs
    Prune {
        /// Only list what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Check that the WAL archive holds every segment from the oldest backup's start to the newest
    /// archived one; exit 1 naming the first missing segment
    Check,
    /// Restore a backup (default: the newest verified) into a throwaway server from the WAL archive
    RestoreTest { id: Option<String> },
    /// Point-in-time recovery: copy the backup a target needs into an empty folder with the recovery
    /// settings, ready for `pg_ctl start`
    #[command(group(
        clap::ArgGroup::new("target")
            .required(true)
            .args(["target_time", "target_lsn", "latest"])
    ))]
    Restore {
        /// Recover the transactions committed up to this time (RFC 3339 with its offset, e.g.
        /// 2026-01-03T10:15:00Z)
        #[arg(long)]
        target_time: Option<String>,
        /// Recover up to this WAL position (e.g. 0/5000028)
        #[arg(long)]
        target_lsn: Option<String>,
        /// Recover everything the archive holds
        #[arg(long)]
        latest: bool,
        /// The empty or new folder to restore into (the new data folder)
        #[arg(long)]
        to: PathBuf,
        /// First recover a throwaway copy as the drill does, and report its rows and newest commit
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the schema migrations
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration in effect, secrets redacted, with where each value came from
    Show,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_bounded_duration_or_a_time() {
        let now: DateTime<Utc> = "2026-01-02T12:00:00Z".parse().unwrap();
        let at = |text: &str| parse_since(text).map(|s| s.at(now).unwrap().to_rfc3339());
        assert_eq!(at("2h").unwrap(), "2026-01-02T10:00:00+00:00");
        assert_eq!(
            at("2026-01-01T00:00:00Z").unwrap(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(at("100y").unwrap(), "1926-01-02T12:00:00+00:00");
        for text in ["300000y", "101y", "18446744073709551615s"] {
            let error = parse_since(text).unwrap_err();
            assert!(
                error.contains("at most 100 years") || error.contains("neither"),
                "{text}: {error}"
            );
        }
        assert_eq!(
            parse_since("300000y").unwrap_err(),
            "a duration back from now can reach at most 100 years (36525d)"
        );
        assert!(parse_since("yesterday").unwrap_err().starts_with("neither"));
    }
}
