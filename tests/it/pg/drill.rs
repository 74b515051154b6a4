//! The restore drill: every row back from a backup and the archive, and the drills that must fail.

use std::time::Duration;

use chrono::{DateTime, Utc};
use userpipe::pg::backup;
use userpipe::scheduler::journal::Status;

use super::helpers::*;
use crate::support::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_restores_every_row_from_the_backup_and_the_archive() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db,
        dir: _dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;

    insert_users(&mut conn, 100).await;
    let report = backup::run(&config, false).await.expect("a backup");
    // Rows the backup does not hold: only the archive has them.
    let last_insert = insert_users(&mut conn, 50).await;
    assert_eq!(count_users(&mut conn).await, 150);
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;

    let run = fire(
        &config,
        &db,
        "drill",
        "job = \"restore-drill\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.error);
    let detail = run.detail.unwrap();
    assert_eq!(detail["backup_id"], report.id.as_str());
    assert_eq!(
        detail["rows"], 150,
        "every row, the ones after the backup too: {detail}"
    );
    let newest: DateTime<Utc> = detail["newest_commit_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        newest >= last_insert,
        "{newest} is before the last insert {last_insert}"
    );
    assert!(detail["recovery_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        detail["wal_segments_restored"].as_u64().unwrap() >= 2,
        "{detail}"
    );

    // Cleaned up: no scratch folder, no server; and the throwaway server archived nothing.
    assert!(
        names(&config.backup.scratch).is_empty(),
        "{:?}",
        names(&config.backup.scratch)
    );
    assert_eq!(
        processes_mentioning(&config.backup.scratch),
        Vec::<String>::new()
    );
    assert!(
        !names(&cluster.archive())
            .iter()
            .any(|n| n.ends_with(".history")),
        "the drill's new timeline reached the archive: {:?}",
        names(&cluster.archive())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_that_cannot_recover_fails_and_cleans_up() {
    let (cluster, _conn) = archiving_cluster_with_schema().await;
    let Ops {
        db: _db,
        dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;
    let report = backup::run(&config, false).await.expect("a backup");
    let start = report.path.join("backup_label");
    let start = userpipe::pg::backup::run::start_wal_file(&std::fs::read_to_string(start).unwrap())
        .unwrap();
    let archived = cluster.archive().join(&start);
    wait_for(
        "the backup's WAL in the archive",
        Duration::from_secs(30),
        || {
            let there = archived.exists().then_some(());
            async move { there }
        },
    )
    .await;
    // The archive is lost: the backup alone cannot be recovered (the drill does not use its own WAL).
    for name in names(&cluster.archive()) {
        std::fs::remove_file(cluster.archive().join(name)).unwrap();
    }

    let out = userpipe(&config, dir.path(), &["backup", "restore-test", &report.id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("the restored server did not start"),
        "{stderr}"
    );
    assert!(stderr.contains("the end of the server log"), "{stderr}");
    assert!(
        names(&config.backup.scratch).is_empty(),
        "{:?}",
        names(&config.backup.scratch)
    );
    assert_eq!(
        processes_mentioning(&config.backup.scratch),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_fails_when_a_segment_is_missing_from_the_archive() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db: _db,
        dir: _dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;
    backup::run(&config, false).await.expect("a backup");
    insert_users(&mut conn, 10).await;
    let lost = switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    insert_users(&mut conn, 10).await;
    let kept = switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    std::fs::remove_file(cluster.archive().join(&lost)).unwrap();

    let error = userpipe::pg::drill::run(&config, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("the archive holds WAL up to {kept}")),
        "{error}"
    );
    assert!(names(&config.backup.scratch).is_empty());
}
