//! Verified base backups, retention, and the runs that fail: a stopped server, a wrong password, an
//! unwritable folder, a timeout, another backup running, a tablespace besides the default ones.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use userpipe::config::Secret;
use userpipe::pg::backup;
use userpipe::scheduler::journal::Status;

use super::helpers::*;
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::{TestDb, TestKafka, unique, wait_for};

/// A file of the backup with at least 8 kB, from its manifest.
fn a_data_file(folder: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("backup_manifest")).unwrap()).unwrap();
    manifest["Files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["Size"].as_u64().unwrap_or(0) >= 8192)
        .filter_map(|f| f["Path"].as_str())
        .find(|p| p.starts_with("base/"))
        .expect("a data file in the manifest")
        .to_owned()
}

/// Flips one byte in the middle of `file`.
fn damage(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

fn backup_ids(dir: &Path) -> Vec<String> {
    backup::list(dir)
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_verified_and_damage_to_one_file_is_named() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir,
        backups,
        config,
        ..
    } = ops(&cluster).await;

    let report = backup::run(&config, false).await.expect("a backup");
    assert!(report.verified && report.bytes > 1024 * 1024, "{report:?}");
    assert_eq!(
        names(&backups),
        BTreeSet::from([report.id.clone()]),
        "no partial folder left"
    );
    let listed = backup::list(&backups).unwrap();
    let metadata = listed[0].metadata.clone().expect("backup.json");
    assert_eq!(metadata.id, report.id);
    assert!(metadata.verification.ok && metadata.verification.problems.is_empty());
    let major = (metadata.server_version_num / 10_000).to_string();
    assert!(metadata.server_version.starts_with(&major), "{metadata:?}");
    assert!(metadata.start_lsn.contains('/') && metadata.end_lsn.contains('/'));
    assert!(metadata.finished_at >= metadata.started_at);
    assert_eq!(metadata.bytes, report.bytes);
    assert!(metadata.start_wal.is_some());

    let verify = userpipe(&config, dir.path(), &["backup", "verify", &report.id]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));

    let file = a_data_file(&report.path);
    damage(&report.path.join(&file));
    let verify = userpipe(&config, dir.path(), &["backup", "verify", &report.id]);
    assert_eq!(code(&verify), 1, "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains(&format!("checksum mismatch for file \"{file}\"")),
        "{}",
        stdout(&verify)
    );
    let metadata = backup::read_metadata(&report.path).unwrap();
    assert!(!metadata.verification.ok, "the failure is recorded");
    assert_eq!(
        metadata.verification.problems,
        [format!("checksum mismatch for file \"{file}\"")]
    );
    let list = userpipe(&config, dir.path(), &["backup", "list"]);
    assert!(
        stdout(&list).contains("FAILED: checksum mismatch"),
        "{}",
        stdout(&list)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_verified_backups_and_never_the_last_verified_one() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir: _dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    config.backup.keep = 2;

    let a = backup::run(&config, false).await.unwrap();
    let b = backup::run(&config, false).await.unwrap();
    assert!(a.pruned.is_empty() && b.pruned.is_empty());
    let c = backup::run(&config, false).await.unwrap();
    assert_eq!(c.pruned, [a.id], "keep 2: the oldest goes");
    assert_eq!(backup_ids(&backups), [b.id.clone(), c.id.clone()]);

    // The newest stops verifying. With keep 1, b is the only verified backup: it stays, and so does c
    // (newer, kept for a look).
    damage(&c.path.join(a_data_file(&c.path)));
    assert!(!backup::verify(&config, &c.id).await.unwrap().ok);
    assert!(
        backup::prune(&backups, &cluster.archive(), 1, false)
            .unwrap()
            .deleted
            .is_empty()
    );
    assert_eq!(backup_ids(&backups), [b.id.clone(), c.id.clone()]);

    // A new verified backup with keep 1: it is the one kept; everything older goes.
    config.backup.keep = 1;
    let d = backup::run(&config, false).await.unwrap();
    assert_eq!(d.pruned, [b.id.clone(), c.id.clone()]);
    assert_eq!(backup_ids(&backups), [d.id.as_str()]);
    assert_eq!(
        names(&backups),
        BTreeSet::from([d.id.clone()]),
        "nothing else is left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_server_that_is_down_fails_before_it_writes_anything() {
    let cluster = TestCluster::start();
    let Ops {
        db,
        dir: _dir,
        backups,
        config,
        ..
    } = ops(&cluster).await;
    cluster.stop();
    let run = fire(
        &config,
        &db,
        "backup_down",
        "job = \"base-backup\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(
        error.starts_with("cannot connect to postgresql at"),
        "{error}"
    );
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_a_wrong_password_is_a_failed_run_that_does_not_print_it() {
    let right = format!("right-{}", unique("pw").replace('_', "-"));
    let cluster = TestCluster::start_with(ClusterOptions {
        replication_password: Some(right.clone()),
        ..Default::default()
    });
    let Ops {
        db,
        dir: _dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    let text = "job = \"base-backup\"\ncron = \"@yearly\"\n";

    // Ordinary connections are trusted; replication (pg_basebackup) needs the password.
    let wrong = format!("wrong-{}", unique("pw").replace('_', "-"));
    config.database.url = Secret::new(format!(
        "postgres://postgres:{wrong}@127.0.0.1:{}/postgres",
        cluster.port
    ));
    let run = fire(&config, &db, "backup_wrong", text).await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(error.starts_with("pg_basebackup failed"), "{error}");
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!error.contains(&wrong), "the password is printed: {error}");
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));

    // The right one reaches pg_basebackup (through PGPASSWORD) and the backup is taken.
    config.database.url = Secret::new(format!(
        "postgres://postgres:{right}@127.0.0.1:{}/postgres",
        cluster.port
    ));
    let run = fire(&config, &db, "backup_right", text).await;
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.error);
    let detail = run.detail.unwrap();
    assert_eq!(detail["verified"], true);
    assert!(!detail.to_string().contains(&right));
    assert_eq!(backup_ids(&backups), [detail["id"].as_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_into_an_unwritable_folder_fails_naming_the_folder() {
    let cluster = TestCluster::start();
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    // userpipe runs as postgres here (as it runs as a non-root user in its container); the backup folder
    // belongs to root, mode 0755.
    let backups = cluster.root().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let work = cluster.make_dir("work");
    let config = cluster_config(&cluster, &kafka, &db, &backups);
    // The checkout may be out of postgres's reach: then it runs a copy of the binary.
    let mut binary = PathBuf::from(env!("CARGO_BIN_EXE_userpipe"));
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(&binary)
        .status()
        .unwrap()
        .success();
    if !reachable {
        std::fs::copy(&binary, work.join("userpipe")).expect("copy the binary");
        binary = work.join("userpipe");
    }
    let out = userpipe_as(
        Some("postgres"),
        &binary,
        &config,
        &work,
        &["backup", "run"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot create {}", backups.display()))
            && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_cut_off_by_its_timeout_leaves_no_partial_folder_and_no_process() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir: _dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    // At 32 kB/s the backup would take minutes: it is killed part way, its forked WAL streamer too.
    config.backup.max_rate = "32k".into();
    config.backup.timeout = Duration::from_secs(2);
    let error = backup::run(&config, false).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "pg_basebackup did not finish within 2s (backup.timeout)"
    );
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
    wait_for(
        "no pg_basebackup writing there",
        Duration::from_secs(10),
        || {
            let left = processes_mentioning(&backups);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backup_of_a_server_runs_at_a_time() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir: _dir,
        backups,
        config,
        ..
    } = ops(&cluster).await;
    // Another process (a replica, the command line) is taking a backup of this server: it holds the lock.
    let mut other = cluster.connect().await;
    assert!(
        userpipe::db::AdvisoryLock::Backup
            .try_take(&mut other, true)
            .await
            .unwrap()
    );
    let error = backup::run(&config, false).await.unwrap_err().to_string();
    assert_eq!(error, "another base backup of this server is running");
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));

    // Its session ends: the lock is free once the server has seen the connection close.
    drop(other);
    let report = wait_for("the lock to be free", Duration::from_secs(30), || {
        let config = config.clone();
        async move {
            match backup::run(&config, false).await {
                Ok(report) => Some(report),
                Err(e) if e.to_string() == "another base backup of this server is running" => None,
                Err(e) => panic!("the backup failed: {e:#}"),
            }
        }
    })
    .await;
    assert_eq!(backup_ids(&backups), [report.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_tablespace_is_not_backed_up() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir: _dir,
        backups,
        config,
        ..
    } = ops(&cluster).await;
    let location = cluster.make_dir("tablespace");
    // A plain-format backup would write this tablespace to its original path, over the server's own.
    let psql = config.backup.pg_bin.join("psql");
    let mut create = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(&psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(cluster.url())
        .arg("-v")
        .arg(format!("location={}", location.display()))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"CREATE TABLESPACE extra LOCATION :'location';\n")
        .unwrap();
    assert!(create.wait().unwrap().success(), "create the tablespace");

    let error = backup::run(&config, false).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "the server has 1 tablespace(s) besides pg_default and pg_global; a plain-format backup would \
         write them to their original paths, so userpipe does not back it up"
    );
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
}
