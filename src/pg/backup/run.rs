//! Taking one base backup: `pg_basebackup` (plain format, WAL streamed, fast checkpoint, SHA-256 manifest)
//! into `<dir>/<id>.partial`, checked with `pg_verifybackup`, then renamed in one step to `<dir>/<id>`
//! holding its `backup.json`; then retention. A failed or cancelled run removes its partial folder and
//! kills pg_basebackup's whole process group (its WAL streamer is a forked child that outlives it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use tracing::{error, info, warn};

use super::catalog::Compressed;
use super::catalog::{
    METADATA_TMP_SUFFIX, Metadata, PARTIAL_SUFFIX, Pruned, new_id, prune, sync_folder,
    write_metadata,
};
use super::compress;
use super::verify::verify_folder;
use crate::config::{BackupCompression, Config};
use crate::db::AdvisoryLock;
use crate::pg::archive::gaps;
use crate::pg::conf::await_archived;
use crate::pg::program::{
    Line, check_client_version, find_program, program_version, run_program, tool_connection,
    verbose_line,
};

/// The account of one backup run, for the journal and the command line.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub duration_ms: u64,
    pub server_version: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
    pub verified: bool,
    /// Backups that retention deleted afterwards.
    pub pruned: Vec<String>,
    /// Archived WAL files that no kept backup needs any more, removed afterwards, and their bytes.
    pub wal_removed: usize,
    pub wal_bytes_freed: u64,
    /// Why retention or WAL expiry could not run (the backup itself is good).
    pub prune_error: Option<String>,
    /// The size of `base.tar.zst` and how long making it took, when `backup.compress` is on.
    pub compressed: Option<Compressed>,
    /// Why the verified backup could not be compressed (it is kept plain).
    pub compress_error: Option<String>,
    /// What is wrong with the WAL archive this backup is restored with: its last segment did not reach
    /// the archive, or the archive has a gap since the oldest kept backup. `None` when it is complete, or
    /// the server does not archive.
    pub archive_problem: Option<String>,
}

/// Takes one base backup of the server at `database.url` into `backup.dir`, verifies it, makes it
/// visible, then applies retention. `progress` shows a progress bar (on a terminal only).
#[tracing::instrument(skip_all, fields(dir = %config.backup.dir.display()))]
pub async fn run(config: &Config, progress: bool) -> anyhow::Result<BackupReport> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let url = config.database.url.expose();

    let mut conn = crate::db::connect_one(url).await?;
    let (server_version, server_version_num, tablespaces, archiving): (String, i32, i64, bool) =
        sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
             (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')), \
             current_setting('archive_mode') <> 'off' AND NOT pg_is_in_recovery()",
        )
    .fetch_one(&mut conn)
    .await
    .context("cannot read the server's version")?;
    if tablespaces > 0 {
        bail!(
            "the server has {tablespaces} tablespace(s) besides pg_default and pg_global; a plain-format \
             backup would write them to their original paths, so userpipe does not back it up"
        );
    }
    let locked = AdvisoryLock::Backup
        .try_take(&mut conn, true)
        .await
        .context("cannot take the backup lock")?;
    if !locked {
        bail!("another base backup of this server is running");
    }

    // The backup proper runs under the lock, let go of at once afterwards, whatever happened: left to
    // the closed session, it was still held under load when a backup came right after a failed one.
    let server = Server {
        version: server_version,
        version_num: server_version_num,
        archiving,
    };
    let taken = take(config, progress, &mut conn, started_at, server).await;
    let release = AdvisoryLock::Backup.release(&mut conn, true);
    let _ = tokio::time::timeout(Duration::from_secs(3), release).await;
    conn.close().await.ok();
    let mut report = taken?;
    let dir = config.backup.dir.clone();

    let (keep, archive) = (config.backup.keep, config.backup.wal_archive.clone());
    let pruned = {
        let (dir, archive) = (dir.clone(), archive.clone());
        // The span goes along, so what retention and expiry log stays in the run's log.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| prune(&dir, &archive, keep, false)))
            .await
    };
    let (pruned, prune_error) = match pruned {
        Ok(Ok(pruned)) => (pruned, None),
        Ok(Err(e)) => {
            warn!(message = "retention failed; the new backup is kept", error = %format!("{e:#}"));
            (Pruned::default(), Some(format!("{e:#}")))
        }
        Err(e) => (Pruned::default(), Some(format!("retention panicked: {e}"))),
    };
    if archiving
        && report.archive_problem.is_none()
        && let Some(from) = &pruned.wal.kept_from
    {
        report.archive_problem = match gaps::check(&archive, from) {
            Ok(coverage) => coverage.problem(),
            Err(e) => Some(format!("{e:#}")),
        };
    }
    if let Some(problem) = &report.archive_problem {
        warn!(message = "the WAL archive is not complete", problem = %problem);
    }
    Ok(BackupReport {
        duration_ms: clock.elapsed().as_millis() as u64,
        wal_removed: pruned.wal.removed.len(),
        wal_bytes_freed: pruned.wal.bytes_freed,
        pruned: pruned.deleted,
        prune_error,
        ..report
    })
}

