//! Backups and restore drills cut off part way: userpipe SIGKILLed mid-copy (its pg_basebackup dies with
//! it), the server stopped mid-copy, a drill cancelled or timed out, a drill's process SIGKILLed with its
//! server up. Each leaves no program behind, and no partial or scratch folder once its run has ended or
//! the next one has started; a live drill's folder is never swept. The drill's server listens on no TCP
//! port and does not run as root.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use userpipe::pg::{backup, drill};
use userpipe::scheduler::journal::Status;

use super::helpers::*;
use crate::support::cluster::TestCluster;
use crate::support::{Userpipe, wait_for};

/// The `.partial` folder a running backup writes into, once pg_basebackup has written some of the copy.
async fn partial_being_written(backups: &Path) -> std::path::PathBuf {
    wait_for(
        "a partial folder with part of the copy in it",
        Duration::from_secs(30),
        || {
            let partial = names(backups)
                .into_iter()
                .find(|n| n.ends_with(".partial"))
                .map(|n| backups.join(n))
                .filter(|p| p.join("PG_VERSION").exists());
            async move { partial }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_backup_run_leaves_no_pg_basebackup_and_the_next_run_works() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    // At 32 kB/s the copy takes minutes: userpipe is killed part way through it.
    config.backup.max_rate = "32k".into();
    let mut run = Userpipe::spawn(&config, dir.path(), "backup.log", &["backup", "run"]);
    let partial = partial_being_written(&backups).await;
    assert!(
        !processes_mentioning(&partial).is_empty(),
        "pg_basebackup writes into {}",
        partial.display()
    );
    run.kill();
    // The kernel kills pg_basebackup with userpipe; its WAL streamer follows once its parent is gone.
    wait_for(
        "no pg_basebackup of the killed run",
        Duration::from_secs(20),
        || {
            let left = processes_mentioning(&partial);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
    let before = names(&partial);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(&partial), before, "nothing writes into it any more");

    // The next run removes what the killed one left and takes its backup.
    config.backup.max_rate = String::new();
    let report = backup::run(&config, false).await.expect("the next backup");
    assert!(report.verified);
    assert_eq!(
        names(&backups),
        [report.id.clone()].into(),
        "the killed run's partial folder is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_server_stops_mid_copy_fails_and_leaves_no_partial_folder() {
    let cluster = TestCluster::start();
    let Ops {
        db,
        dir: _dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    config.backup.max_rate = "32k".into();
    let text = "job = \"base-backup\"\ncron = \"@yearly\"\n";
    let run = tokio::spawn({
        let (config, db) = (config.clone(), db);
        async move { fire(&config, &db, "backup_stopped", text).await }
    });
    let partial = partial_being_written(&backups).await;
    cluster.stop();
    let run = run.await.expect("the run");
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(error.starts_with("pg_basebackup failed"), "{error}");
    assert!(!partial.exists(), "{} is left", partial.display());
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
    assert!(processes_mentioning(&backups).is_empty());
}

/// The scratch folder of a running drill in `parent`, once its server has started there.
async fn drill_server_up(parent: &Path) -> PathBuf {
    wait_for(
        "a drill's server running in its scratch folder",
        Duration::from_secs(60),
        || {
            let up = names(parent)
                .into_iter()
                .filter(|n| n.starts_with("userpipe-drill-") && !n.ends_with(".lock"))
                .map(|n| parent.join(n))
                .find(|dir| postmaster_pid(dir).is_some());
            async move { up }
        },
    )
    .await
}

/// The pid of the server running in scratch folder `dir`, once its sockets are made (`postmaster.pid` then
/// has its status line, the eighth).
fn postmaster_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("data/postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: u32 = lines.first()?.trim().parse().ok()?;
    let started = lines.len() >= 8;
    (started && Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

/// Waits (10 s at most) until process `pid` has exited: gone, or a zombie that its parent (not this test:
/// a server outlives the `pg_ctl` that started it) has yet to reap.
async fn exited(pid: u32) {
    crate::support::wait_for(
        "the server's process to exit",
        Duration::from_secs(10),
        || async {
            // "PID (COMMAND) STATE ...": the state follows the last parenthesis.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let state = stat
                .as_deref()
                .and_then(|s| s.rsplit_once(')'))
                .map(|(_, rest)| rest.trim_start());
            state.is_none_or(|s| s.starts_with('Z')).then_some(())
        },
    )
    .await
}

/// The inodes of the TCP sockets listening on this machine (state 0A in /proc/net/tcp and tcp6).
fn listening_inodes() -> BTreeSet<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    (fields.get(3) == Some(&"0A")).then(|| fields.get(9).map(|s| s.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The socket inodes process `pid` holds open.
fn socket_inodes(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|target| {
                    let text = target.to_string_lossy().into_owned();
                    Some(text.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The real and effective user ids of process `pid`.
fn uids(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let ids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    (ids[0], ids[1])
}

/// A cluster with a backup whose WAL is in the archive: what a drill needs.
async fn drillable() -> (TestCluster, Ops, backup::BackupReport) {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let ops = ops(&cluster).await;
    insert_users(&mut conn, 20).await;
    let report = backup::run(&ops.config, false).await.expect("a backup");
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    (cluster, ops, report)
}

/// Replaces the backup's first WAL segment in the archive with a FIFO nobody writes to: the drill's
/// server then waits in recovery (its `restore_command` blocks) until it is stopped. Returns the
/// segment's path and bytes, for [`unblock_recovery`].
fn block_recovery(cluster: &TestCluster, report: &backup::BackupReport) -> (PathBuf, Vec<u8>) {
    let label = std::fs::read_to_string(report.path.join("backup_label")).unwrap();
    let first = backup::run::start_wal_file(&label).unwrap();
    let segment = cluster.archive().join(first);
    let bytes = std::fs::read(&segment).expect("the backup's first segment is archived");
    std::fs::remove_file(&segment).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("0644")
        .arg(&segment)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    (segment, bytes)
}

fn unblock_recovery((segment, bytes): (PathBuf, Vec<u8>)) {
    std::fs::remove_file(&segment).unwrap();
    std::fs::write(&segment, bytes).unwrap();
}

/// Nothing of a drill is left in `scratch`: no folder, no lock file, no process.
async fn nothing_left_in(scratch: &Path) {
    wait_for(
        "no scratch folder and no process left",
        Duration::from_secs(20),
        || {
            let clean = names(scratch).is_empty() && processes_mentioning(scratch).is_empty();
            async move { clean.then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_cancelled_with_its_server_up_leaves_no_server_and_no_scratch_folder() {
    let (cluster, ops, report) = drillable().await;
    let _blocked = block_recovery(&cluster, &report);
    let scratch = ops.config.backup.scratch.clone();
    let drill = tokio::spawn({
        let config = ops.config.clone();
        async move { drill::run(&config, None).await }
    });
    let dir = drill_server_up(&scratch).await;
    let pid = postmaster_pid(&dir).expect("the server's pid");

    // The server runs as the drill user (not root) and listens on no TCP port.
    let (real, effective) = uids(pid);
    assert!(
        real != 0 && effective != 0,
        "the drill's server runs as root"
    );
    let listening = listening_inodes();
    let held = socket_inodes(pid);
    assert!(!held.is_empty(), "the server holds its unix socket");
    assert!(
        held.is_disjoint(&listening),
        "the drill's server listens on TCP: {:?}",
        held.intersection(&listening).collect::<Vec<_>>()
    );

    drill.abort();
    assert!(drill.await.unwrap_err().is_cancelled());
    assert!(
        drill::cleanups_finished(Duration::from_secs(20)).await,
        "the clean-up ends"
    );
    exited(pid).await;
    assert!(names(&scratch).is_empty(), "{:?}", names(&scratch));
    assert!(processes_mentioning(&scratch).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_cut_off_by_its_timeout_leaves_no_server_and_no_scratch_folder() {
    let (cluster, ops, report) = drillable().await;
    // Recovery waits for a segment that never comes: only the timeout ends the drill.
    let _blocked = block_recovery(&cluster, &report);
    let scratch = ops.config.backup.scratch.clone();
    let run = fire(
        &ops.config,
        &ops.db,
        "drill_timeout",
        "job = \"restore-drill\"\ncron = \"@yearly\"\ntimeout = \"4s\"\n",
    )
    .await;
    assert_eq!(run.status, Status::TimedOut, "{:?}", run.error);
    nothing_left_in(&scratch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_sigkilled_drill_are_swept_at_the_next_start_but_a_live_drills_stay() {
    let (cluster, ops, report) = drillable().await;
    let blocked = block_recovery(&cluster, &report);
    let scratch = ops.config.backup.scratch.clone();
    let mut killed = Userpipe::spawn(
        &ops.config,
        ops.dir.path(),
        "drill.log",
        &["backup", "restore-test"],
    );
    let left = drill_server_up(&scratch).await;
    let pid = postmaster_pid(&left).expect("the server's pid");
    killed.kill();
    assert!(
        left.exists() && postmaster_pid(&left) == Some(pid),
        "left behind, server up"
    );

    // Another process's live drill: its lock file is held.
    let live = scratch.join("userpipe-drill-0123456789ab");
    std::fs::create_dir(&live).unwrap();
    let lock = File::create(scratch.join("userpipe-drill-0123456789ab.lock")).unwrap();
    lock.try_lock().unwrap();

    let swept = drill::sweep_leftovers(&ops.config).await.unwrap();
    assert_eq!(swept, std::slice::from_ref(&left));
    assert!(!left.exists());
    exited(pid).await;
    assert!(live.exists(), "a live drill's folder stays");

    // The next drill works, and sweeps nothing of the live one.
    unblock_recovery(blocked);
    let report = drill::run(&ops.config, None).await.expect("the next drill");
    assert_eq!(report.recovered.rows, 20);
    assert_eq!(
        names(&scratch),
        [
            "userpipe-drill-0123456789ab",
            "userpipe-drill-0123456789ab.lock"
        ]
        .map(String::from)
        .into()
    );
    drop(lock);
    assert_eq!(drill::sweep_leftovers(&ops.config).await.unwrap(), [live]);
    nothing_left_in(&scratch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_going_at_a_stop_is_cleaned_up_within_the_shutdown_grace() {
    let (cluster, mut ops, report) = drillable().await;
    let _blocked = block_recovery(&cluster, &report);
    let scratch = ops.config.backup.scratch.clone();
    ops.config.scheduler.dir = ops.dir.path().join("schedules");
    std::fs::create_dir(&ops.config.scheduler.dir).unwrap();
    std::fs::write(
        ops.config.scheduler.dir.join("drill.toml"),
        "job = \"restore-drill\"\ncron = \"@yearly\"\nrun_on_start = true\ntimeout = \"10m\"\n",
    )
    .unwrap();
    let mut process = Userpipe::spawn(
        &ops.config,
        ops.dir.path(),
        "run.log",
        &["run", "--roles", "scheduler"],
    );
    let dir = drill_server_up(&scratch).await;
    let pid = postmaster_pid(&dir).expect("the server's pid");

    // The run outlasts the grace: it is cancelled, and its clean-up ends before the process does.
    let status = process.terminate().await;
    assert!(status.success(), "{status}: {}", process.log_text());
    // The scratch folder goes only after its server has stopped (`pg_ctl stop -w` returned): gone at the
    // exit, the clean-up ran before it.
    assert!(names(&scratch).is_empty(), "{:?}", names(&scratch));
    exited(pid).await;
    assert!(processes_mentioning(&scratch).is_empty());
}
