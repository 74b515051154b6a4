//! WAL expiry: the archived WAL that no kept backup needs, chosen ([`to_remove`], pure) and removed
//! ([`expire`]). Everything before the first segment of the oldest kept backup goes, on every timeline
//! (as `pg_archivecleanup` compares positions); `.history` files and anything that is not WAL stay.
//! Nothing goes while no verified backup is kept, and never a segment from the oldest kept start on.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use tracing::info;

use super::names::WalFile;

/// A backup retention keeps, as expiry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptBackup {
    pub id: String,
    /// Its latest verification passed.
    pub verified: bool,
    /// The first WAL segment it needs (from its `backup_label`).
    pub start_wal: Option<String>,
}

/// The first segment still needed: the oldest start among the kept backups. Why nothing may be
/// removed otherwise: no verified backup is kept, or a kept backup does not name its first segment.
pub fn boundary(kept: &[KeptBackup]) -> Result<String, String> {
    if !kept.iter().any(|b| b.verified) {
        return Err("no verified backup is kept, so no archived WAL is expired".into());
    }
    oldest_start(kept)?.ok_or_else(|| "no backup is kept".into())
}

/// The oldest first segment among `backups` (by position, whatever the timeline); `None` when there
/// is no backup; `Err` when one does not name its first segment.
pub fn oldest_start(backups: &[KeptBackup]) -> Result<Option<String>, String> {
    let mut oldest: Option<&str> = None;
    for backup in backups {
        let start = backup
            .start_wal
            .as_deref()
            .filter(|s| matches!(WalFile::parse(s), WalFile::Segment { .. }))
            .ok_or_else(|| {
                format!(
                    "backup {} does not name its first WAL segment (start_wal in its backup.json)",
                    backup.id
                )
            })?;
        if oldest.is_none_or(|o| start[8..] < o[8..]) {
            oldest = Some(start);
        }
    }
    Ok(oldest.map(str::to_owned))
}

/// The names in `names` that expiry removes given the first segment still needed: segments, `.partial`
/// segments and `.backup` labels whose position is before `boundary`'s, on any timeline. Sorted.
pub fn to_remove<'a>(names: &'a [String], boundary: &str) -> Vec<&'a str> {
    let Some(limit) = boundary.get(8..24) else {
        return Vec::new();
    };
    let mut doomed: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| match WalFile::parse(name) {
            WalFile::Segment { position, .. }
            | WalFile::Partial { position, .. }
            | WalFile::BackupLabel { position, .. } => position < limit,
            WalFile::History { .. } | WalFile::Other => false,
        })
        .collect();
    doomed.sort_unstable();
    doomed
}

/// What expiry did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Expiry {
    /// The first segment kept: the oldest kept backup's start.
    pub kept_from: Option<String>,
    /// The files removed, sorted.
    pub removed: Vec<String>,
    pub bytes_freed: u64,
    /// Why nothing was looked at (no verified backup, no archive folder).
    pub skipped: Option<String>,
    pub dry_run: bool,
}

/// Removes from `archive` what [`to_remove`] chooses for the backups in `kept` (in a dry run, only says
/// what it would remove).
pub fn expire(archive: &Path, kept: &[KeptBackup], dry_run: bool) -> anyhow::Result<Expiry> {
    let skip = |why: String| Expiry {
        skipped: Some(why),
        dry_run,
        ..Default::default()
    };
    let boundary = match boundary(kept) {
        Ok(boundary) => boundary,
        Err(why) => return Ok(skip(why)),
    };
    let entries = match std::fs::read_dir(archive) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(skip(format!(
                "the WAL archive {} (backup.wal_archive) does not exist",
                archive.display()
            )));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the WAL archive {}", archive.display()));
        }
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let mut expiry = Expiry {
        kept_from: Some(boundary.clone()),
        dry_run,
        ..Default::default()
    };
    for name in to_remove(&names, &boundary) {
        let path = archive.join(name);
        let bytes = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if !dry_run {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
        }
        expiry.removed.push(name.to_owned());
        expiry.bytes_freed += bytes;
    }
    if !dry_run && !expiry.removed.is_empty() {
        if let Ok(folder) = std::fs::File::open(archive) {
            let _ = folder.sync_all();
        }
        info!(
            message = "archived WAL expired",
            removed = expiry.removed.len(),
            bytes_freed = expiry.bytes_freed,
            kept_from = %boundary
        );
    }
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(id: &str, verified: bool, start: Option<&str>) -> KeptBackup {
        KeptBackup {
            id: id.into(),
            verified,
            start_wal: start.map(str::to_owned),
        }
    }

    /// `expected`: the names removed when `kept` are the backups left.
    fn check(names: &[&str], kept: &[KeptBackup], expected: &[&str]) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let removed = match boundary(kept) {
            Ok(b) => to_remove(&names, &b),
            Err(_) => Vec::new(),
        };
        assert_eq!(removed, expected, "{kept:?}");
    }

    const ARCHIVE: &[&str] = &[
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000003",
        "000000010000000000000004",
        "000000010000000000000004.00000060.backup",
        "000000010000000000000005",
        "000000010000000000000005.partial",
        "00000002.history",
        "000000020000000000000004",
        "000000020000000000000005",
        ".000000020000000000000006.tmp.4242",
        "NOTES.txt",
    ];

    #[test]
    fn everything_before_the_oldest_kept_start_goes_on_every_timeline() {
        check(
            ARCHIVE,
            &[kept("b", true, Some("000000010000000000000004"))],
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003",
            ],
        );
        // The oldest kept backup is on timeline 2, the segment 4 of timeline 1 is older by position too.
        check(
            ARCHIVE,
            &[
                kept("c", true, Some("000000020000000000000005")),
                kept("b", true, Some("000000010000000000000004")),
            ],
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003",
            ],
        );
        check(
            ARCHIVE,
            &[kept("c", true, Some("000000020000000000000005"))],
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000004.00000060.backup",
                "000000020000000000000004",
            ],
        );
    }

    #[test]
    fn nothing_goes_without_a_verified_backup_or_a_known_start() {
        check(ARCHIVE, &[], &[]);
        check(
            ARCHIVE,
            &[kept("b", false, Some("000000010000000000000004"))],
            &[],
        );
        assert!(boundary(&[]).unwrap_err().contains("no verified backup"));
        let why = boundary(&[
            kept("b", true, Some("000000010000000000000004")),
            kept("c", false, None),
        ])
        .unwrap_err();
        assert!(
            why.starts_with("backup c does not name its first WAL segment"),
            "{why}"
        );
        // A newer unverified backup kept for inspection counts for the boundary only where it is older.
        assert_eq!(
            boundary(&[
                kept("b", true, Some("000000010000000000000004")),
                kept("c", false, Some("000000010000000000000009")),
            ])
            .unwrap(),
            "000000010000000000000004"
        );
    }

    #[test]
    fn the_oldest_start_is_kept_with_its_label() {
        let names: Vec<String> = ARCHIVE.iter().map(|s| s.to_string()).collect();
        let removed = to_remove(&names, "000000010000000000000002");
        assert_eq!(removed, ["000000010000000000000001"]);
        assert!(to_remove(&names, "short").is_empty());
    }
}