/// The server a backup is taken of, as read before the lock.
struct Server {
    version: String,
    version_num: i32,
    /// It archives its WAL (then the backup waits for its last segment to reach the archive).
    archiving: bool,
}

/// The backup proper, under the backup lock that `conn` holds: pg_basebackup into a partial folder,
/// verification, metadata, the rename that makes it visible, compression, and the wait for its last WAL
/// segment in the archive. The report of the verified, visible backup, before retention (`run` adds it and
/// the duration).
async fn take(
    config: &Config,
    progress: bool,
    conn: &mut PgConnection,
    started_at: DateTime<Utc>,
    server: Server,
) -> anyhow::Result<BackupReport> {
    let Server {
        version: server_version,
        version_num: server_version_num,
        archiving,
    } = server;
    let url = config.database.url.expose();
    let timeout = config.backup.timeout;
    let pg_basebackup = find_program(&config.backup.pg_bin, "pg_basebackup")?;
    let pg_verifybackup = find_program(&config.backup.pg_bin, "pg_verifybackup")?;
    let tool_version = program_version(&pg_basebackup).await?;
    check_client_version(
        "pg_basebackup",
        &tool_version,
        (server_version_num / 10_000) as u32,
    )?;

    let dir = config.backup.dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the backup folder {}", dir.display()))?;
    remove_leftovers(&dir);
    let id = new_id(started_at, |name| {
        dir.join(name).exists() || dir.join(format!("{name}{PARTIAL_SUFFIX}")).exists()
    });
    let partial = dir.join(format!("{id}{PARTIAL_SUFFIX}"));
    let mut guard = RemoveOnDrop::create(&partial)?;
    info!(message = "base backup started", id = %id, server_version = %server_version);

    let label = format!("userpipe {id}");
    let (conninfo, password) = tool_connection(url)?;
    let mut command = tokio::process::Command::new(&pg_basebackup);
    command
        .arg("--dbname")
        .arg(&conninfo)
        .arg("--pgdata")
        .arg(&partial)
        .args([
            "--format=plain",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--manifest-checksums=SHA256",
            "--no-password",
        ])
        .arg(format!("--label={label}"));
    if !config.backup.max_rate.is_empty() {
        command.arg(format!("--max-rate={}", config.backup.max_rate));
    }
    // On a terminal a bar shows the progress; otherwise every step goes to the log.
    command.arg(if progress { "--progress" } else { "--verbose" });
    if let Some(password) = &password {
        command.env("PGPASSWORD", password);
    }
    let bar = progress_bar(progress);
    let output = run_program(command, "pg_basebackup", timeout, |line| {
        if show_progress(&bar, line) {
            Line::Progress
        } else {
            verbose_line("pg_basebackup", line)
        }
    })
    .await;
    bar.finish_and_clear();
    let output = output?;
    if !output.status.success() {
        return Err(explain_full(
            anyhow::anyhow!(
                "pg_basebackup failed ({}): {}",
                output.status,
                output.problems("pg_basebackup")
            ),
            &dir,
        ));
    }

    let (timeline, start_lsn, end_lsn) = wal_range(&partial).map_err(|e| explain_full(e, &dir))?;
    let start_wal = std::fs::read_to_string(partial.join("backup_label"))
        .ok()
        .and_then(|label| start_wal_file(&label));
    let verification = verify_folder(&pg_verifybackup, &partial, timeout).await?;
    if !verification.ok {
        return Err(explain_full(
            anyhow::anyhow!(
                "the new backup failed verification: {}",
                verification.problems.join("; ")
            ),
            &dir,
        ));
    }
    let bytes = {
        let partial = partial.clone();
        tokio::task::spawn_blocking(move || folder_size(&partial))
            .await
            .context("the size count panicked")?
            .context("cannot measure the backup")?
    };
    let metadata = Metadata {
        id: id.clone(),
        label,
        started_at,
        finished_at: Utc::now(),
        bytes,
        server_version: server_version.clone(),
        server_version_num,
        pg_basebackup: tool_version,
        timeline,
        start_lsn: start_lsn.clone(),
        end_lsn: end_lsn.clone(),
        start_wal,
        verification,
        compressed: None,
    };
    write_metadata(&partial, &metadata).map_err(|e| explain_full(e, &dir))?;
    let path = dir.join(&id);
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))
        .map_err(|e| explain_full(e, &dir))?;
    guard.disarm();
    sync_folder(&dir);
    info!(message = "base backup verified and kept", id = %id, bytes, start_lsn = %start_lsn, end_lsn = %end_lsn);
    let (compressed, compress_error) = match config.backup.compress {
        BackupCompression::Off => (None, None),
        BackupCompression::Zstd => {
            let folder = path.clone();
            match tokio::task::spawn_blocking(move || compress::compress(&folder)).await {
                Ok(Ok(compressed)) => {
                    info!(message = "base backup compressed", id = %id, bytes, compressed_bytes = compressed.bytes, duration_ms = compressed.duration_ms);
                    (Some(compressed), None)
                }
                Ok(Err(e)) => {
                    let error = explain_full(e, &dir);
                    warn!(message = "cannot compress the backup; it is kept plain", id = %id, error = %format!("{error:#}"));
                    (None, Some(format!("{error:#}")))
                }
                Err(e) => (None, Some(format!("compressing panicked: {e}"))),
            }
        }
    };
    // The archive must hold the backup's WAL for a restore from the archive: wait for its last segment.
    let mut archive_problem = None;
    if archiving {
        let last: String = sqlx::query_scalar("SELECT pg_walfile_name($1::text::pg_lsn)")
            .bind(&end_lsn)
            .fetch_one(&mut *conn)
            .await
            .context("cannot name the backup's last WAL segment")?;
        let archive = &config.backup.wal_archive;
        let arrived =
            await_archived(&mut *conn, archive, &last, config.backup.archive_wait).await?;
        archive_problem = arrived.problem;
    }
    Ok(BackupReport {
        id,
        path,
        bytes,
        duration_ms: 0,
        server_version,
        timeline,
        start_lsn,
        end_lsn,
        verified: true,
        wal_removed: 0,
        wal_bytes_freed: 0,
        pruned: Vec::new(),
        prune_error: None,
        compressed,
        compress_error,
        archive_problem,
    })
}

