//! Base backups: `pg_basebackup` (plain format, WAL streamed, fast checkpoint, SHA-256 manifest) into
//! `<dir>/<id>.partial`, checked with `pg_verifybackup`, then renamed in one step to `<dir>/<id>` holding
//! its `backup.json`; listing, verifying again, retention ([`retention`]) and the restore drill ([`drill`]).
//!
//! A folder without the `.partial` suffix is always a complete, verified-when-made backup with its
//! metadata: the rename is the commit. A failed or cancelled run removes its partial folder (and kills
//! pg_basebackup's whole process group: its WAL streamer is a forked child that outlives its parent).

pub mod drill;
pub mod retention;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tracing::{error, info, warn};

use crate::config::Config;

/// The metadata file inside each backup folder (pg_verifybackup is told to ignore it).
pub const METADATA_FILE: &str = "backup.json";
/// The suffix of a backup being written (or left by a crash; the next run removes it).
pub const PARTIAL_SUFFIX: &str = ".partial";
/// The first key of the advisory lock a backup run holds on the server (`'upbk'`): one run at a time,
/// across replicas and the command line, so a run may remove partial folders it finds.
const LOCK_CLASS: i32 = 0x7570_626b;
/// Lines of a program's stderr kept for an error message.
const STDERR_TAIL: usize = 30;

/// What `backup.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub id: String,
    /// pg_basebackup's `--label`.
    pub label: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The size of the folder's files.
    pub bytes: u64,
    /// `server_version` of the server backed up, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    pub server_version_num: i32,
    /// `pg_basebackup --version`.
    pub pg_basebackup: String,
    /// The WAL range the backup needs, from its manifest.
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
    /// The first WAL segment the backup needs, from its `backup_label`.
    pub start_wal: Option<String>,
    /// The latest check with pg_verifybackup.
    pub verification: Verification,
}

/// One run of pg_verifybackup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    pub at: DateTime<Utc>,
    /// What pg_verifybackup reported, one line each; empty when it passed.
    pub problems: Vec<String>,
}

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
    /// Why retention could not run (the backup itself is good).
    pub prune_error: Option<String>,
}

/// Takes one base backup of the server at `database.url` into `backup.dir`, verifies it, makes it
/// visible, then applies retention. `progress` shows a progress bar (on a terminal only).
#[tracing::instrument(skip_all, fields(dir = %config.backup.dir.display()))]
pub async fn run(config: &Config, progress: bool) -> anyhow::Result<BackupReport> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let url = config.database.url.expose();
    let timeout = config.backup.timeout;

    let mut conn = crate::pgconf::connect(url).await?;
    let (server_version, server_version_num, tablespaces): (String, i32, i64) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
         (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))",
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
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, 0)")
        .bind(LOCK_CLASS)
        .fetch_one(&mut conn)
        .await
        .context("cannot take the backup lock")?;
    if !locked {
        bail!("another base backup of this server is running");
    }

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
    if progress {
        command.arg("--progress");
    }
    if let Some(password) = &password {
        command.env("PGPASSWORD", password);
    }
    let bar = progress_bar(progress);
    let output = run_program(command, "pg_basebackup", timeout, |line| {
        show_progress(&bar, line)
    })
    .await;
    bar.finish_and_clear();
    let output = output?;
    if !output.status.success() {
        bail!(
            "pg_basebackup failed ({}): {}",
            output.status,
            output.problems("pg_basebackup")
        );
    }

    let (timeline, start_lsn, end_lsn) = wal_range(&partial)?;
    let start_wal = std::fs::read_to_string(partial.join("backup_label"))
        .ok()
        .and_then(|label| start_wal_file(&label));
    let verification = verify_folder(&pg_verifybackup, &partial, timeout).await?;
    if !verification.ok {
        bail!(
            "the new backup failed verification: {}",
            verification.problems.join("; ")
        );
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
    };
    write_metadata(&partial, &metadata)?;
    let path = dir.join(&id);
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    guard.disarm();
    sync_folder(&dir);
    conn.close().await.ok();
    info!(message = "base backup verified and kept", id = %id, bytes, start_lsn = %start_lsn, end_lsn = %end_lsn);

    let keep = config.backup.keep;
    let pruned = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || prune(&dir, keep)).await
    };
    let (pruned, prune_error) = match pruned {
        Ok(Ok(pruned)) => (pruned, None),
        Ok(Err(e)) => {
            warn!(message = "retention failed; the new backup is kept", error = %format!("{e:#}"));
            (Vec::new(), Some(format!("{e:#}")))
        }
        Err(e) => (Vec::new(), Some(format!("retention panicked: {e}"))),
    };
    Ok(BackupReport {
        id,
        path,
        bytes,
        duration_ms: clock.elapsed().as_millis() as u64,
        server_version,
        timeline,
        start_lsn,
        end_lsn,
        verified: true,
        pruned,
        prune_error,
    })
}

