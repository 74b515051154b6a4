//! `pgconf` check and apply, and the pgconf-enforce job, on private clusters.

use std::time::Duration;

use userpipe::cli::exit;
use userpipe::scheduler::journal::Status;

use super::helpers::*;
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgconf_apply_turns_archiving_on_and_check_exits_0_then_3_after_a_manual_drift() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "60s");

    let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
    assert_eq!(
        code(&check),
        i32::from(exit::DRIFT),
        "archiving is off: drift\n{}",
        stdout(&check)
    );
    assert!(
        stdout(&check).contains("archive_mode     drift: off now, on wanted"),
        "{}",
        stdout(&check)
    );

    let apply = userpipe(&config, dir.path(), &["pgconf", "apply"]);
    let said = stdout(&apply);
    assert_eq!(
        code(&apply),
        i32::from(exit::RESTART_NEEDED),
        "a restart is needed\n{said}"
    );
    assert!(
        said.contains("wrote archive_mode = 'on' (ALTER SYSTEM)"),
        "{said}"
    );
    assert!(said.contains("reloaded the configuration"), "{said}");
    assert!(
        said.contains("in force: wal_level, archive_timeout"),
        "{said}"
    );
    assert!(
        said.contains("RESTART NEEDED: archive_mode, archive_command, max_wal_senders take effect only when PostgreSQL restarts"),
        "{said}"
    );
    let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
    assert_eq!(
        code(&check),
        i32::from(exit::RESTART_NEEDED),
        "{}",
        stdout(&check)
    );

    cluster.restart();
    let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
    assert_eq!(code(&check), 0, "{}", stdout(&check));

    // WAL now reaches the archive, without failures.
    let mut conn = cluster.connect().await;
    sqlx::query("CREATE TABLE filler AS SELECT generate_series(1, 10000) AS n")
        .execute(&mut conn)
        .await
        .unwrap();
    let segment = switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let (archived, failed, last): (i64, i64, Option<String>) = wait_for(
        "pg_stat_archiver to count the segment",
        Duration::from_secs(10),
        || async {
            let mut conn = cluster.connect().await;
            let row: (i64, i64, Option<String>) = sqlx::query_as(
                "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            (row.2.as_deref() >= Some(segment.as_str())).then_some(row)
        },
    )
    .await;
    assert!(archived >= 1 && last.is_some());
    assert_eq!(failed, 0, "no archiving failure");
    assert_eq!(
        std::fs::read(cluster.archive().join(&segment))
            .unwrap()
            .len(),
        16 * 1024 * 1024,
        "a whole segment"
    );

    // Someone changes a setting by hand: check sees the drift.
    sqlx::query("ALTER SYSTEM SET archive_timeout = '120s'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await
        .unwrap();
    let check = wait_for("check to see the drift", Duration::from_secs(10), || {
        let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
        async move { (code(&check) == i32::from(exit::DRIFT)).then_some(check) }
    })
    .await;
    assert!(
        stdout(&check).contains("archive_timeout  drift: 2min now, 60s wanted"),
        "{}",
        stdout(&check)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgconf_enforce_records_the_archiver_and_fails_when_archiving_fails() {
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
    // max_wal_senders differs from the cluster's 4: the run writes it and then waits for a restart.
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "60s");
    let mut conn = cluster.connect().await;
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let text = "job = \"pgconf-enforce\"\ncron = \"@yearly\"\n";

    let run = fire(&config, &db, "enforce_restart", text).await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.clone().unwrap();
    assert_eq!(error, "max_wal_senders wait for a postgresql restart");
    let detail = run.detail.expect("a failed enforce run keeps its detail");
    assert_eq!(
        detail["applied"],
        serde_json::json!(["archive_timeout", "max_wal_senders"])
    );
    assert_eq!(
        detail["restart_needed"],
        serde_json::json!(["max_wal_senders"])
    );

    cluster.restart();
    let run = fire(&config, &db, "enforce_ok", text).await;
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.error);
    let detail = run.detail.unwrap();
    assert_eq!(detail["applied"], serde_json::json!([]));
    let archiver = &detail["archiver"];
    assert!(
        archiver["archived_count"].as_i64().unwrap() >= 1,
        "{archiver}"
    );
    assert_eq!(archiver["failed_count"], 0);
    assert!(
        archiver["last_archived_age_seconds"].as_f64().is_some(),
        "{archiver}"
    );
    assert_eq!(archiver["archive_timeout_seconds"], 60);

    // The archive volume goes missing: the script fails, the server counts failures, the run fails.
    std::fs::rename(cluster.archive(), cluster.root().join("archive-gone")).unwrap();
    let segment = switch_and_wait_for_an_archiving_failure(&cluster).await;
    let run = fire(&config, &db, "enforce_failing", text).await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(
        error.starts_with(&format!("archiving fails: the last attempt, for {segment}")),
        "{error}"
    );
    let archiver = &run.detail.unwrap()["archiver"];
    assert_eq!(archiver["last_failed_wal"], segment.as_str());
    assert!(archiver["failed_count"].as_i64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgconf_enforce_fails_when_wal_waits_longer_than_twice_archive_timeout() {
    // An archive command that hangs (a stalled network mount) while the hold file exists: nothing fails,
    // nothing is archived, segments wait.
    let root = tempfile::tempdir().unwrap();
    let hold = root.path().join("hold");
    std::fs::write(&hold, "").unwrap();
    let command = format!(
        "while [ -e {} ]; do sleep 0.1; done; exit 1",
        hold.display()
    );
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
        format!("archive_mode = on\narchive_command = '{command}'\narchive_timeout = 1s\n"),
    )
    .unwrap();
    let mut conn = cluster.connect().await;
    sqlx::query("SELECT pg_switch_wal()")
        .execute(&mut conn)
        .await
        .unwrap();
    wait_for(
        "a segment waiting more than 2s",
        Duration::from_secs(30),
        || async {
            let mut conn = cluster.connect().await;
            let waited: Option<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM now() - min(modification))::float8 \
                 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            waited.filter(|w| *w > 2.5).map(|_| ())
        },
    )
    .await;

    let run = fire(
        &config,
        &db,
        "enforce_behind",
        "job = \"pgconf-enforce\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, Status::Failed, "{:?}", run.detail);
    let error = run.error.unwrap();
    assert!(
        error.starts_with("archiving is behind: 1 segment(s) wait, the oldest for"),
        "{error}"
    );
    assert!(
        error.ends_with("no segment was ever archived, more than twice archive_timeout (2s)"),
        "{error}"
    );
    let archiver = &run.detail.unwrap()["archiver"];
    assert_eq!(archiver["waiting_segments"], 1);
    assert_eq!(archiver["failed_count"], 0);
    assert_eq!(archiver["archive_timeout_seconds"], 1);
    std::fs::remove_file(&hold).unwrap();
}
