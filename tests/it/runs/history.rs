//! History retention: the built-in `prune-history` schedule deletes old runs with their logs and firing
//! claims, keeps each schedule's newest runs and any run still going, and is journaled itself.

use chrono::{Duration, Utc};
use userpipe::scheduler::journal::{self, RunRecord, Status, Trigger};
use userpipe::scheduler::runlog::{self, LogLine};
use userpipe::scheduler::{self, guards::Guards};
use uuid::Uuid;

use super::*;

/// A run of `schedule` that started `age_days` ago, with `attempts` attempts ending in `status`, one log
/// line and its firing claim.
async fn old_run(pool: &PgPool, schedule: &str, age_days: i64, attempts: i32, status: Status) {
    let run_id = Uuid::new_v4();
    let started = Utc::now() - Duration::days(age_days);
    for attempt in 1..=attempts {
        let mut record = RunRecord::started(
            run_id,
            (attempt, attempts),
            schedule,
            "fetch-users",
            Trigger::Schedule,
            Some(started),
        );
        record.started_at = started + Duration::seconds(attempt as i64);
        let record = match status {
            Status::Running => record,
            status => record.finished(status),
        };
        journal::upsert(pool, &record).await.unwrap();
    }
    log_line(pool, run_id, started).await;
    Guards::new(pool)
        .claim_firing(schedule, started, run_id, "test")
        .await
        .unwrap();
}

async fn log_line(pool: &PgPool, run_id: Uuid, at: chrono::DateTime<Utc>) {
    let line = LogLine {
        run_id,
        seq: 1,
        attempt: 1,
        at,
        level: "INFO".into(),
        target: "test".into(),
        message: "job run started".into(),
        fields: serde_json::json!({}),
    };
    runlog::insert(pool, &[line]).await.unwrap();
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_old_runs_but_keeps_each_schedules_newest_and_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, config) = setup(dir.path()).await;
    assert_eq!(
        config.scheduler.history,
        std::time::Duration::from_secs(90 * 86_400)
    );
    assert_eq!(config.scheduler.history_keep, 20);
    let pool = &db.pool;
    // busy: 3 recent runs and 30 old ones (100 to 129 days): it keeps its newest 20 and the old run still
    // going (125 days); the 12 others go, one of them with two attempts.
    for age in 1..=3 {
        old_run(pool, "busy", age, 1, Status::Succeeded).await;
    }
    for age in 100..130 {
        let (attempts, status) = match age {
            121 => (2, Status::Failed),
            125 => (1, Status::Running),
            _ => (1, Status::Succeeded),
        };
        old_run(pool, "busy", age, attempts, status).await;
    }
    // rare: five runs, all older than the history, all kept.
    for age in 200..205 {
        old_run(pool, "rare", age, 1, Status::Succeeded).await;
    }
    // A log line and a firing claim of a run whose record never reached the table.
    let lost = Uuid::new_v4();
    log_line(pool, lost, Utc::now() - Duration::days(100)).await;
    Guards::new(pool)
        .claim_firing("busy", Utc::now() - Duration::days(300), lost, "test")
        .await
        .unwrap();

    // The run still going holds its schedule's lock, as a live run does (else the journal would mark it
    // abandoned when it starts).
    let going = Guards::new(pool)
        .try_lock("busy", true)
        .await
        .unwrap()
        .expect("the lock");

    let schedule = scheduler::find(dir.path(), "prune-history").expect("the built-in schedule");
    let status = runner(&config, pool)
        .fire(&schedule, Trigger::Manual, None)
        .await;
    assert_eq!(status, Some(Status::Succeeded));

    let pruning = finished_run(pool, "prune-history").await;
    assert_eq!(pruning.len(), 1);
    assert_eq!(pruning[0].job, "prune-history");
    let detail = pruning[0].detail.clone().unwrap();
    assert_eq!(detail["runs"], 12, "{detail}");
    assert_eq!(detail["attempts"], 13, "{detail}");
    assert_eq!(detail["log_lines"], 13, "{detail}");
    assert_eq!(detail["firings"], 13, "{detail}");
    assert_eq!(detail["keep"], 20);

    let runs_of = |schedule: &'static str| async move {
        let runs = runs(pool, schedule).await;
        let ids: std::collections::HashSet<Uuid> = runs.iter().map(|r| r.run_id).collect();
        (ids.len(), runs)
    };
    let (busy, busy_runs) = runs_of("busy").await;
    assert_eq!(busy, 21, "the newest 20 and the one still going");
    let oldest_kept = busy_runs
        .iter()
        .filter(|r| r.status != Status::Running)
        .map(|r| r.started_at)
        .min()
        .unwrap();
    assert!(
        Utc::now() - oldest_kept < Duration::days(117),
        "{oldest_kept}"
    );
    assert!(busy_runs.iter().any(|r| r.status == Status::Running));
    assert_eq!(
        runs_of("rare").await.0,
        5,
        "a rare schedule's history is never emptied"
    );
    // Every kept run keeps its log line and its firing claim; nothing else is left.
    let kept_runs = count(
        pool,
        "SELECT count(DISTINCT run_id) FROM job_runs WHERE schedule <> 'prune-history'",
    )
    .await;
    assert_eq!(kept_runs, 26);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM job_run_logs WHERE target = 'test'"
        )
        .await,
        26
    );
    assert_eq!(count(pool, "SELECT count(*) FROM job_firings").await, 26);
    going.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_prunes_daily_unless_a_file_replaces_the_built_in_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, _db, config) = setup(dir.path()).await;
    write(
        dir.path(),
        "fetch",
        "job = \"fetch-users\"\ncron = \"@yearly\"\n",
    );
    let output = userpipe(&config, dir.path(), &["schedules", "check", "."])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("prune-history: prune-history at `17 3 * * *` in UTC (built in; a file of that name replaces it)"),
        "{text}"
    );
    assert!(
        text.ends_with("2 valid, 0 invalid schedule file(s) in .\n"),
        "{text}"
    );
    let loaded = scheduler::load_dir(dir.path()).unwrap();
    let builtin = loaded
        .schedules
        .iter()
        .find(|(s, _)| s.name == "prune-history")
        .map(|(s, _)| s)
        .unwrap();
    let fires = builtin.next_fires(Utc::now(), 2);
    assert_eq!(fires[1] - fires[0], Duration::days(1), "daily");

    write(
        dir.path(),
        "prune-history",
        "job = \"prune-history\"\ncron = \"0 4 * * 0\"\nenabled = false\n",
    );
    let loaded = scheduler::load_dir(dir.path()).unwrap();
    let replaced: Vec<_> = loaded
        .schedules
        .iter()
        .filter(|(s, _)| s.name == "prune-history")
        .collect();
    assert_eq!(replaced.len(), 1);
    assert!(!replaced[0].0.enabled && replaced[0].0.cron_text == "0 4 * * 0");
}