/// A backup id from its start time, `20260103T020000Z`, with `-2`, `-3`, ... when that is taken.
pub fn new_id(at: DateTime<Utc>, taken: impl Fn(&str) -> bool) -> String {
    let base = at.format("%Y%m%dT%H%M%SZ").to_string();
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !taken(id))
        .unwrap_or(base)
}

/// Whether `id` can name a backup folder: letters, digits, `-` and `_` (no path separators).
pub fn is_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Removes what a crashed run left in `dir`: `<id>.partial` folders and `.<id>.deleting` folders. Only
/// called while holding the backup lock.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = name.ends_with(PARTIAL_SUFFIX)
            || (name.starts_with('.') && name.ends_with(".deleting"));
        if leftover && entry.path().is_dir() {
            warn!(message = "removing a folder left by an interrupted backup run", folder = %entry.path().display());
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                warn!(message = "cannot remove a leftover folder", folder = %entry.path().display(), error = %e);
            }
        }
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

/// The program `name`: in `pg_bin` when it is set, else on the PATH (`which`), else in the newest
/// `/usr/lib/postgresql/<major>/bin`, where Debian and Ubuntu keep the programs they do not link into
/// the PATH (`pg_verifybackup`, `pg_ctl`, `postgres`).
pub fn find_program(pg_bin: &Path, name: &str) -> anyhow::Result<PathBuf> {
    if !pg_bin.as_os_str().is_empty() {
        let path = pg_bin.join(name);
        if path.is_file() {
            return Ok(path);
        }
        bail!("there is no {name} in {} (backup.pg_bin)", pg_bin.display());
    }
    if let Ok(path) = which::which(name) {
        return Ok(path);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path().join("bin").join(name);
            path.is_file().then_some((major, path))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, path)| path).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find {name}: install the PostgreSQL programs or set backup.pg_bin (USERPIPE_PG_BIN) to their folder"
        )
    })
}

/// The first line of `program --version`.
pub async fn program_version(program: &Path) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {} --version", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// The major version in a `--version` line: `pg_basebackup (PostgreSQL) 15.18 (Debian ...)` is 15.
pub fn major_version(line: &str) -> Option<u32> {
    let after = line
        .split_once("(PostgreSQL)")
        .map_or(line, |(_, after)| after);
    let word = after
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Refuses a client program older than the server: it may not understand what the server sends.
pub fn check_client_version(program: &str, version: &str, server_major: u32) -> anyhow::Result<()> {
    let Some(major) = major_version(version) else {
        bail!("cannot tell the version of {program} from `{version}`");
    };
    if major < server_major {
        bail!(
            "{program} {major} is older than the server (PostgreSQL {server_major}) and cannot back it up: \
             install the PostgreSQL {server_major} programs or point backup.pg_bin at them"
        );
    }
    Ok(())
}

/// The connection string for a pg_* program without its password, and the password, which goes to the
/// program in PGPASSWORD (never in its arguments, which any user can read in the process list).
pub fn tool_connection(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let (bare, password) = crate::config::split_password(url)
        .ok_or_else(|| anyhow::anyhow!("the database url is not a valid url"))?;
    Ok((bare.to_string(), password))
}

/// What a program said and how it ended.
struct ProgramOutput {
    status: ExitStatus,
    /// The last lines of its stderr that the line filter kept.
    stderr: Vec<String>,
}

impl ProgramOutput {
    /// The stderr lines, without the `program: ` prefix, joined for an error message.
    fn problems(&self, program: &str) -> String {
        let lines = problem_lines(program, &self.stderr);
        if lines.is_empty() {
            "it printed nothing".into()
        } else {
            lines.join("; ")
        }
    }
}

fn problem_lines(program: &str, lines: &[String]) -> Vec<String> {
    let prefix = format!("{program}: ");
    lines
        .iter()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l).trim().to_owned())
        .map(|l| l.strip_prefix("error: ").map(str::to_owned).unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Kills a process group when dropped, unless disarmed.
struct KillGroupOnDrop {
    group: Option<i32>,
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            kill_group(group);
        }
    }
}

