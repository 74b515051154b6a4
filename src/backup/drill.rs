//! The restore drill: a base backup (the newest verified one, or a chosen one) copied into a scratch
//! folder and recovered from the WAL archive by a throwaway PostgreSQL that runs as a non-root user on a
//! private socket (no TCP); then asked how many `random_users` it has. The server is stopped and the
//! scratch folder deleted however the drill ends.
//!
//! The copy's `pg_wal` is emptied, so every WAL segment, the backup's own included, must come from the
//! archive: the drill proves the backup and the archive together, as a real restore would use them. It
//! also fails when recovery stopped short of WAL the archive holds (a missing or unreadable segment).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tracing::{info, warn};

use super::{Listed, find_program, major_version, program_version};
use crate::config::Config;

/// Lines of the throwaway server's log put into an error.
const LOG_TAIL: usize = 15;

/// What a drill found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub backup_id: String,
    pub backup_started_at: DateTime<Utc>,
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
    pub duration_ms: u64,
}

/// Runs the drill on backup `id`, or on the newest verified backup.
#[tracing::instrument(skip_all, fields(backup = id))]
pub async fn run(config: &Config, id: Option<&str>) -> anyhow::Result<DrillReport> {
    let clock = Instant::now();
    let timeout = config.backup.timeout;
    let backups = super::list(&config.backup.dir)?;
    let chosen = choose(&backups, id, &config.backup.dir)?;
    let Some(metadata) = chosen.metadata.clone() else {
        bail!("backup {} has no metadata", chosen.id);
    };
    if !metadata.verification.ok {
        warn!(message = "drilling a backup whose latest verification failed", id = %chosen.id);
    }

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
    let backup_major = std::fs::read_to_string(chosen.path.join("PG_VERSION"))
        .with_context(|| format!("cannot read PG_VERSION of backup {}", chosen.id))?;
    let backup_major: u32 = backup_major
        .trim()
        .parse()
        .with_context(|| format!("PG_VERSION of backup {} is not a number", chosen.id))?;
    if major_version(&server_line) != Some(backup_major) {
        bail!(
            "backup {} is of PostgreSQL {backup_major}, but {} is `{server_line}`: point backup.pg_bin at the PostgreSQL {backup_major} programs",
            chosen.id,
            postgres.display()
        );
    }

    let user = running_as_root().then(|| config.backup.drill_user.clone());
    let parent = if config.backup.scratch.as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        config.backup.scratch.clone()
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create the scratch parent {}", parent.display()))?;
    // Absolute: it is also the server's socket folder.
    let parent = std::fs::canonicalize(&parent)
        .with_context(|| format!("cannot open the scratch parent {}", parent.display()))?;
    let mut scratch = Scratch::create(&parent, pg_ctl, user)?;
    info!(message = "restore drill started", backup = %chosen.id, scratch = %scratch.dir.display());

    {
        let (from, to) = (chosen.path.clone(), scratch.data.clone());
        tokio::task::spawn_blocking(move || copy_tree(&from, &to, true))
            .await
            .context("the copy panicked")?
            .with_context(|| format!("cannot copy backup {} to the scratch folder", chosen.id))?;
    }
    let port = free_port()?;
    prepare(&scratch.data, &scratch.dir, port, &restore_command)?;
    if let Some(user) = &scratch.user {
        chown(&scratch.dir, user).await?;
    }

    let started = Instant::now();
    scratch.start(timeout).await?;
    let url_options: PgConnectOptions = config
        .database
        .url
        .expose()
        .parse()
        .context("the database url is not a valid postgres url")?;
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
    let archived = archive_segments(&archive)?;
    let gap = replayed_segment
        .as_deref()
        .and_then(|replayed| archive_gap(&archived, metadata.timeline, &current_segment, replayed));
    tokio::task::spawn_blocking(move || scratch.clean_up())
        .await
        .context("the clean-up panicked")??;
    if let Some(gap) = gap {
        bail!("{gap}");
    }
    let report = DrillReport {
        backup_id: chosen.id.clone(),
        backup_started_at: metadata.started_at,
        rows,
        recovery_seconds: recovery.as_secs_f64(),
        newest_commit_time,
        replayed_to_lsn,
        wal_segments_restored: restored_segments(&log),
        server_version,
        duration_ms: clock.elapsed().as_millis() as u64,
    };
    info!(message = "restore drill passed", backup = %report.backup_id, rows = report.rows, recovery_seconds = report.recovery_seconds);
    Ok(report)
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

/// `cp '<archive>/%f' '%p'`. The archive's path goes through a shell and PostgreSQL's `%` expansion, so
/// a quote, a `%` or a control character in it is refused rather than escaped.
fn restore_command(archive: &Path) -> anyhow::Result<String> {
    let text = archive
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the WAL archive's path is not UTF-8"))?;
    if text.contains(['\'', '%']) || text.chars().any(char::is_control) {
        bail!(
            "the WAL archive's path {text:?} has a quote, a % or a control character; use a plainer path"
        );
    }
    Ok(format!("cp '{text}/%f' '%p'"))
}

/// A value in postgresql.conf quoting.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Turns the copy into a throwaway server that recovers from the archive: its own configuration (the
/// backup's may name paths, libraries, certificates and an archive_command of the live server), local
/// trust on a private socket, no archiving, the copy's WAL removed, and `recovery.signal`.
fn prepare(data: &Path, socket_dir: &Path, port: u16, restore_command: &str) -> anyhow::Result<()> {
    let socket = socket_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the scratch folder's path is not UTF-8"))?;
    let conf = format!(
        "# Written by userpipe's restore drill: a throwaway server that recovers one backup, then is removed.\n\
         port = {port}\n\
         listen_addresses = ''\n\
         unix_socket_directories = {socket}\n\
         unix_socket_permissions = 0700\n\
         archive_mode = off\n\
         restore_command = {restore}\n\
         recovery_target_timeline = 'latest'\n\
         recovery_target_action = 'promote'\n\
         hot_standby = off\n\
         fsync = off\n\
         synchronous_commit = off\n\
         shared_preload_libraries = ''\n\
         ssl = off\n\
         logging_collector = off\n\
         lc_messages = 'C'\n",
        socket = conf_quote(socket),
        restore = conf_quote(restore_command),
    );
    let write = |name: &str, text: &str| {
        std::fs::write(data.join(name), text)
            .with_context(|| format!("cannot write {name} in the scratch copy"))
    };
    write("postgresql.conf", &conf)?;
    write(
        "postgresql.auto.conf",
        "# The live server's ALTER SYSTEM settings are not used by the restore drill.\n",
    )?;
    // Only the drill's user can reach the socket folder (0700), so local trust lets in no one else.
    write("pg_hba.conf", "local all all trust\n")?;
    write("pg_ident.conf", "")?;
    for name in ["standby.signal", "postmaster.pid", "postmaster.opts"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let wal = data.join("pg_wal");
    for entry in std::fs::read_dir(&wal).context("the backup has no pg_wal folder")? {
        let path = entry?.path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path)? {
                std::fs::remove_file(inner?.path())?;
            }
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    write("recovery.signal", "")?;
    Ok(())
}

/// Copies the folder `from` to the new folder `to` (mode 0700): files with their permissions, folders,
/// and symbolic links as links. At the top, `backup.json` and `backup_manifest` stay behind.
fn copy_tree(from: &Path, to: &Path, top: bool) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && (name == super::METADATA_FILE || name == "backup_manifest") {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target, false)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// Whether this process runs as root (then the server runs as `backup.drill_user`).
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `folder` and everything in it to `user` (and the user's login group).
async fn chown(folder: &Path, user: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(folder)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run chown")?;
    if !output.status.success() {
        bail!(
            "cannot give the scratch folder to {user}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A loopback port number nobody listens on: it names the server's socket file and its shared memory
/// (the server itself listens on no TCP port).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot pick a port")?;
    Ok(listener.local_addr()?.port())
}

/// The scratch folder and the throwaway server in it. Dropping it stops the server (immediate mode)
/// and deletes the folder; [`Scratch::clean_up`] does the same with a fast shutdown first.
struct Scratch {
    dir: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    /// Who runs the server: `Some` when userpipe is root.
    user: Option<String>,
    started: bool,
    cleaned: bool,
}

impl Scratch {
    fn create(parent: &Path, pg_ctl: PathBuf, user: Option<String>) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let dir = parent.join(format!("userpipe-drill-{}", &token[..12]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the scratch folder {}", dir.display()))?;
        Ok(Self {
            data: dir.join("data"),
            dir,
            pg_ctl,
            user,
            started: false,
            cleaned: false,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of the server's log, for an error.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
        if tail.is_empty() {
            "(the server log is empty)".into()
        } else {
            format!("the end of the server log:\n{tail}")
        }
    }

    /// `pg_ctl ARGS`, as the drill user when there is one.
    fn pg_ctl_args(&self, args: &[&str]) -> (PathBuf, Vec<String>) {
        let mut full: Vec<String> = Vec::new();
        let program = match &self.user {
            Some(user) => {
                full.extend(["-u".into(), user.clone(), "--".into()]);
                full.push(self.pg_ctl.to_string_lossy().into_owned());
                PathBuf::from("runuser")
            }
            None => self.pg_ctl.clone(),
        };
        full.extend(args.iter().map(|a| a.to_string()));
        (program, full)
    }

    fn pg_ctl_async(&self, args: &[&str]) -> tokio::process::Command {
        let (program, args) = self.pg_ctl_args(args);
        let mut command = tokio::process::Command::new(program);
        command.args(args).stdin(Stdio::null()).kill_on_drop(true);
        command
    }

    fn pg_ctl_sync(&self, args: &[&str]) -> bool {
        let (program, args) = self.pg_ctl_args(args);
        std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the server; returns once it runs recovery (or is up).
    async fn start(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.log_path().to_string_lossy().into_owned();
        let seconds = timeout.as_secs().clamp(1, 3600).to_string();
        self.started = true;
        let output = self
            .pg_ctl_async(&["-D", &data, "-l", &log, "-w", "-t", &seconds, "start"])
            .output()
            .await
            .context("cannot run pg_ctl start")?;
        if !output.status.success() {
            bail!(
                "the restored server did not start: {}; {}",
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Whether the server is still running (`pg_ctl status`).
    async fn is_running(&self) -> anyhow::Result<bool> {
        let data = self.data.to_string_lossy().into_owned();
        let status = self
            .pg_ctl_async(&["-D", &data, "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("cannot run pg_ctl status")?;
        Ok(status.success())
    }

    /// Stops the server (fast, else immediate) and deletes the scratch folder.
    fn clean_up(mut self) -> anyhow::Result<()> {
        self.stop_and_remove("fast")
    }

    fn stop_and_remove(&mut self, mode: &str) -> anyhow::Result<()> {
        self.cleaned = true;
        if self.started {
            let data = self.data.to_string_lossy().into_owned();
            let stopped = self.pg_ctl_sync(&["-D", &data, "-m", mode, "-w", "-t", "60", "stop"]);
            if !stopped && mode != "immediate" {
                self.pg_ctl_sync(&["-D", &data, "-m", "immediate", "-w", "-t", "60", "stop"]);
            }
            self.started = false;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot delete the drill's scratch folder {}",
                    self.dir.display()
                )
            }),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.cleaned
            && let Err(e) = self.stop_and_remove("immediate")
        {
            warn!(message = "restore drill clean-up failed", error = %format!("{e:#}"));
        }
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

/// The WAL segment files in the archive (24 hex digits), sorted.
fn archive_segments(archive: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(archive)
        .with_context(|| format!("cannot read the WAL archive {}", archive.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_segment_name(n))
        .collect();
    names.sort();
    Ok(names)
}

fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit())
}

/// When recovery stopped short of the archive: it ended in segment `replayed` (named on the promoted
/// server's timeline) while the archive holds a later segment on a timeline recovery could follow (from
/// the backup's `timeline` up to, not including, the new one of `current`). Then a segment after
/// `replayed` is missing or unreadable and the WAL after it was not restored.
pub fn archive_gap(
    archived: &[String],
    backup_timeline: u32,
    current: &str,
    replayed: &str,
) -> Option<String> {
    let timeline = |name: &str| u32::from_str_radix(name.get(..8)?, 16).ok();
    let new_timeline = timeline(current)?;
    let replayed_position = replayed.get(8..)?;
    let newest = archived
        .iter()
        .filter(|n| is_segment_name(n))
        .filter(|n| timeline(n).is_some_and(|t| t >= backup_timeline && t < new_timeline))
        .max_by_key(|n| &n[8..])?;
    (&newest[8..] > replayed_position).then(|| {
        format!(
            "recovery stopped in segment {replayed_position} but the archive holds WAL up to {newest}: a segment \
             after the one recovery stopped in is missing or unreadable, so later transactions were not restored"
        )
    })
}

/// How many WAL segments the server's log says it restored from the archive.
pub fn restored_segments(log: &str) -> usize {
    let mut names: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("restored log file \"")?.1.split_once('"'))
        .map(|(name, _)| name)
        .filter(|n| is_segment_name(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_command_quotes_the_archive_and_refuses_what_it_cannot_quote() {
        assert_eq!(
            restore_command(Path::new("/var/lib/postgresql/wal-archive")).unwrap(),
            "cp '/var/lib/postgresql/wal-archive/%f' '%p'"
        );
        assert_eq!(conf_quote("cp '/a/%f' '%p'"), "'cp ''/a/%f'' ''%p'''");
        for bad in ["/it's", "/100%", "/a\nb"] {
            assert!(restore_command(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_gap_in_the_archive_is_found() {
        let archived = names(&[
            "000000010000000000000005",
            "000000010000000000000005.00000028.backup",
            "000000010000000000000006",
            "000000010000000000000008",
            "00000002.history",
        ]);
        // Recovery ended in 6; 7 is missing, 8 is there: a gap.
        let gap = archive_gap(
            &archived,
            1,
            "000000020000000000000007",
            "000000020000000000000006",
        )
        .unwrap();
        assert!(gap.starts_with("recovery stopped in segment 0000000000000006 but the archive holds WAL up to 000000010000000000000008"), "{gap}");
        // Recovery replayed everything there is.
        assert_eq!(
            archive_gap(
                &archived,
                1,
                "000000020000000000000009",
                "000000020000000000000008"
            ),
            None
        );
        // Segments of other timelines do not count: the new one (2) and older ones.
        let archived = names(&["000000010000000000000006", "000000020000000000000009"]);
        assert_eq!(
            archive_gap(
                &archived,
                1,
                "000000020000000000000007",
                "000000020000000000000006"
            ),
            None
        );
        // A later timeline recovery could follow counts.
        let archived = names(&["000000010000000000000006", "000000020000000000000009"]);
        assert!(
            archive_gap(
                &archived,
                1,
                "000000030000000000000007",
                "000000030000000000000006"
            )
            .is_some()
        );
    }

    #[test]
    fn restored_segments_are_counted_from_the_log() {
        let log = "LOG:  restored log file \"000000010000000000000005\" from archive\n\
                   cp: cannot stat '/a/00000002.history': No such file or directory\n\
                   LOG:  restored log file \"000000010000000000000006\" from archive\n\
                   LOG:  restored log file \"000000010000000000000006\" from archive\n\
                   LOG:  restored log file \"00000002.history\" from archive\n";
        assert_eq!(restored_segments(log), 2);
    }
}
