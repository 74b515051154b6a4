//! The restore drill: a base backup (the newest verified one, or a chosen one) copied into a scratch
//! folder and recovered from the WAL archive by a throwaway PostgreSQL that runs as a non-root user on a
//! private socket (no TCP); then asked how many `random_users` it has. The server is stopped and the
//! scratch folder deleted however the drill ends.
//!
//! The copy's `pg_wal` is emptied, so every WAL segment, the backup's own included, must come from the
//! archive: the drill proves the backup and the archive together, as a real restore would use them. It
//! also fails when recovery stopped short of WAL the archive holds (a missing or unreadable segment).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tracing::{info, warn};

use super::recovery::{archive_gap, archive_segments, prepare, restore_command, restored_segments};
use super::scratch::{Scratch, chown, free_port, running_as_root, sweep};
use crate::config::Config;
use crate::pg::backup::{self, Listed};
use crate::pg::program::{find_program, major_version, program_version};
use crate::pg::restore::target::{Target, recovery_settings};

/// What a drill found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub backup_id: String,
    pub backup_started_at: DateTime<Utc>,
    /// What the throwaway server recovered (its fields stand beside the others in JSON).
    #[serde(flatten)]
    pub recovered: Recovered,
    pub duration_ms: u64,
}

/// Runs the drill on backup `id`, or on the newest verified backup.
#[tracing::instrument(skip_all, fields(backup = id))]
pub async fn run(config: &Config, id: Option<&str>) -> anyhow::Result<DrillReport> {
    let clock = Instant::now();
    let backups = backup::list(&config.backup.dir)?;
    let chosen = choose(&backups, id, &config.backup.dir)?;
    let Some(metadata) = chosen.metadata.clone() else {
        bail!("backup {} has no metadata", chosen.id);
    };
    if !metadata.verification.ok {
        warn!(message = "drilling a backup whose latest verification failed", id = %chosen.id);
    }
    info!(message = "restore drill started", backup = %chosen.id);
    let source = Source::Backup {
        id: &chosen.id,
        path: &chosen.path,
    };
    let recovered = recover(config, source, &Target::Latest, metadata.timeline).await?;
    let report = DrillReport {
        backup_id: chosen.id.clone(),
        backup_started_at: metadata.started_at,
        recovered,
        duration_ms: clock.elapsed().as_millis() as u64,
    };
    info!(message = "restore drill passed", backup = %report.backup_id, rows = report.recovered.rows, recovery_seconds = report.recovered.recovery_seconds);
    Ok(report)
}

/// What a throwaway server found once it had recovered.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    /// Rows in the restored `random_users`.
    pub rows: i64,
    /// From the server's start until recovery ended and it was promoted.
    pub recovery_seconds: f64,
    /// The commit time of the last transaction recovery replayed.
    pub newest_commit_time: Option<DateTime<Utc>>,
    /// Where replay ended.
    pub replayed_to_lsn: Option<String>,
    /// WAL segments restored from the archive.
    pub wal_segments_restored: usize,
    pub server_version: String,
}

/// What a throwaway server recovers from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A backup: copied without its `backup.json` and manifest, its own WAL removed so that every
    /// segment must come from the archive.
    Backup { id: &'a str, path: &'a Path },
    /// A folder `backup restore` wrote: copied whole, with the backup's WAL it holds.
    Restored(&'a Path),
}

impl Source<'_> {
    fn path(&self) -> &Path {
        match self {
            Source::Backup { path, .. } | Source::Restored(path) => path,
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Backup { id, .. } => format!("backup {id}"),
            Source::Restored(path) => path.display().to_string(),
        }
    }
}

