//! Turning a backup copy into a server that recovers from the WAL archive, and reading what recovery did:
//! the `restore_command`, the throwaway configuration, the copy itself, and the archive's segments next to
//! where replay ended. Pure but for the copy and the files it writes.

use std::path::Path;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::pg::backup::{METADATA_FILE, is_compressed, unpack};
use crate::pg::conf::render::quote_conf;

/// `cp '<archive>/%f' '%p'`. The archive's path goes through a shell and PostgreSQL's `%` expansion, so
/// a quote, a `%` or a control character in it is refused rather than escaped.
pub fn restore_command(archive: &Path) -> anyhow::Result<String> {
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

/// Turns the copy into a throwaway server that recovers from the archive: its own configuration (the
/// backup's may name paths, libraries, certificates and an archive_command of the live server), local
/// trust on a private socket, no archiving, the `recovery` settings (restore_command and target), the
/// copy's WAL removed when `empty_wal`, and `recovery.signal`.
pub fn prepare(
    data: &Path,
    socket_dir: &Path,
    port: u16,
    recovery: &[(&str, String)],
    empty_wal: bool,
) -> anyhow::Result<()> {
    let socket = socket_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the scratch folder's path is not UTF-8"))?;
    let mut conf = format!(
        "# Written by userpipe: a throwaway server that recovers one backup, then is removed.\n\
         port = {port}\n\
         listen_addresses = ''\n\
         unix_socket_directories = {socket}\n\
         unix_socket_permissions = 0700\n\
         archive_mode = off\n\
         hot_standby = off\n\
         fsync = off\n\
         synchronous_commit = off\n\
         shared_preload_libraries = ''\n\
         ssl = off\n\
         logging_collector = off\n\
         lc_messages = 'C'\n",
        socket = quote_conf(socket),
    );
    for (name, value) in recovery {
        conf.push_str(&format!("{name} = {value}\n"));
    }
    let write = |name: &str, text: &str| {
        std::fs::write(data.join(name), text)
            .with_context(|| format!("cannot write {name} in the scratch copy"))
    };
    write("postgresql.conf", &conf)?;
    write(
        "postgresql.auto.conf",
        "# The live server's ALTER SYSTEM settings are not used by a throwaway recovery.\n",
    )?;
    // Only the drill's user can reach the socket folder (0700), so local trust lets in no one else.
    write("pg_hba.conf", "local all all trust\n")?;
    write("pg_ident.conf", "")?;
    for name in ["standby.signal", "postmaster.pid", "postmaster.opts"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    if empty_wal {
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
    }
    write("recovery.signal", "")?;
    Ok(())
}

/// The data folder of backup folder `from` into `to`: unpacked when the backup is compressed, else copied
/// ([`copy_tree`]); blocking. Once `cancel` fires it stops (within one chunk, or one file when unpacking).
pub fn copy_backup(from: &Path, to: &Path, cancel: &CancellationToken) -> std::io::Result<()> {
    if is_compressed(from) {
        unpack(from, to, false, cancel)
    } else {
        copy_tree(from, to, true, cancel)
    }
}

/// The copy reads and writes at most this much between two looks at its cancellation.
const COPY_CHUNK: u64 = 8 * 1024 * 1024;

/// Copies the folder `from` to the new folder `to` (mode 0700), or at the top into an existing empty one:
/// files with their permissions, folders, and symbolic links as links. At the top, `backup.json` and
/// `backup_manifest` stay behind. Once `cancel` fires it stops within one chunk of one file, with an
/// `Interrupted` error, and writes nothing more.
pub fn copy_tree(
    from: &Path,
    to: &Path,
    top: bool,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    stop_if(cancel)?;
    if !(top && to.is_dir()) {
        std::fs::DirBuilder::new().mode(0o700).create(to)?;
    }
    for entry in std::fs::read_dir(from)? {
        stop_if(cancel)?;
        let entry = entry?;
        let name = entry.file_name();
        if top && (name == METADATA_FILE || name == "backup_manifest") {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target, false, cancel)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            copy_file(&source, &target, cancel)?;
        }
    }
    Ok(())
}

/// One file, chunk by chunk (the kernel copies each chunk), then its permissions.
fn copy_file(from: &Path, to: &Path, cancel: &CancellationToken) -> std::io::Result<()> {
    use std::io::Read;
    let mut source = std::fs::File::open(from)?;
    let permissions = source.metadata()?.permissions();
    let mut target = std::fs::File::create_new(to)?;
    loop {
        stop_if(cancel)?;
        if std::io::copy(&mut (&mut source).take(COPY_CHUNK), &mut target)? == 0 {
            break;
        }
    }
    target.set_permissions(permissions)
}

fn stop_if(cancel: &CancellationToken) -> std::io::Result<()> {
    if cancel.is_cancelled() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "the copy was cancelled",
        ));
    }
    Ok(())
}

/// The WAL segment files in the archive (24 hex digits), sorted.
pub fn archive_segments(archive: &Path) -> anyhow::Result<Vec<String>> {
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
        assert_eq!(quote_conf("cp '/a/%f' '%p'"), "'cp ''/a/%f'' ''%p'''");
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
    fn the_copy_keeps_files_links_and_modes_and_stops_once_cancelled() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        std::fs::create_dir_all(from.join("base/1")).unwrap();
        std::fs::write(from.join("base/1/112"), vec![7u8; 3 * 1024 * 1024]).unwrap();
        std::fs::write(from.join(METADATA_FILE), "{}").unwrap();
        std::fs::set_permissions(
            from.join("base/1/112"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("base/1", from.join("link")).unwrap();
        let never = CancellationToken::new();
        copy_tree(&from, &to, false, &never).unwrap();
        let copied = std::fs::read(to.join("base/1/112")).unwrap();
        assert_eq!(copied, vec![7u8; 3 * 1024 * 1024]);
        let mode = std::fs::metadata(to.join("base/1/112"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            Path::new("base/1")
        );

        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let stopped = dir.path().join("stopped");
        let error = copy_tree(&from, &stopped, false, &cancelled).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::Interrupted);
        assert!(!stopped.exists(), "nothing is written once cancelled");
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