/// SIGKILL to every process of process group `group`.
fn kill_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// Runs `command` in a process group of its own, reading its stderr line by line (`keep` says which
/// lines go into the tail kept for errors), within `timeout`. When it fails, times out, or the future is
/// dropped, the whole group is killed.
async fn run_program(
    mut command: tokio::process::Command,
    name: &str,
    timeout: Duration,
    mut keep: impl FnMut(&str) -> bool,
) -> anyhow::Result<ProgramOutput> {
    command
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let mut group = KillGroupOnDrop {
        group: child.id().map(|id| id as i32),
    };
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        bail!("cannot read the output of {name}");
    };
    let work = async {
        let mut tail: Vec<String> = Vec::new();
        let read_stderr = async {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                if reader.read_until(b'\n', &mut buf).await? == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf);
                // On a terminal, progress lines end with \r instead of \n.
                for line in text.split(['\r', '\n']).filter(|l| !l.trim().is_empty()) {
                    if keep(line) {
                        tail.push(line.to_owned());
                        if tail.len() > STDERR_TAIL {
                            tail.remove(0);
                        }
                    }
                }
            }
            Ok::<_, std::io::Error>(())
        };
        // A forked helper (pg_basebackup's WAL streamer) shares the pipes: when the program fails, its
        // group is killed at once, so a helper left behind cannot keep the pipes open until the timeout.
        let waiting = async {
            let status = child.wait().await?;
            if !status.success()
                && let Some(group) = group.group
            {
                kill_group(group);
            }
            Ok::<_, std::io::Error>(status)
        };
        let mut sink = Vec::new();
        let (out, err, status) = tokio::join!(stdout.read_to_end(&mut sink), read_stderr, waiting);
        out?;
        err?;
        let status = status?;
        Ok::<_, std::io::Error>(ProgramOutput {
            status,
            stderr: tail,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(output)) => {
            if output.status.success() {
                group.group = None;
            }
            Ok(output)
        }
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot run {name}")),
        Err(_) => bail!(
            "{name} did not finish within {} (backup.timeout)",
            humantime::format_duration(timeout)
        ),
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

/// Feeds one stderr line of `pg_basebackup --progress` to the bar; `false` for lines that are progress
/// (not worth keeping for an error message).
fn show_progress(bar: &ProgressBar, line: &str) -> bool {
    if let Some((done, total)) = parse_progress(line) {
        bar.set_message("pg_basebackup");
        bar.set_length(total * 1024);
        bar.set_position(done * 1024);
        return false;
    }
    if line.contains("waiting for checkpoint") {
        bar.set_message("waiting for the checkpoint");
        return false;
    }
    true
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

/// Writes `backup.json` into `folder` in one step: a temporary file beside the folder (never inside it,
/// where pg_verifybackup would find it), synced, then renamed into place.
fn write_metadata(folder: &Path, metadata: &Metadata) -> anyhow::Result<()> {
    let parent = folder.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{}.json.tmp", metadata.id));
    let text = serde_json::to_vec_pretty(metadata)?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, folder.join(METADATA_FILE))
    };
    write().with_context(|| format!("cannot write {}", folder.join(METADATA_FILE).display()))?;
    sync_folder(folder);
    Ok(())
}

/// Flushes a folder's entries (a rename) to disk; best effort.
fn sync_folder(folder: &Path) {
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
}