/// Removes what a crashed run left in `dir`: `<id>.partial` folders, `.<id>.deleting` folders,
/// `.<id>.json.tmp` files, and in a complete backup a half-written archive or the plain files beside a
/// committed one ([`compress::finish`]). Only called while holding the backup lock.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let (name, path) = (
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        );
        let hidden = name.starts_with('.');
        if path.is_dir() && !hidden && !name.ends_with(PARTIAL_SUFFIX) {
            match compress::finish(&path) {
                Ok(false) => {}
                Ok(true) => {
                    warn!(message = "finished compressing a backup an interrupted run left", path = %path.display())
                }
                Err(e) => {
                    warn!(message = "cannot finish compressing a backup an interrupted run left", path = %path.display(), error = %format!("{e:#}"))
                }
            }
            continue;
        }
        let removed = if path.is_dir()
            && (name.ends_with(PARTIAL_SUFFIX) || (hidden && name.ends_with(".deleting")))
        {
            std::fs::remove_dir_all(&path)
        } else if path.is_file() && hidden && name.ends_with(METADATA_TMP_SUFFIX) {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        match removed {
            Ok(()) => {
                warn!(message = "removed what an interrupted backup run left", path = %path.display())
            }
            Err(e) => {
                warn!(message = "cannot remove what an interrupted backup run left", path = %path.display(), error = %e)
            }
        }
    }
}

