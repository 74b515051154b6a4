//! The PostgreSQL jobs' run logs: what pg_basebackup, pg_verifybackup and the drill's throwaway server
//! printed is in the run's log, with the program's name.

use userpipe::scheduler::journal::Status;
use userpipe::scheduler::runlog::{self, LogLine};

use super::helpers::*;
use crate::support::capture_run_logs;

/// The lines of `run_id`'s log that `program` printed.
fn printed_by<'a>(lines: &'a [LogLine], program: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.fields["program"] == program)
        .map(|l| l.message.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_and_a_drill_keep_what_their_programs_printed_in_the_runs_log() {
    capture_run_logs();
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db,
        dir: _dir,
        config,
        ..
    } = ops(&cluster).await;
    insert_users(&mut conn, 10).await;

    let backup = fire(
        &config,
        &db,
        "weekly",
        "job = \"base-backup\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(backup.status, Status::Succeeded, "{:?}", backup.error);
    let lines = runlog::read(&db.pool, backup.run_id, 0, 10_000)
        .await
        .unwrap();
    let basebackup = printed_by(&lines, "pg_basebackup");
    for step in [
        "pg_basebackup: initiating base backup, waiting for checkpoint to complete",
        "pg_basebackup: checkpoint completed",
        "pg_basebackup: base backup completed",
    ] {
        assert!(
            basebackup.contains(&step),
            "{step:?} not in {basebackup:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .filter(|l| l.fields["program"] == "pg_basebackup")
            .all(|l| l.level == "INFO"),
        "verbose lines are information"
    );
    assert_eq!(
        printed_by(&lines, "pg_verifybackup"),
        ["backup successfully verified"]
    );

    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let drill = fire(
        &config,
        &db,
        "drill",
        "job = \"restore-drill\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(drill.status, Status::Succeeded, "{:?}", drill.error);
    let lines = runlog::read(&db.pool, drill.run_id, 0, 10_000)
        .await
        .unwrap();
    let server = printed_by(&lines, "postgres");
    assert!(
        server.iter().any(|l| l.contains("restored log file")),
        "{server:#?}"
    );
    assert!(
        server
            .iter()
            .any(|l| l.contains("database system is ready to accept connections")),
        "{server:#?}"
    );
    // The server's lines come before the run's end.
    let finished = lines
        .iter()
        .position(|l| l.message == "job run finished")
        .unwrap();
    let last_server_line = lines
        .iter()
        .rposition(|l| l.fields["program"] == "postgres")
        .unwrap();
    assert!(last_server_line < finished);
}