/// Reads a backup's `backup.json`.
pub fn read_metadata(folder: &Path) -> anyhow::Result<Metadata> {
    let path = folder.join(METADATA_FILE);
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Runs pg_verifybackup on `folder`.
async fn verify_folder(
    pg_verifybackup: &Path,
    folder: &Path,
    timeout: Duration,
) -> anyhow::Result<Verification> {
    let mut command = tokio::process::Command::new(pg_verifybackup);
    command.arg("--ignore").arg(METADATA_FILE).arg(folder);
    let output = run_program(command, "pg_verifybackup", timeout, |_| true).await?;
    let ok = output.status.success();
    let mut problems = if ok {
        Vec::new()
    } else {
        problem_lines("pg_verifybackup", &output.stderr)
    };
    if !ok && problems.is_empty() {
        problems.push(format!("pg_verifybackup ended with {}", output.status));
    }
    Ok(Verification {
        ok,
        at: Utc::now(),
        problems,
    })
}

/// `backup verify ID`: checks backup `id` again with pg_verifybackup and records the result in its
/// `backup.json` (retention counts only backups whose latest verification passed).
pub async fn verify(config: &Config, id: &str) -> anyhow::Result<Verification> {
    let folder = backup_folder(&config.backup.dir, id)?;
    let mut metadata = read_metadata(&folder)?;
    let pg_verifybackup = find_program(&config.backup.pg_bin, "pg_verifybackup")?;
    let verification = verify_folder(&pg_verifybackup, &folder, config.backup.timeout).await?;
    metadata.verification = verification.clone();
    write_metadata(&folder, &metadata)?;
    if verification.ok {
        info!(message = "backup verified", id);
    } else {
        warn!(message = "backup failed verification", id, problems = %verification.problems.join("; "));
    }
    Ok(verification)
}

/// The folder of complete backup `id` in `dir`.
fn backup_folder(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    if !is_backup_id(id) {
        bail!("`{id}` is not a backup id");
    }
    let folder = dir.join(id);
    if !folder.is_dir() {
        bail!("there is no backup {id} in {}", dir.display());
    }
    Ok(folder)
}

/// One folder of the backup folder.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The folder's name (with `.partial` for an incomplete one).
    pub id: String,
    pub path: PathBuf,
    /// `None` for an incomplete folder, or one whose `backup.json` cannot be read.
    pub metadata: Option<Metadata>,
    /// Why there is no metadata.
    pub problem: Option<String>,
}

/// The backups in `dir`, oldest first; none when `dir` does not exist yet.
pub fn list(dir: &Path) -> anyhow::Result<Vec<Listed>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the backup folder {}", dir.display()));
        }
    };
    let mut listed = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot read the backup folder {}", dir.display()))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if id.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let path = entry.path();
        let (metadata, problem) = if id.ends_with(PARTIAL_SUFFIX) {
            (
                None,
                Some("incomplete: a backup being written, or left by a crash".to_owned()),
            )
        } else {
            match read_metadata(&path) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            }
        };
        listed.push(Listed {
            id,
            path,
            metadata,
            problem,
        });
    }
    listed.sort_by(|a, b| {
        let at = |l: &Listed| l.metadata.as_ref().map(|m| m.started_at);
        (at(a), &a.id).cmp(&(at(b), &b.id))
    });
    Ok(listed)
}

/// Applies retention to `dir`: deletes what [`retention::to_delete`] chooses among the complete backups.
/// Each is first renamed to a hidden `.<id>.deleting`, so a crash mid-way never leaves a half-deleted
/// folder that looks like a backup. Returns the deleted ids.
pub fn prune(dir: &Path, keep: usize) -> anyhow::Result<Vec<String>> {
    let candidates: Vec<retention::Candidate> = list(dir)?
        .into_iter()
        .filter_map(|l| {
            l.metadata.map(|m| retention::Candidate {
                id: l.id,
                started_at: m.started_at,
                verified: m.verification.ok,
            })
        })
        .collect();
    let doomed = retention::to_delete(&candidates, keep);
    for id in &doomed {
        let trash = dir.join(format!(".{id}.deleting"));
        std::fs::rename(dir.join(id), &trash)
            .with_context(|| format!("cannot move backup {id} out of the way"))?;
        sync_folder(dir);
        std::fs::remove_dir_all(&trash)
            .with_context(|| format!("cannot delete {}", trash.display()))?;
        info!(message = "backup deleted by retention", id = %id, keep);
    }
    Ok(doomed)
}

