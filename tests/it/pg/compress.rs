//! Compressed backups (`backup.compress = "zstd"`): stored as `base.tar.zst` beside `backup.json` and the
//! manifest, listed with both sizes, verified, drilled and restored from the archive file; what a crash
//! left is finished by the next run; a damaged archive fails verification.

use std::collections::BTreeSet;

use bytesize::ByteSize;
use userpipe::config::BackupCompression;
use userpipe::pg::{backup, drill};

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_backup_lists_both_sizes_verifies_drills_and_restores() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db: _db,
        dir,
        backups: _,
        mut config,
        ..
    } = ops(&cluster).await;
    config.backup.compress = BackupCompression::Zstd;

    insert_users(&mut conn, 100).await;
    let report = backup::run(&config, false).await.expect("a backup");
    assert_eq!(report.compress_error, None);
    let compressed = report.compressed.clone().expect("compressed");
    assert_eq!(
        names(&report.path),
        BTreeSet::from([
            "backup.json".to_owned(),
            "backup_manifest".to_owned(),
            "base.tar.zst".to_owned()
        ]),
        "only the archive, its metadata and its manifest stay"
    );
    let on_disk = std::fs::metadata(report.path.join("base.tar.zst"))
        .unwrap()
        .len();
    assert_eq!(compressed.bytes, on_disk);
    assert!(
        compressed.bytes < report.bytes / 2,
        "{} of {} bytes",
        compressed.bytes,
        report.bytes
    );
    let metadata = backup::read_metadata(&report.path).unwrap();
    assert_eq!(
        metadata.bytes, report.bytes,
        "the plain size stays recorded"
    );
    assert_eq!(metadata.compressed.as_ref(), Some(&compressed));

    let list = stdout(&userpipe(&config, dir.path(), &["backup", "list"]));
    let size = |bytes: u64| ByteSize(bytes).display().iec().to_string();
    for shown in [
        size(report.bytes),
        format!("{} zstd", size(compressed.bytes)),
    ] {
        assert!(list.contains(&shown), "{shown:?} not in {list}");
    }

    // verify unpacks into the scratch folder, checks the copy, and removes it.
    let verify = userpipe(&config, dir.path(), &["backup", "verify", &report.id]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));
    assert!(names(&config.backup.scratch).is_empty());

    // The drill and a restore recover every row, the backup's and the archive's.
    insert_users(&mut conn, 50).await;
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let drilled = drill::run(&config, None).await.expect("a drill");
    assert_eq!(
        (drilled.backup_id.as_str(), drilled.recovered.rows),
        (report.id.as_str(), 150)
    );
    let to = cluster.root().join("restored");
    let restore = userpipe(
        &config,
        dir.path(),
        &[
            "backup",
            "restore",
            "--latest",
            "--to",
            to.to_str().unwrap(),
            "--verify",
        ],
    );
    assert_eq!(
        code(&restore),
        0,
        "{}{}",
        stdout(&restore),
        String::from_utf8_lossy(&restore.stderr)
    );
    assert!(
        stdout(&restore).contains("recovered 150 rows"),
        "{}",
        stdout(&restore)
    );
    let restored = names(&to);
    assert!(restored.contains("PG_VERSION") && restored.contains("recovery.signal"));
    assert!(
        !restored.contains("base.tar.zst") && !restored.contains("backup_manifest"),
        "{restored:?}"
    );

    // A crash while compressing left a temporary archive; the next run removes it.
    let tmp = report.path.join(".base.tar.zst.tmp");
    std::fs::write(&tmp, b"half an archive").unwrap();
    let second = backup::run(&config, false).await.expect("a second backup");
    assert!(second.compressed.is_some());
    assert!(!tmp.exists(), "the next run removes a half-written archive");

    // A damaged archive fails verification, which says so and is recorded.
    let path = report.path.join("base.tar.zst");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let verify = userpipe(&config, dir.path(), &["backup", "verify", &report.id]);
    assert_eq!(code(&verify), 1, "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("base.tar.zst"),
        "{}",
        stdout(&verify)
    );
    assert!(!backup::read_metadata(&report.path).unwrap().verification.ok);
    assert!(names(&config.backup.scratch).is_empty());
}
