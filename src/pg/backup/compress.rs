//! Compressed backups (`backup.compress = "zstd"`): a verified backup folder packed into one `base.tar.zst`
//! beside its `backup.json` and `backup_manifest`, and unpacked again for `backup verify`, the drill and
//! `backup restore` (which copy a plain backup with `drill::recovery::copy_tree`).
//!
//! Crash-safety: the archive is written as `.base.tar.zst.tmp`, synced, renamed to `base.tar.zst` (the
//! commit), and only then are the plain files removed. So a backup folder holds a complete plain copy, or
//! a complete `base.tar.zst`, or both; readers take `base.tar.zst` whenever it is there, and [`finish`]
//! (run by the next backup run) removes a temporary file or plain files a crash left.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::catalog::{Compressed, METADATA_FILE, read_metadata, sync_folder, write_metadata};

/// The compressed data folder inside a backup folder.
pub const ARCHIVE_FILE: &str = "base.tar.zst";
/// What it is written as until it is complete and synced.
const ARCHIVE_TMP: &str = ".base.tar.zst.tmp";
/// The manifest pg_verifybackup checks the unpacked copy against; kept readable beside the archive.
pub const MANIFEST_FILE: &str = "backup_manifest";
/// zstd's default level: most of the saving for little CPU (higher levels cost several times the time).
const LEVEL: i32 = 3;

/// Whether the backup in `folder` is stored compressed (its `base.tar.zst` is there).
pub fn is_compressed(folder: &Path) -> bool {
    folder.join(ARCHIVE_FILE).is_file()
}

/// The PostgreSQL major version of a backup or data folder: its `PG_VERSION`, or for a compressed backup
/// the version `backup.json` records.
pub fn major_version(folder: &Path) -> anyhow::Result<u32> {
    if is_compressed(folder) && !folder.join("PG_VERSION").exists() {
        let metadata = read_metadata(folder)?;
        return Ok((metadata.server_version_num / 10_000) as u32);
    }
    let text =
        std::fs::read_to_string(folder.join("PG_VERSION")).context("cannot read its PG_VERSION")?;
    text.trim()
        .parse()
        .context("its PG_VERSION is not a number")
}

/// Whether `name`, at the top of a backup folder, is part of the plain data folder (what the archive
/// holds and replaces); `backup.json`, the manifest and the archive itself are not.
pub fn is_plain(name: &str) -> bool {
    name != METADATA_FILE && name != MANIFEST_FILE && name != ARCHIVE_FILE && name != ARCHIVE_TMP
}

/// Packs the verified backup in `folder` into `base.tar.zst` (everything but `backup.json`, the manifest
/// included, symbolic links as links), commits it by a rename, records it in `backup.json`, then removes
/// the plain files. Blocking.
pub fn compress(folder: &Path) -> anyhow::Result<Compressed> {
    let clock = Instant::now();
    let tmp = folder.join(ARCHIVE_TMP);
    let written = write_archive(folder, &tmp);
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
    };
    std::fs::rename(&tmp, folder.join(ARCHIVE_FILE))
        .with_context(|| format!("cannot rename {} to {ARCHIVE_FILE}", tmp.display()))?;
    sync_folder(folder);
    let compressed = Compressed {
        format: "zstd".into(),
        bytes,
        duration_ms: clock.elapsed().as_millis() as u64,
    };
    let mut metadata = read_metadata(folder)?;
    metadata.compressed = Some(compressed.clone());
    write_metadata(folder, &metadata)?;
    remove_plain(folder)?;
    Ok(compressed)
}

/// Writes the tar of `folder`'s plain files and manifest, compressed, to `to`, synced; returns its size.
fn write_archive(folder: &Path, to: &Path) -> std::io::Result<u64> {
    let file = File::create(to)?;
    let mut encoder = zstd::stream::write::Encoder::new(file, LEVEL)?;
    encoder.include_checksum(true)?;
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    let mut names: Vec<String> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_plain(n) || n == MANIFEST_FILE)
        .collect();
    names.sort();
    for name in &names {
        let path = folder.join(name);
        if std::fs::symlink_metadata(&path)?.is_dir() {
            tar.append_dir_all(name, &path)?;
        } else {
            tar.append_path_with_name(&path, name)?;
        }
    }
    let file = tar.into_inner()?.finish()?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// Removes the plain files of a backup folder whose archive is committed.
fn remove_plain(folder: &Path) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(folder).with_context(|| format!("cannot read {}", folder.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_plain(&name) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot remove {} after compressing", path.display()))?;
    }
    sync_folder(folder);
    Ok(())
}

