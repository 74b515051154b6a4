//! The archive check: `pgconf check --archive` and the pgconf-enforce job's `archive_check`, with
//! archiving that works, is off, fails, writes elsewhere, or hangs.

use std::time::Duration;

use userpipe::scheduler::journal::Status;

use super::helpers::*;
use crate::support::cluster::{ClusterOptions, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_check_passes_when_the_switched_segment_reaches_the_archive() {
    let cluster = TestCluster::start_with(ClusterOptions {
        archiving: true,
        ..Default::default()
    });
    let Ops {
        db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    // The desired file as the cluster runs (its archive_timeout is the default, 0).
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "0");
    std::fs::write(
        &config.pgconf.file,
        std::fs::read_to_string(&config.pgconf.file)
            .unwrap()
            .replace("max_wal_senders = 10", "max_wal_senders = 4"),
    )
    .unwrap();
    let before = names(&cluster.archive());

    let check = userpipe(&config, dir.path(), &["pgconf", "check", "--archive"]);
    let said = stdout(&check);
    assert_eq!(code(&check), 0, "{said}");
    let segment = said
        .lines()
        .find_map(|l| l.strip_prefix("archive check: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no archive check line: {said}"))
        .to_owned();
    assert!(!before.contains(&segment), "a new segment: {segment}");
    assert!(cluster.archive().join(&segment).exists());

    let run = fire(
        &config,
        &db,
        "enforce_archive",
        "job = \"pgconf-enforce\"\ncron = \"@yearly\"\n[params]\narchive_check = true\n",
    )
    .await;
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.error);
    let check = &run.detail.unwrap()["archive_check"];
    assert_eq!(check["arrived"], true, "{check}");
    assert!(
        cluster
            .archive()
            .join(check["segment"].as_str().unwrap())
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_check_fails_when_archiving_is_off() {
    let cluster = TestCluster::start();
    let Ops {
        dir, mut config, ..
    } = ops(&cluster).await;
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "60s");
    let check = userpipe(&config, dir.path(), &["pgconf", "check", "--archive"]);
    let said = stdout(&check);
    assert_eq!(code(&check), 3, "archive_mode drifts: {said}");
    assert!(
        said.contains("archive check FAILED: archiving is off (archive_mode = off)"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_check_names_the_failing_commands_last_error() {
    let cluster = TestCluster::start_with(ClusterOptions {
        archiving: true,
        logging_collector: true,
        ..Default::default()
    });
    let Ops {
        db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "60s");
    // The archive volume goes missing for the server; userpipe still sees a folder of its own.
    let gone = cluster.root().join("archive-gone");
    std::fs::rename(cluster.archive(), &gone).unwrap();
    config.backup.wal_archive = gone;

    let run = fire(
        &config,
        &db,
        "enforce_archive_failing",
        "job = \"pgconf-enforce\"\ncron = \"@yearly\"\n[params]\narchive_check = true\napply = false\n",
    )
    .await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("archive check: the archive command fails: its last attempt, for "),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "the server's log says: archive-wal.sh: target folder {} does not exist (archive command failed with exit code 1)",
            cluster.archive().display()
        )),
        "{error}"
    );
    let check = &run.detail.unwrap()["archive_check"];
    assert_eq!(check["arrived"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_check_sees_a_server_archiving_elsewhere_and_a_segment_that_never_comes() {
    // `true` as the archive command: the server counts every segment archived; the folder gets nothing.
    let cluster = TestCluster::start_with(ClusterOptions {
        archiving: true,
        archive_command: Some("true".into()),
        ..Default::default()
    });
    let Ops {
        dir, mut config, ..
    } = ops(&cluster).await;
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "60s");
    let check = userpipe(&config, dir.path(), &["pgconf", "check", "--archive"]);
    let said = stdout(&check);
    assert_ne!(code(&check), 0, "{said}");
    assert!(said.contains("(pg_stat_archiver), but "), "{said}");
    assert!(
        said.contains("archive_command writes somewhere else than backup.wal_archive"),
        "{said}"
    );

    // A command that hangs (a stalled mount) while the hold file exists: the segment does not come
    // within backup.archive_wait.
    let root = tempfile::tempdir().unwrap();
    let hold = root.path().join("hold");
    std::fs::write(&hold, "").unwrap();
    let hung = TestCluster::start_with(ClusterOptions {
        archiving: true,
        archive_command: Some(format!(
            "while [ -e {} ]; do sleep 0.1; done; exit 1",
            hold.display()
        )),
        ..Default::default()
    });
    let Ops {
        dir, mut config, ..
    } = ops(&hung).await;
    config.pgconf.file = desired_archiving(&hung, dir.path(), "60s");
    config.backup.archive_wait = Duration::from_secs(2);
    let check = userpipe(&config, dir.path(), &["pgconf", "check", "--archive"]);
    let said = stdout(&check);
    assert_ne!(code(&check), 0, "{said}");
    assert!(
        said.contains(&format!(
            "did not reach the archive {} within 2s (backup.archive_wait)",
            hung.archive().display()
        )),
        "{said}"
    );
    std::fs::remove_file(&hold).unwrap();
}