/// Free space below which a failed run says that the backup folder is full.
const FULL_BELOW: u64 = 1024 * 1024;

/// `error`, preceded by "the backup folder is full" when `dir`'s file system has next to no room left: a
/// step that runs out of room does not always say so (pg_basebackup has been seen to exit 0 with a
/// truncated manifest). Checked before the partial folder is removed, which frees the room again.
fn explain_full(error: anyhow::Error, dir: &Path) -> anyhow::Error {
    match rustix::fs::statvfs(dir) {
        Ok(fs) if fs.f_bavail.saturating_mul(fs.f_frsize) < FULL_BELOW => error.context(format!(
            "the file system of the backup folder {} is full ({} free)",
            dir.display(),
            bytesize::ByteSize(fs.f_bavail.saturating_mul(fs.f_frsize))
                .display()
                .iec()
        )),
        _ => error,
    }
}

/// A folder removed when dropped, unless disarmed: a backup that did not complete leaves nothing.
struct RemoveOnDrop {
    path: Option<PathBuf>,
}

impl RemoveOnDrop {
    /// Creates the folder (mode 0700: a backup holds every row of the database).
    fn create(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            path: Some(path.to_owned()),
        })
    }

    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        // A killed writer may finish one last file operation after the kill: try again briefly.
        for attempt in 1..=5 {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if attempt == 5 => {
                    error!(message = "cannot remove an incomplete backup folder", folder = %path.display(), error = %e);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// A progress bar for pg_basebackup when `show`, drawn only on a terminal.
fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message("pg_basebackup");
    bar
}

/// Feeds one stderr line of `pg_basebackup --progress` to a visible bar; `true` for lines that are
/// progress (shown by the bar, not worth logging or keeping for an error message).
fn show_progress(bar: &ProgressBar, line: &str) -> bool {
    if bar.is_hidden() {
        return false;
    }
    if let Some((done, total)) = parse_progress(line) {
        bar.set_message("pg_basebackup");
        bar.set_length(total * 1024);
        bar.set_position(done * 1024);
        return true;
    }
    if line.contains("waiting for checkpoint") {
        bar.set_message("waiting for the checkpoint");
        return true;
    }
    false
}

/// `23033/23033 kB (100%), 1/1 tablespace` -> (23033, 23033), in kB.
pub fn parse_progress(line: &str) -> Option<(u64, u64)> {
    let (counts, _) = line.trim().split_once(" kB")?;
    let (done, total) = counts.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// Timeline and LSN range of the WAL a backup needs, from its `backup_manifest`.
fn wal_range(folder: &Path) -> anyhow::Result<(u32, String, String)> {
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(rename = "WAL-Ranges")]
        wal_ranges: Vec<Range>,
    }
    #[derive(Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "Start-LSN")]
        start: String,
        #[serde(rename = "End-LSN")]
        end: String,
    }
    let path = folder.join("backup_manifest");
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("cannot read the WAL range of {}", path.display()))?;
    let (Some(first), Some(last)) = (manifest.wal_ranges.first(), manifest.wal_ranges.last())
    else {
        bail!("{} has no WAL range", path.display());
    };
    Ok((last.timeline, first.start.clone(), last.end.clone()))
}

/// The segment in `START WAL LOCATION: 0/5000028 (file 000000010000000000000005)` of a backup_label.
pub fn start_wal_file(label: &str) -> Option<String> {
    let line = label
        .lines()
        .find(|l| l.starts_with("START WAL LOCATION:"))?;
    let (_, file) = line.split_once("(file ")?;
    Some(file.trim_end_matches(')').trim().to_owned())
}

/// The bytes of every file under `folder` (links are not followed).
fn folder_size(folder: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += folder_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_labels() {
        assert_eq!(
            parse_progress("23033/23033 kB (100%), 1/1 tablespace"),
            Some((23033, 23033))
        );
        assert_eq!(
            parse_progress("    12/23033 kB (0%), 0/1 tablespace (...)"),
            Some((12, 23033))
        );
        assert_eq!(parse_progress("waiting for checkpoint"), None);
        assert_eq!(
            start_wal_file(
                "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nCHECKPOINT LOCATION: 0/5000060\n"
            )
            .as_deref(),
            Some("000000010000000000000005")
        );
        assert_eq!(start_wal_file("LABEL: x\n"), None);
    }
}
