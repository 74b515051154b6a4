//! The firing loop fallen behind, its process paused (SIGSTOP, as a stopped container or a machine that
//! slept): firings missed by less than a minute are made up one after another, older ones are skipped
//! (`scheduler::firing`'s `CATCH_UP`); and a schedule edited meanwhile takes over the firing that came due
//! before the reload, so the edit loses none and doubles none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use userpipe::scheduler::journal::{RunRecord, Trigger};

use super::{runs, write_schedule};
use crate::support::{TestDb, TestKafka, Userpipe, config_for, prepare, wait_for};

const EVERY_SECOND: &str =
    "job = \"fetch-users\"\ncron = \"* * * * * *\"\n[params]\nsource = \"generator\"\n";

/// How much later than another firing's record one's may reach the journal: its claim and its schedule
/// lock may each wait on PostgreSQL for up to 3 s before the run records itself.
const SETTLE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The scheduled runs of `schedule` planned up to `through`, once all of them are recorded (once a run
/// planned [`SETTLE`] after `through` is).
async fn runs_through(pool: &PgPool, schedule: &str, through: DateTime<Utc>) -> Vec<RunRecord> {
    let runs = wait_for(
        "a firing planned well after the pause",
        Duration::from_secs(90),
        || async {
            let runs: Vec<RunRecord> = runs(pool, schedule)
                .await
                .into_iter()
                .filter(|r| r.trigger == Trigger::Schedule)
                .collect();
            runs.iter()
                .any(|r| r.scheduled_for > Some(through + SETTLE))
                .then_some(runs)
        },
    )
    .await;
    runs.into_iter()
        .filter(|r| r.scheduled_for <= Some(through))
        .collect()
}

/// Every firing from the first recorded to the last, each with exactly one record: none lost, none twice.
fn assert_each_second_once(runs: &[RunRecord]) {
    let mut firings: Vec<DateTime<Utc>> = runs.iter().filter_map(|r| r.scheduled_for).collect();
    firings.sort();
    let expected: Vec<DateTime<Utc>> = (0..)
        .map(|s| firings[0] + chrono::Duration::seconds(s))
        .take_while(|t| t <= firings.last().unwrap())
        .collect();
    assert_eq!(firings, expected, "lost or doubled firings");
}

/// A scheduler process with `tick` firing every second, once its first runs are recorded.
async fn scheduler_firing(kafka: &TestKafka, db: &TestDb, dir: &std::path::Path) -> Userpipe {
    let mut config = config_for(kafka, &db.url());
    config.scheduler.dir = dir.join("schedules");
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    prepare(&config, &db.pool).await;
    write_schedule(&config.scheduler.dir, "tick", EVERY_SECOND);
    let userpipe = Userpipe::spawn(
        &config,
        dir,
        "userpipe.log",
        &["run", "--roles", "scheduler"],
    );
    wait_for("the first runs", Duration::from_secs(60), || async {
        (runs(&db.pool, "tick").await.len() >= 2).then_some(())
    })
    .await;
    userpipe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_scheduler_makes_up_firings_missed_by_under_a_minute_and_skips_older_ones() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let dir = tempfile::tempdir().unwrap();
    let mut userpipe = scheduler_firing(&kafka, &db, dir.path()).await;

    // Five seconds behind: the firings of the pause run once it is over, one after another.
    let (stopped, resumed) = userpipe.pause(Duration::from_secs(5)).await;
    let runs = runs_through(&db.pool, "tick", resumed + chrono::Duration::seconds(3)).await;
    assert_each_second_once(&runs);
    let made_up: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.scheduled_for.unwrap() > stopped + chrono::Duration::seconds(1))
        .filter(|r| r.scheduled_for.unwrap() < resumed)
        .collect();
    assert!(made_up.len() >= 3, "{made_up:?}");
    assert!(
        made_up.iter().all(|r| r.started_at >= resumed),
        "made up after the pause: {made_up:?}"
    );
    assert!(!userpipe.log_text().contains("the scheduler fell behind"));

    // Past a minute behind: the firings of the pause are skipped, and firing goes on from now.
    let (stopped, resumed) = userpipe.pause(Duration::from_secs(65)).await;
    let runs = runs_through(&db.pool, "tick", resumed + chrono::Duration::seconds(3)).await;
    let missed: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.scheduled_for.unwrap() > stopped + chrono::Duration::seconds(2))
        .filter(|r| r.scheduled_for.unwrap() < resumed)
        .collect();
    assert!(
        missed.is_empty(),
        "made up though a minute behind: {missed:?}"
    );
    let after: Vec<RunRecord> = runs
        .into_iter()
        .filter(|r| r.scheduled_for.unwrap() > resumed)
        .collect();
    assert!(!after.is_empty());
    assert_each_second_once(&after);
    assert!(
        userpipe
            .log_text()
            .contains("the scheduler fell behind; skipping the firings it missed")
    );
    assert!(userpipe.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_edited_while_its_firing_is_due_takes_that_firing_over() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let dir = tempfile::tempdir().unwrap();
    let mut userpipe = scheduler_firing(&kafka, &db, dir.path()).await;

    // Edited while the process is stopped: when it goes on, the firings of the pause are due and the
    // next reload finds the file changed. The new version takes over the due firing (and those after
    // it); the old version's is not run as well.
    let folder = dir.path().join("schedules");
    let edit = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let edited = EVERY_SECOND.replace("[params]", "timeout = \"30s\"\n[params]");
        write_schedule(&folder, "tick", &edited);
    };
    let ((stopped, resumed), ()) = tokio::join!(userpipe.pause(Duration::from_secs(3)), edit);
    let runs = runs_through(&db.pool, "tick", resumed + chrono::Duration::seconds(3)).await;
    assert!(
        userpipe.log_text().contains("schedule reloaded"),
        "{}",
        userpipe.log_text()
    );
    assert_each_second_once(&runs);
    let due: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.scheduled_for.unwrap() > stopped + chrono::Duration::seconds(1))
        .filter(|r| r.scheduled_for.unwrap() < resumed)
        .collect();
    assert!(!due.is_empty(), "no firing came due in the pause: {runs:?}");
    assert!(userpipe.terminate().await.success());
}