/// Copies `source` into a scratch folder and recovers it from the WAL archive to `target` in a throwaway
/// server (a non-root user, a private socket, no TCP, no archiving), then counts `random_users`. With
/// `Target::Latest` it also fails when replay stopped short of WAL the archive holds on `timeline` and
/// its descendants. The server is stopped and the scratch folder deleted however it ends. The drill and
/// `backup restore --verify` both run this.
pub async fn recover(
    config: &Config,
    source: Source<'_>,
    target: &Target,
    timeline: u32,
) -> anyhow::Result<Recovered> {
    let timeout = config.backup.timeout;
    let archive = std::fs::canonicalize(&config.backup.wal_archive).with_context(|| {
        format!(
            "cannot open the WAL archive {} (backup.wal_archive)",
            config.backup.wal_archive.display()
        )
    })?;
    if !archive.is_dir() {
        bail!("the WAL archive {} is not a folder", archive.display());
    }
    let restore_command = restore_command(&archive)?;

    let pg_ctl = find_program(&config.backup.pg_bin, "pg_ctl")?;
    let postgres = find_program(&config.backup.pg_bin, "postgres")?;
    let server_line = program_version(&postgres).await?;
    let name = source.name();
    // A compressed backup's version is in its backup.json.
    let major = backup::major_version(source.path()).with_context(|| name.clone())?;
    if major_version(&server_line) != Some(major) {
        bail!(
            "{name} is of PostgreSQL {major}, but {} is `{server_line}`: point backup.pg_bin at the PostgreSQL {major} programs",
            postgres.display()
        );
    }

    let user = running_as_root().then(|| config.backup.drill_user.clone());
    let parent = scratch_parent(config)?;
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create the scratch parent {}", parent.display()))?;
    // Absolute: it is also the server's socket folder.
    let parent = std::fs::canonicalize(&parent)
        .with_context(|| format!("cannot open the scratch parent {}", parent.display()))?;
    sweep_in(&parent).await;
    let mut scratch = Scratch::create(&parent, pg_ctl, user)?;
    info!(message = "throwaway recovery started", source = %name, target = %target, scratch = %scratch.dir.display());

    // Whatever the outcome, the server is stopped and the folder deleted before this returns (only a
    // drill dropped part way leaves that to the background).
    let outcome = async {
        scratch
            .copy_in(source.path())
            .await
            .with_context(|| format!("cannot copy {name} to the scratch folder"))?;
        let port = free_port()?;
        let settings = recovery_settings(target, &restore_command);
        let empty_wal = matches!(source, Source::Backup { .. });
        prepare(&scratch.data, &scratch.dir, port, &settings, empty_wal)?;
        if let Some(user) = &scratch.user {
            chown(&scratch.dir, user).await?;
        }

        let started = Instant::now();
        scratch.start(timeout).await?;
        let url_options = crate::db::connect_options(config.database.url.expose())?;
        let username = url_options.get_username().to_owned();
        let database = url_options.get_database().unwrap_or(&username).to_owned();
        let options = PgConnectOptions::new_without_pgpass()
            .socket(&scratch.dir)
            .port(port)
            .username(&username)
            .database(&database);
        let mut conn = wait_until_promoted(&scratch, &options, timeout).await?;
        let recovery = started.elapsed();

        let server_version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
            .fetch_one(&mut conn)
            .await
            .context("the restored server does not answer")?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM random_users")
            .fetch_one(&mut conn)
            .await
            .with_context(|| {
                format!("cannot count random_users in the restored database {database}")
            })?;
        let (newest_commit_time, replayed_to_lsn, replayed_segment, current_segment): (
            Option<DateTime<Utc>>,
            Option<String>,
            Option<String>,
            String,
        ) = sqlx::query_as(
            "SELECT pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text, \
             pg_walfile_name(pg_last_wal_replay_lsn()), pg_walfile_name(pg_current_wal_lsn())",
        )
        .fetch_one(&mut conn)
        .await
        .context("cannot read where recovery ended")?;
        conn.close().await.ok();

        let log = scratch.log();
        let gap = match target {
            Target::Latest => {
                let archived = archive_segments(&archive)?;
                replayed_segment.as_deref().and_then(|replayed| {
                    archive_gap(&archived, timeline, &current_segment, replayed)
                })
            }
            Target::Time(_) | Target::Lsn(_) => None,
        };
        let recovered = Recovered {
            rows,
            recovery_seconds: recovery.as_secs_f64(),
            newest_commit_time,
            replayed_to_lsn,
            wal_segments_restored: restored_segments(&log),
            server_version,
        };
        Ok::<_, anyhow::Error>((recovered, gap))
    }
    .await;
    // The span goes along, so the server's log stays in the run's log.
    let span = tracing::Span::current();
    let cleaned = tokio::task::spawn_blocking(move || span.in_scope(|| scratch.clean_up()))
        .await
        .context("the clean-up panicked")?;
    let (recovered, gap) = outcome?;
    cleaned?;
    if let Some(gap) = gap {
        bail!("{gap}");
    }
    Ok(recovered)
}

/// Where the drill makes its scratch folders: `backup.scratch`, else the system temp folder.
fn scratch_parent(config: &Config) -> anyhow::Result<PathBuf> {
    Ok(if config.backup.scratch.as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        config.backup.scratch.clone()
    })
}

/// Removes the scratch folders that drills of processes gone left behind (a SIGKILL, a power cut), with
/// a server still running in one; a live drill's, of this process or another, stays. At the start of
/// each drill and of the scheduler role.
pub async fn sweep_leftovers(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    let parent = scratch_parent(config)?;
    Ok(sweep_in(&parent).await)
}

async fn sweep_in(parent: &Path) -> Vec<PathBuf> {
    let parent = parent.to_owned();
    tokio::task::spawn_blocking(move || sweep(&parent))
        .await
        .unwrap_or_default()
}

/// Backup `id`, or the newest whose latest verification passed.
fn choose<'a>(backups: &'a [Listed], id: Option<&str>, dir: &Path) -> anyhow::Result<&'a Listed> {
    match id {
        Some(id) => backups
            .iter()
            .find(|b| b.id == id && b.metadata.is_some())
            .ok_or_else(|| {
                anyhow::anyhow!("there is no complete backup {id} in {}", dir.display())
            }),
        None => backups
            .iter()
            .rev()
            .find(|b| b.metadata.as_ref().is_some_and(|m| m.verification.ok))
            .ok_or_else(|| {
                anyhow::anyhow!("there is no verified backup in {} to drill", dir.display())
            }),
    }
}

/// Connects once recovery has ended and the server was promoted; fails when the server stops, refuses
/// the connection for good, or `timeout` passes.
async fn wait_until_promoted(
    scratch: &Scratch,
    options: &PgConnectOptions,
    timeout: Duration,
) -> anyhow::Result<PgConnection> {
    let deadline = Instant::now() + timeout;
    loop {
        match PgConnection::connect_with(options).await {
            Ok(mut conn) => {
                let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut conn)
                    .await
                    .context("the restored server does not answer")?;
                if !in_recovery {
                    return Ok(conn);
                }
                conn.close().await.ok();
            }
            Err(e) if still_starting(&e) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the restored server refused the drill's connection; {}",
                    scratch.log_tail()
                )));
            }
        }
        if !scratch.is_running().await? {
            bail!(
                "the restored server stopped before recovery ended; {}",
                scratch.log_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "recovery did not end within {} (backup.timeout); {}",
                humantime::format_duration(timeout),
                scratch.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection error of a server that is not ready yet: no socket yet, or "the database system is
/// starting up" (57P03).
fn still_starting(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        _ => false,
    }
}
