//! The backup folder as a catalogue: each complete backup's `backup.json`, listing, and applying retention.
//! A folder without the `.partial` suffix is complete and was verified when made.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::retention;
use crate::config::Config;
use crate::pg::archive::expire::oldest_start;
use crate::pg::archive::{Coverage, Expiry, KeptBackup, expire, gaps};

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
    /// Set once the backup is stored as `base.tar.zst` (`backup.compress`); `bytes` stays the plain size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<Compressed>,
}

/// What compressing a backup gave (`backup.compress`), recorded in its `backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compressed {
    /// `zstd`.
    pub format: String,
    /// The size of `base.tar.zst`.
    pub bytes: u64,
    /// How long packing and compressing took.
    pub duration_ms: u64,
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

/// Where the drill and `backup verify` make their private folders: `backup.scratch`, or the system's
/// temporary folder; created when missing, and absolute.
pub fn scratch_parent(config: &Config) -> anyhow::Result<PathBuf> {
    let parent = if config.backup.scratch.as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        config.backup.scratch.clone()
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create the scratch parent {}", parent.display()))?;
    std::fs::canonicalize(&parent)
        .with_context(|| format!("cannot open the scratch parent {}", parent.display()))
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

/// What [`prune`] did, or in a dry run would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    /// Backups deleted by retention, oldest first.
    pub deleted: Vec<String>,
    /// Archived WAL that no kept backup needs, expired afterwards.
    pub wal: Expiry,
}

/// Applies retention to `dir`, then expires the WAL in `archive` that no kept backup needs. A backup is
/// first renamed to a hidden `.<id>.deleting`, so a crash mid-way never leaves a half-deleted folder that
/// looks like a backup. A dry run deletes nothing and says what would go.
pub fn prune(dir: &Path, archive: &Path, keep: usize, dry_run: bool) -> anyhow::Result<Pruned> {
    let listed = list(dir)?;
    let candidates: Vec<retention::Candidate> = listed
        .iter()
        .filter_map(|l| {
            l.metadata.as_ref().map(|m| retention::Candidate {
                id: l.id.clone(),
                started_at: m.started_at,
                verified: m.verification.ok,
            })
        })
        .collect();
    let deleted = retention::to_delete(&candidates, keep);
    if !dry_run {
        for id in &deleted {
            let trash = dir.join(format!(".{id}.deleting"));
            std::fs::rename(dir.join(id), &trash)
                .with_context(|| format!("cannot move backup {id} out of the way"))?;
            sync_folder(dir);
            std::fs::remove_dir_all(&trash)
                .with_context(|| format!("cannot delete {}", trash.display()))?;
            info!(message = "backup deleted by retention", id = %id, keep);
        }
    }
    let wal = expire(archive, &kept_backups(&listed, &deleted), dry_run)?;
    Ok(Pruned { deleted, wal })
}

/// The complete backups of `listed` but those in `deleted`, as WAL expiry and the gap check see them. A
/// backup whose `backup.json` cannot be read names no first segment, so nothing is expired for it.
pub fn kept_backups(listed: &[Listed], deleted: &[String]) -> Vec<KeptBackup> {
    listed
        .iter()
        .filter(|l| !l.id.ends_with(PARTIAL_SUFFIX) && !deleted.contains(&l.id))
        .map(|l| KeptBackup {
            id: l.id.clone(),
            verified: l.metadata.as_ref().is_some_and(|m| m.verification.ok),
            start_wal: l.metadata.as_ref().and_then(|m| m.start_wal.clone()),
        })
        .collect()
}

/// `backup check`: whether `archive` holds every segment from the oldest backup's first one to the newest
/// archived one. `None` when there is no backup.
pub fn check_archive(dir: &Path, archive: &Path) -> anyhow::Result<Option<Coverage>> {
    let kept = kept_backups(&list(dir)?, &[]);
    let Some(from) = oldest_start(&kept).map_err(|e| anyhow::anyhow!("{e}"))? else {
        return Ok(None);
    };
    Ok(Some(gaps::check(archive, &from)?))
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
