//! The archive script (`pgconf/archive-wal.sh`), run as the server runs it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::wait_for;

use super::helpers::names;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pgconf/archive-wal.sh")
}

/// `sh archive-wal.sh SOURCE TARGET`, as the server runs it (POSIX sh).
fn archive(source: &Path, target: &Path) -> Output {
    Command::new("sh")
        .arg(script())
        .arg(source)
        .arg(target)
        .output()
        .expect("run archive-wal.sh")
}

fn segment_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn archive_script_accepts_an_identical_target_and_refuses_a_different_one() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    std::fs::create_dir(&archive_dir).unwrap();
    let source = dir.path().join("000000010000000000000001");
    let target = archive_dir.join("000000010000000000000001");
    let first = segment_bytes(1, 256 * 1024);
    std::fs::write(&source, &first).unwrap();

    let out = archive(&source, &target);
    assert!(out.status.success(), "first archive: {out:?}");
    assert_eq!(std::fs::read(&target).unwrap(), first);
    assert_eq!(
        names(&archive_dir),
        BTreeSet::from(["000000010000000000000001".to_owned()]),
        "no temporary file is left"
    );

    // Archived again after a crash: the same bytes are already there, which is success.
    let out = archive(&source, &target);
    assert!(out.status.success(), "identical re-archive: {out:?}");
    assert_eq!(std::fs::read(&target).unwrap(), first);

    // Different bytes under the same name: refused, and the archived file is untouched.
    std::fs::write(&source, segment_bytes(2, 256 * 1024)).unwrap();
    let out = archive(&source, &target);
    assert!(!out.status.success(), "a different target must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists with different contents"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), first);
    assert_eq!(names(&archive_dir).len(), 1);
}

#[test]
fn archive_script_fails_when_the_target_folder_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("000000010000000000000001");
    std::fs::write(&source, segment_bytes(1, 1024)).unwrap();
    let missing = dir.path().join("not-mounted");
    let out = archive(&source, &missing.join("000000010000000000000001"));
    assert!(!out.status.success(), "a missing folder must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!missing.exists(), "the script never creates the folder");
}

#[tokio::test]
async fn archive_script_never_shows_a_partial_file_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    std::fs::create_dir(&archive_dir).unwrap();
    // The source is a FIFO: the copy can only go as far as the test has written, so the test can look
    // at the folder while the copy is half done.
    let fifo = dir.path().join("000000010000000000000002");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let target = archive_dir.join("000000010000000000000002");
    let data = segment_bytes(3, 4 * 1024 * 1024);
    let half = data.len() / 2;

    // Watch the final name for the whole run: whenever it exists it must hold everything.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, target, full) = (watching.clone(), target.clone(), data.len() as u64);
        std::thread::spawn(move || {
            let mut partial_sightings = 0;
            while watching.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::metadata(&target)
                    && meta.len() != full
                {
                    partial_sightings += 1;
                }
            }
            partial_sightings
        })
    };

    let mut child = Command::new("sh")
        .arg(script())
        .arg(&fifo)
        .arg(&target)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the fifo (the script's cp opens the other end)");
    writer.write_all(&data[..half]).unwrap();
    writer.flush().unwrap();

    let temporary = wait_for(
        "the first half in a temporary file",
        Duration::from_secs(10),
        || {
            let found = names(&archive_dir).into_iter().find(|n| {
                n.starts_with(".000000010000000000000002.tmp")
                    && std::fs::metadata(archive_dir.join(n)).is_ok_and(|m| m.len() == half as u64)
            });
            async move { found }
        },
    )
    .await;
    assert!(
        !target.exists(),
        "half copied ({temporary}), the final name must not exist yet"
    );

    writer.write_all(&data[half..]).unwrap();
    drop(writer);
    let status = child.wait().unwrap();
    watching.store(false, Ordering::Relaxed);
    assert!(status.success(), "archive-wal.sh failed: {status}");
    assert_eq!(
        watcher.join().unwrap(),
        0,
        "a partial file was seen under the final name"
    );
    assert_eq!(std::fs::read(&target).unwrap(), data);
    assert_eq!(
        names(&archive_dir),
        BTreeSet::from(["000000010000000000000002".to_owned()]),
        "the temporary file is gone"
    );
}