/// `backup list`: one line per backup.
pub fn render_list(listed: &[Listed]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "STARTED (UTC)".into(),
        "TOOK".into(),
        "SIZE".into(),
        "WAL (TIMELINE START END)".into(),
        "SERVER".into(),
        "VERIFIED".into(),
    ]];
    for l in listed {
        let row = match &l.metadata {
            Some(m) => [
                l.id.clone(),
                m.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                format!("{}s", (m.finished_at - m.started_at).num_seconds()),
                human_bytes(m.bytes),
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
                l.problem.clone().unwrap_or_default(),
            ],
        };
        rows.push(row);
    }
    crate::table::render(&rows)
}

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_times_made_unique() {
        let at: DateTime<Utc> = "2026-01-03T02:00:00Z".parse().unwrap();
        assert_eq!(new_id(at, |_| false), "20260103T020000Z");
        assert_eq!(
            new_id(at, |id| id == "20260103T020000Z"),
            "20260103T020000Z-2"
        );
        assert_eq!(
            new_id(at, |id| id == "20260103T020000Z"
                || id == "20260103T020000Z-2"),
            "20260103T020000Z-3"
        );
        assert!(is_backup_id("20260103T020000Z-2"));
        for bad in ["", "..", "a/b", "x.partial", "../etc"] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }

    #[test]
    fn versions() {
        let check =
            |line: &str, expected: Option<u32>| assert_eq!(major_version(line), expected, "{line}");
        check(
            "pg_basebackup (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)",
            Some(15),
        );
        check("pg_basebackup (PostgreSQL) 16beta1", Some(16));
        check("pg_basebackup (PostgreSQL) 9.6.24", Some(9));
        check("postgres (PostgreSQL) 17.2", Some(17));
        check("something else", None);
        assert!(
            check_client_version("pg_basebackup", "pg_basebackup (PostgreSQL) 16.1", 15).is_ok()
        );
        assert!(
            check_client_version("pg_basebackup", "pg_basebackup (PostgreSQL) 15.1", 15).is_ok()
        );
        let error = check_client_version("pg_basebackup", "pg_basebackup (PostgreSQL) 14.9", 15)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "pg_basebackup 14 is older than the server (PostgreSQL 15) and cannot back it up: install the \
             PostgreSQL 15 programs or point backup.pg_bin at them"
        );
        let error = check_client_version("pg_basebackup", "", 15)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "cannot tell the version of pg_basebackup from ``");
    }

    #[test]
    fn the_password_goes_to_the_environment_not_the_arguments() {
        let (conninfo, password) = tool_connection(
            "postgres://backup:s3cr%40t%2Fx@db.example:5432/userpipe?sslmode=require",
        )
        .unwrap();
        assert_eq!(
            conninfo,
            "postgres://backup@db.example:5432/userpipe?sslmode=require"
        );
        assert_eq!(password.as_deref(), Some("s3cr@t/x"));
        let (conninfo, password) =
            tool_connection("postgres://postgres@127.0.0.1:55432/postgres").unwrap();
        assert_eq!(conninfo, "postgres://postgres@127.0.0.1:55432/postgres");
        assert_eq!(password, None);
        let (conninfo, password) =
            tool_connection("postgres://backup@db.example/userpipe?password=q%26r").unwrap();
        assert_eq!(conninfo, "postgres://backup@db.example/userpipe");
        assert_eq!(password.as_deref(), Some("q&r"));
    }

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

    #[test]
    fn problems_lose_the_program_prefix() {
        let lines = vec![
            "pg_verifybackup: error: checksum mismatch for file \"base/1/112\"".to_owned(),
            "pg_verifybackup: error: \"base/1/1259\" is present in the manifest but not on disk"
                .to_owned(),
            "pg_basebackup: hint: something".to_owned(),
        ];
        assert_eq!(
            problem_lines("pg_verifybackup", &lines),
            [
                "checksum mismatch for file \"base/1/112\"",
                "\"base/1/1259\" is present in the manifest but not on disk",
                "pg_basebackup: hint: something",
            ]
        );
    }

    #[test]
    fn sizes_read_easily() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(23_586_816), "22.5 MiB");
    }
}
