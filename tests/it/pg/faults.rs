//! Faults around PostgreSQL operations: a full disk under a backup or the WAL archive, userpipe killed
//! while pg_basebackup runs, and drills cancelled or left behind.

use std::collections::BTreeSet;
use std::time::Duration;

use userpipe::pg::backup;
use userpipe::scheduler::journal::Status;

use super::helpers::*;
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::small_fs::SmallFs;
use crate::support::wait_for;

const KB: u64 = 1024;
const MB: u64 = 1024 * KB;

/// Whether a failed backup's error says that the disk is full.
fn says_full(error: &str) -> bool {
    error.contains("No space left on device") || error.contains("is full")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_fills_its_folder_fails_cleanly_and_the_next_works_once_there_is_room() {
    let cluster = TestCluster::start();
    let Ops {
        db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    let small = SmallFs::mount(&dir.path().join("small"), 20 * MB, "root");
    config.backup.dir = small.path.join("backups");
    let text = "job = \"base-backup\"\ncron = \"@yearly\"\n";

    // A backup needs about 40 MB: pg_basebackup runs out of room part way.
    let run = fire(&config, &db, "backup_full", text).await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(
        error.starts_with("pg_basebackup failed") && says_full(&error),
        "{error}"
    );
    assert!(
        names(&config.backup.dir).is_empty(),
        "{:?}",
        names(&config.backup.dir)
    );

    // How much room one backup takes; then the room runs out at each of its last steps in turn (the
    // last files of pg_basebackup, its manifest, backup.json), a page at a time.
    small.resize(512 * MB);
    let first = backup::run(&config, false)
        .await
        .expect("a backup with room");
    let needs = small.used();
    std::fs::remove_dir_all(&first.path).unwrap();
    for room in (needs - 28 * KB..needs).step_by(4 * KB as usize) {
        small.resize(room);
        let error = match backup::run(&config, false).await {
            Ok(report) => panic!("a backup of {} fit in {room} bytes", report.bytes),
            Err(e) => format!("{e:#}"),
        };
        assert!(says_full(&error), "with {room} bytes: {error}");
        assert!(
            names(&config.backup.dir).is_empty(),
            "with {room} bytes, {error}: {:?} left",
            names(&config.backup.dir)
        );
    }

    small.resize(512 * MB);
    let run = fire(&config, &db, "backup_room", text).await;
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.error);
    let id = run.detail.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(names(&config.backup.dir), BTreeSet::from([id]));
}

#[test]
fn archive_script_fails_on_a_full_archive_leaving_no_file_and_records_why() {
    let dir = tempfile::tempdir().unwrap();
    let small = SmallFs::mount(&dir.path().join("archive"), MB, "root");
    // Run as the server runs it: from a data folder, with the segment under pg_wal.
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("pg_wal")).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let segment = "000000010000000000000001";
    let bytes: Vec<u8> = (0..4 * MB).map(|i| (i % 251) as u8).collect();
    std::fs::write(data.join("pg_wal").join(segment), &bytes).unwrap();
    let archive = |target: &std::path::Path| {
        std::process::Command::new("sh")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pgconf/archive-wal.sh"))
            .arg(format!("pg_wal/{segment}"))
            .arg(target)
            .current_dir(&data)
            .output()
            .unwrap()
    };

    let out = archive(&small.path.join(segment));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(names(&small.path).is_empty(), "{:?}", names(&small.path));
    let kept = std::fs::read_to_string(data.join("archive-wal.failed")).unwrap();
    assert!(
        kept.starts_with(&format!("cannot copy pg_wal/{segment} to "))
            && kept.contains("No space left on device"),
        "{kept}"
    );

    small.resize(8 * MB);
    let out = archive(&small.path.join(segment));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(small.path.join(segment)).unwrap(), bytes);
    assert_eq!(names(&small.path), BTreeSet::from([segment.to_owned()]));
    assert!(
        !data.join("archive-wal.failed").exists(),
        "a success clears the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_archive_fails_pgconf_enforce_with_the_archivers_error() {
    // The archive is a small file system of its own, reachable by the server's user.
    let place = tempfile::tempdir().unwrap();
    let chown = std::process::Command::new("chown")
        .arg("postgres:")
        .arg(place.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let script = place.path().join("archive-wal.sh");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pgconf/archive-wal.sh"),
        &script,
    )
    .unwrap();
    let small = SmallFs::mount(&place.path().join("archive"), 8 * MB, "postgres");
    let command = format!("{} %p {}/%f", script.display(), small.path.display());
    let cluster = TestCluster::start_with(ClusterOptions {
        archiving: true,
        archive_command: Some(command.clone()),
        ..Default::default()
    });
    let Ops {
        db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    config.pgconf.file = dir.path().join("archiving.conf");
    std::fs::write(
        &config.pgconf.file,
        format!("wal_level = replica\narchive_mode = on\narchive_command = '{command}'\n"),
    )
    .unwrap();
    config.backup.wal_archive = small.path.clone();

    // A 16 MB segment does not fit in 8 MB.
    let segment = switch_and_wait_for_an_archiving_failure(&cluster).await;
    assert!(names(&small.path).is_empty(), "{:?}", names(&small.path));

    let text = "job = \"pgconf-enforce\"\ncron = \"@yearly\"\n";
    let run = fire(&config, &db, "enforce_full", text).await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(
        error.starts_with(&format!("archiving fails: the last attempt, for {segment}")),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "failures counted): cannot copy pg_wal/{segment} to "
        )) && error.ends_with("No space left on device"),
        "{error}"
    );
    let archiver = &run.detail.unwrap()["archiver"];
    assert!(
        archiver["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("No space left on device")),
        "{archiver}"
    );

    // Room again: the archiver, woken by the next segment, catches up and the run passes.
    small.resize(64 * MB);
    let mut conn = cluster.connect().await;
    sqlx::query("CREATE TABLE filler AS SELECT 1 AS n")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_switch_wal()")
        .execute(&mut conn)
        .await
        .unwrap();
    let archived = small.path.join(&segment);
    wait_for(
        &format!("{segment} in the archive"),
        Duration::from_secs(60),
        || {
            let there = archived.exists().then_some(());
            async move { there }
        },
    )
    .await;
    assert_eq!(std::fs::metadata(&archived).unwrap().len(), 16 * MB);
    let run = wait_for("a passing enforce run", Duration::from_secs(30), || async {
        let run = fire(&config, &db, &crate::support::unique("enforce_room"), text).await;
        (run.status == Status::Succeeded).then_some(run)
    })
    .await;
    assert_eq!(
        run.detail.unwrap()["archiver"]["last_failure"],
        serde_json::Value::Null
    );
}
