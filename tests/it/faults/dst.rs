//! Daylight saving in the firing loop: started, or edited, in the repeated hour of Berlin's fall-back
//! (2026-10-25, 03:00 CEST -> 02:00 CET), a schedule fires nothing that already fired an hour before and
//! never fires in the past, while the loop goes on firing the others.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use userpipe::scheduler::firing::Clock;
use userpipe::scheduler::journal::{Journal, Status};
use userpipe::scheduler::{self, Runner};

use super::{runs, write_schedule};
use crate::support::{TestDb, TestKafka, config_for, prepare, wait_for};

const GENERATOR: &str = "[params]\nsource = \"generator\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_and_edited_in_the_repeated_hour_nothing_fires_twice_or_in_the_past() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = dir.path().to_owned();
    prepare(&config, &db.pool).await;
    // 02:15 and 02:20 local came at 00:15 and 00:20 UTC, in the first pass; every second of 02:10-02:59
    // local too. The control fires every second in UTC.
    let berlin = "timezone = \"Europe/Berlin\"\n";
    write_schedule(
        dir.path(),
        "fixed",
        &format!("job = \"fetch-users\"\ncron = \"15 2 * * *\"\n{berlin}{GENERATOR}"),
    );
    write_schedule(
        dir.path(),
        "every-second-berlin",
        &format!("job = \"fetch-users\"\ncron = \"* * * * * *\"\n{berlin}{GENERATOR}"),
    );
    write_schedule(
        dir.path(),
        "control",
        &format!("job = \"fetch-users\"\ncron = \"* * * * * *\"\n{GENERATOR}"),
    );

    // 02:10:00 CET, the second pass.
    let start: DateTime<Utc> = "2026-10-25T01:10:00Z".parse().unwrap();
    let shutdown = CancellationToken::new();
    let (journal, writer) = Journal::start(Some(db.pool.clone()), shutdown.clone());
    let runner = Runner::new(config.clone(), Some(db.pool.clone()), journal).unwrap();
    let task = {
        let (folder, runner, shutdown) = (dir.path().to_owned(), runner.clone(), shutdown.clone());
        tokio::spawn(async move {
            scheduler::run(&folder, runner, shutdown, Clock::starting_at(start)).await
        })
    };

    let control_runs = |n: usize| {
        let pool = db.pool.clone();
        async move {
            let done: Vec<_> = runs(&pool, "control")
                .await
                .into_iter()
                .filter(|r| r.status == Status::Succeeded)
                .collect();
            (done.len() >= n).then_some(done)
        }
    };
    wait_for("four runs of the control", Duration::from_secs(30), || {
        control_runs(4)
    })
    .await;
    // An edit in the repeated hour: 02:20 too came in the first pass.
    write_schedule(
        dir.path(),
        "fixed",
        &format!("job = \"fetch-users\"\ncron = \"20 2 * * *\"\n{berlin}{GENERATOR}"),
    );
    let control = wait_for("eight runs of the control", Duration::from_secs(30), || {
        control_runs(8)
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    drop(runner);
    if let Some(writer) = writer {
        writer.await.unwrap();
    }

    for name in ["fixed", "every-second-berlin"] {
        let fired = runs(&db.pool, name).await;
        assert!(
            fired.is_empty(),
            "{name} fired in the repeated hour: {fired:?}"
        );
    }
    // The control ran on the scheduler's clock, once per second, never before its time.
    let mut planned: Vec<DateTime<Utc>> = control.iter().filter_map(|r| r.scheduled_for).collect();
    planned.sort();
    planned.dedup();
    assert_eq!(planned.len(), control.len(), "a firing ran twice");
    assert!(planned[0] > start && planned[0] - start < chrono::Duration::seconds(10));
}
