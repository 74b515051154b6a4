//! The backup folder as a catalogue: each complete backup's `backup.json`, listing, verifying again, and
//! applying retention. A folder without the `.partial` suffix is complete and was verified when made.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::retention;
use crate::config::Config;
use crate::pg::program::{Line, find_program, problem_lines, run_program};

/// The metadata file inside each backup folder (pg_verifybackup is told to ignore it).
pub const METADATA_FILE: &str = "backup.json";
/// The suffix of a backup being written (or left by a crash; the next run removes it).
pub const PARTIAL_SUFFIX: &str = ".partial";

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

/// The suffix of `backup.json`'s temporary file, `.<id>.json.tmp` beside the backup's folder.
pub const METADATA_TMP_SUFFIX: &str = ".json.tmp";

/// Writes `backup.json` into `folder` in one step: a temporary file beside the folder (never inside it,
/// where pg_verifybackup would find it), synced, then renamed into place. On failure (a full disk) the
/// temporary file is removed; one a crash left is removed by the next backup run.
pub fn write_metadata(folder: &Path, metadata: &Metadata) -> anyhow::Result<()> {
    let parent = folder.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{}{METADATA_TMP_SUFFIX}", metadata.id));
    let text = serde_json::to_vec_pretty(metadata)?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, folder.join(METADATA_FILE))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot write {}", folder.join(METADATA_FILE).display()));
    }
    sync_folder(folder);
    Ok(())
}

/// Flushes a folder's entries (a rename) to disk; best effort.
pub fn sync_folder(folder: &Path) {
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
pub async fn verify_folder(
    pg_verifybackup: &Path,
    folder: &Path,
    timeout: Duration,
) -> anyhow::Result<Verification> {
    let mut command = tokio::process::Command::new(pg_verifybackup);
    command.arg("--ignore").arg(METADATA_FILE).arg(folder);
    let output = run_program(command, "pg_verifybackup", timeout, |_| Line::Problem).await?;
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
pub fn backup_folder(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
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
}