/// Finishes what a crash left in a complete backup folder: removes a temporary archive; when the archive
/// is committed, removes the plain files left beside it and records it in `backup.json`. Returns whether
/// there was anything to do. Only called while holding the backup lock.
pub fn finish(folder: &Path) -> anyhow::Result<bool> {
    let tmp = folder.join(ARCHIVE_TMP);
    let mut did = false;
    if tmp.exists() {
        std::fs::remove_file(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
        did = true;
    }
    if !is_compressed(folder) {
        return Ok(did);
    }
    let mut metadata = read_metadata(folder)?;
    if metadata.compressed.is_none() {
        let bytes = std::fs::metadata(folder.join(ARCHIVE_FILE))?.len();
        metadata.compressed = Some(Compressed {
            format: "zstd".into(),
            bytes,
            duration_ms: 0,
        });
        write_metadata(folder, &metadata)?;
        did = true;
    }
    let plain = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .any(|n| is_plain(&n));
    if plain {
        remove_plain(folder)?;
        did = true;
    }
    Ok(did)
}

/// Unpacks the compressed backup in `folder` into `to` (created with mode 0700, or an existing empty
/// folder): its data folder, with the manifest only when `with_manifest`. Once `cancel` fires it stops
/// before the next file with an `Interrupted` error. Blocking.
pub fn unpack(
    folder: &Path,
    to: &Path,
    with_manifest: bool,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let path = folder.join(ARCHIVE_FILE);
    let unpack = || -> std::io::Result<()> {
        make_private_dir(to)?;
        let decoder = zstd::stream::read::Decoder::new(BufReader::new(File::open(&path)?))?;
        let mut archive = tar::Archive::new(decoder);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        for entry in archive.entries()? {
            if cancel.is_cancelled() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the copy was cancelled",
                ));
            }
            let mut entry = entry?;
            if !with_manifest && entry.path()?.as_os_str() == MANIFEST_FILE {
                continue;
            }
            entry.unpack_in(to)?;
        }
        // Read on to the frame's end, where zstd checks its checksum of the whole content.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
        Ok(())
    };
    unpack().map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot unpack {}: {e}", path.display()))
    })
}

/// Creates `to` with mode 0700, unless it is an existing folder.
fn make_private_dir(to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if to.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().mode(0o700).create(to)
}

/// The size of what a backup folder stores: its archive when compressed, else `bytes`, the plain size.
pub fn stored_bytes(folder: &Path, bytes: u64) -> u64 {
    std::fs::metadata(folder.join(ARCHIVE_FILE)).map_or(bytes, |m| m.len())
}

/// A folder for an unpacked copy under `parent`, removed when dropped.
pub struct Unpacked {
    pub path: PathBuf,
}

