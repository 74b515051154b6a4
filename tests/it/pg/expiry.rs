//! WAL expiry after retention, `backup prune --dry-run`, and the gap check (`backup check`, and after a
//! base backup).

use std::collections::BTreeSet;
use std::path::Path;

use userpipe::pg::archive::WalFile;
use userpipe::pg::{backup, drill};
use userpipe::scheduler::journal::Status;

use super::helpers::*;

/// The WAL files in `names` (segments, partial segments, backup labels) before `start`'s position.
fn before(names: &BTreeSet<String>, start: &str) -> BTreeSet<String> {
    names
        .iter()
        .filter(|n| match WalFile::parse(n) {
            WalFile::Segment { position, .. }
            | WalFile::Partial { position, .. }
            | WalFile::BackupLabel { position, .. } => position < &start[8..],
            _ => false,
        })
        .cloned()
        .collect()
}

/// The archive's WAL files: without the archive command's hidden temporary files, which may still be
/// there for a moment after a segment appeared under its name.
fn wal(archive: &Path) -> BTreeSet<String> {
    names(archive)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn bytes(archive: &Path, names: &BTreeSet<String>) -> u64 {
    names
        .iter()
        .map(|n| std::fs::metadata(archive.join(n)).unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_removes_exactly_the_wal_before_the_oldest_kept_backup_and_kept_backups_still_restore()
 {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db,
        dir,
        backups: _,
        mut config,
        ..
    } = ops(&cluster).await;
    config.backup.keep = 2;
    let archive = cluster.archive();

    insert_users(&mut conn, 10).await;
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let a = backup::run(&config, false).await.expect("backup a");
    insert_users(&mut conn, 10).await;
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let b = backup::run(&config, false).await.expect("backup b");
    assert!(a.pruned.is_empty() && b.pruned.is_empty() && b.wal_removed == 0);
    assert_eq!(b.archive_problem, None);
    insert_users(&mut conn, 10).await;
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;

    let b_start = backup::read_metadata(&b.path).unwrap().start_wal.unwrap();
    let archived = wal(&archive);
    let doomed = before(&archived, &b_start);
    assert!(
        doomed.len() >= 3 && doomed.iter().any(|n| n.ends_with(".backup")),
        "segments and a's label before b's start {b_start}: {doomed:?}"
    );

    // A dry run with keep 1 names a and exactly the WAL before b's start, and deletes nothing.
    config.backup.keep = 1;
    let dry = userpipe(&config, dir.path(), &["backup", "prune", "--dry-run"]);
    let said = stdout(&dry);
    assert_eq!(code(&dry), 0, "{said}");
    assert!(
        said.contains(&format!("would delete backup(s) {} (keep 1)", a.id)),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "would expire {} archived WAL file(s) before {b_start}",
            doomed.len()
        )),
        "{said}"
    );
    let listed: BTreeSet<String> = said
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, doomed);
    assert_eq!(wal(&archive), archived, "a dry run removes nothing");
    assert_eq!(backup::list(&config.backup.dir).unwrap().len(), 2);

    // The scheduled backup c with keep 2: a goes, and with it exactly the WAL before b's start.
    config.backup.keep = 2;
    let freed = bytes(&archive, &doomed);
    let run = fire(
        &config,
        &db,
        "backup_expire",
        "job = \"base-backup\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.error);
    let detail = run.detail.unwrap();
    assert_eq!(detail["pruned"], serde_json::json!([a.id]));
    assert_eq!(detail["wal_removed"], doomed.len());
    assert_eq!(detail["wal_bytes_freed"], freed);
    let after = wal(&archive);
    assert!(
        after.is_disjoint(&doomed),
        "{:?}",
        after.intersection(&doomed)
    );
    assert!(
        after.is_superset(&(&archived - &doomed)),
        "only what was before b's start went: {:?}",
        &(&archived - &doomed) - &after
    );
    assert!(before(&after, &b_start).is_empty());

    // Every kept backup still recovers every row from the expired archive.
    insert_users(&mut conn, 10).await;
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let c_id = detail["id"].as_str().unwrap();
    for id in [b.id.as_str(), c_id] {
        let report = drill::run(&config, Some(id)).await.expect("a drill");
        assert_eq!(report.recovered.rows, 40, "backup {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gap_check_names_the_first_missing_segment() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db,
        dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;
    let none = userpipe(&config, dir.path(), &["backup", "check"]);
    assert_eq!(code(&none), 0);
    assert!(stdout(&none).contains("no backup"), "{}", stdout(&none));

    let first = backup::run(&config, false).await.expect("a backup");
    assert_eq!(first.archive_problem, None);
    let mut segments = Vec::new();
    for _ in 0..3 {
        insert_users(&mut conn, 10).await;
        segments.push(switch_and_wait_for_the_archive(&cluster, &mut conn).await);
    }
    let check = userpipe(&config, dir.path(), &["backup", "check"]);
    let said = stdout(&check);
    assert_eq!(code(&check), 0, "{said}");
    assert!(said.contains(&format!("to {} (", segments[2])), "{said}");

    // One segment in the middle goes missing.
    std::fs::remove_file(cluster.archive().join(&segments[1])).unwrap();
    let check = userpipe(&config, dir.path(), &["backup", "check"]);
    let said = stdout(&check);
    assert_eq!(code(&check), 1, "{said}");
    assert!(
        said.contains(&format!(
            "WAL ARCHIVE INCOMPLETE: the archive misses {}: recovery from the oldest backup cannot replay past it",
            segments[1]
        )),
        "{said}"
    );

    // A base backup checks the archive too: the backup is kept, the run fails naming the segment.
    let run = fire(
        &config,
        &db,
        "backup_gap",
        "job = \"base-backup\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, Status::Failed);
    let error = run.error.unwrap();
    assert!(
        error.starts_with(&format!("the archive misses {}", segments[1])),
        "{error}"
    );
    let detail = run
        .detail
        .expect("the failed run keeps the backup's detail");
    assert_eq!(detail["verified"], true);
    assert_eq!(backup::list(&config.backup.dir).unwrap().len(), 2);
}