impl Unpacked {
    /// Unpacks the backup in `folder` (the manifest included) into a new private folder under `parent`.
    pub fn new(folder: &Path, parent: &Path) -> anyhow::Result<Self> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let unpacked = Self {
            path: parent.join(format!("userpipe-verify-{}", &token[..12])),
        };
        unpack(folder, &unpacked.path, true, &CancellationToken::new())?;
        Ok(unpacked)
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(message = "cannot remove an unpacked backup copy", path = %self.path.display(), error = %e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use chrono::Utc;

    use super::*;
    use crate::pg::backup::catalog::{Metadata, Verification};

    /// Every path under `root` with what it is: a file's mode and bytes, a folder's mode, a link's target.
    fn tree(root: &Path) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.strip_prefix(root).unwrap().display().to_string();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let mode = meta.permissions().mode() & 0o777;
                let what = if meta.is_symlink() {
                    format!("link {}", std::fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    format!("dir {mode:o}")
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    format!("file {mode:o} {}", String::from_utf8_lossy(&bytes))
                };
                found.insert(name, what);
            }
        }
        found
    }

    /// A backup folder like pg_basebackup's, with its manifest and `backup.json`.
    fn backup_folder(root: &Path) -> PathBuf {
        let folder = root.join("20260103T020000Z");
        let file = |name: &str, text: &str, mode: u32| {
            let path = folder.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        file("PG_VERSION", "15\n", 0o600);
        file("base/1/1259", &"relation pages ".repeat(1000), 0o600);
        file("pg_wal/000000010000000000000003", "wal", 0o600);
        file("global/pg_control", "control", 0o640);
        std::fs::create_dir(folder.join("pg_wal/archive_status")).unwrap();
        std::fs::create_dir(folder.join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink("/elsewhere/tablespace", folder.join("pg_tblspc/16384"))
            .unwrap();
        for dir in [
            "base",
            "base/1",
            "pg_wal",
            "pg_wal/archive_status",
            "global",
            "pg_tblspc",
        ] {
            let perms = std::fs::Permissions::from_mode(0o700);
            std::fs::set_permissions(folder.join(dir), perms).unwrap();
        }
        file(MANIFEST_FILE, "{\"Files\": []}", 0o600);
        let at = Utc::now();
        let metadata = Metadata {
            id: "20260103T020000Z".into(),
            label: "userpipe 20260103T020000Z".into(),
            started_at: at,
            finished_at: at,
            bytes: 20_000,
            server_version: "15.18".into(),
            server_version_num: 150018,
            pg_basebackup: "pg_basebackup (PostgreSQL) 15.18".into(),
            timeline: 1,
            start_lsn: "0/3000028".into(),
            end_lsn: "0/3000100".into(),
            start_wal: Some("000000010000000000000003".into()),
            verification: Verification {
                ok: true,
                at,
                problems: Vec::new(),
            },
            compressed: None,
        };
        write_metadata(&folder, &metadata).unwrap();
        folder
    }

    fn without(mut tree: BTreeMap<String, String>, names: &[&str]) -> BTreeMap<String, String> {
        for name in names {
            tree.remove(*name);
        }
        tree
    }

    #[test]
    fn a_compressed_backup_unpacks_to_the_same_files_modes_and_links() {
        let root = tempfile::tempdir().unwrap();
        let folder = backup_folder(root.path());
        let plain = tree(&folder);
        assert_eq!(major_version(&folder).unwrap(), 15);

        let compressed = compress(&folder).unwrap();
        assert_eq!(
            tree(&folder).keys().collect::<Vec<_>>(),
            [METADATA_FILE, MANIFEST_FILE, ARCHIVE_FILE],
            "only the archive, the metadata and the manifest stay"
        );
        assert!(is_compressed(&folder));
        let metadata = read_metadata(&folder).unwrap();
        assert_eq!(metadata.compressed.as_ref(), Some(&compressed));
        assert_eq!(
            compressed.bytes,
            std::fs::metadata(folder.join(ARCHIVE_FILE)).unwrap().len()
        );
        assert!(compressed.bytes < 15_000, "{compressed:?}");
        assert_eq!(major_version(&folder).unwrap(), 15, "from backup.json");

        let out = root.path().join("out");
        unpack(&folder, &out, false, &CancellationToken::new()).unwrap();
        assert_eq!(
            tree(&out),
            without(plain.clone(), &[METADATA_FILE, MANIFEST_FILE])
        );
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let with_manifest = root.path().join("with-manifest");
        unpack(&folder, &with_manifest, true, &CancellationToken::new()).unwrap();
        assert_eq!(tree(&with_manifest), without(plain, &[METADATA_FILE]));
        assert!(!finish(&folder).unwrap(), "nothing left to finish");
    }

    #[test]
    fn a_crash_while_writing_the_archive_leaves_the_plain_backup() {
        let root = tempfile::tempdir().unwrap();
        let folder = backup_folder(root.path());
        let plain = tree(&folder);
        std::fs::write(folder.join(ARCHIVE_TMP), b"\x28\xb5\x2f\xfd half").unwrap();
        assert!(!is_compressed(&folder), "readers take the plain files");

        assert!(finish(&folder).unwrap());
        assert_eq!(tree(&folder), plain, "only the temporary file went");
    }

    #[test]
    fn a_crash_after_the_rename_leaves_a_usable_archive_that_finish_completes() {
        let root = tempfile::tempdir().unwrap();
        let folder = backup_folder(root.path());
        let plain = tree(&folder);
        // The archive committed, then the crash: no metadata update, plain files partly removed.
        write_archive(&folder, &folder.join(ARCHIVE_FILE)).unwrap();
        std::fs::remove_dir_all(folder.join("base")).unwrap();
        let out = root.path().join("out");
        unpack(&folder, &out, false, &CancellationToken::new()).unwrap();
        assert_eq!(
            tree(&out),
            without(plain, &[METADATA_FILE, MANIFEST_FILE]),
            "the archive is read, not the half-removed plain files"
        );

        assert!(finish(&folder).unwrap());
        assert_eq!(
            tree(&folder).keys().collect::<Vec<_>>(),
            [METADATA_FILE, MANIFEST_FILE, ARCHIVE_FILE]
        );
        let recorded = read_metadata(&folder).unwrap().compressed.unwrap();
        assert_eq!(
            recorded.bytes,
            std::fs::metadata(folder.join(ARCHIVE_FILE)).unwrap().len()
        );
    }

    #[test]
    fn a_damaged_archive_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let folder = backup_folder(root.path());
        compress(&folder).unwrap();
        let path = folder.join(ARCHIVE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let out = root.path().join("out");
        let error = unpack(&folder, &out, false, &CancellationToken::new()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("cannot unpack ") && text.contains(ARCHIVE_FILE),
            "{text}"
        );
    }
}
