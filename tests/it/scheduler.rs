//! The scheduler against the real stack: overlap, timeouts, retries, a run longer than its interval, hot
//! reload, two replicas on one database, and the journal.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use userpipe::config::Config;
use userpipe::scheduler::journal::{self, Journal, RunFilter, RunRecord, Status, Trigger};
use userpipe::scheduler::{self, Runner, schedule};

use crate::support::randomuser::{FakeRandomUser, Reply, fixture_page};
use crate::support::{
    TestDb, TestKafka, Userpipe, config_for, consume, lag_and_total, prepare, wait_for,
};

/// Every attempt of `schedule` in the journal, oldest first.
async fn runs(pool: &PgPool, schedule: &str) -> Vec<RunRecord> {
    let filter = RunFilter {
        schedule: Some(schedule.into()),
        limit: 100_000,
        ..Default::default()
    };
    let mut runs = journal::list(pool, &filter)
        .await
        .expect("read the journal");
    runs.reverse();
    runs
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as an editor does, so the scheduler never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.toml"))).unwrap();
}

/// A stack configuration with the schedules in `dir`.
async fn setup(dir: &Path) -> (TestKafka, TestDb, Config) {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = dir.to_owned();
    config.fetch.max_attempts = 1;
    prepare(&config, &db.pool).await;
    (kafka, db, config)
}

/// The scheduler role in this process.
fn start_scheduler(
    config: &Config,
    pool: &PgPool,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let task = {
        let (config, pool, shutdown) = (config.clone(), pool.clone(), shutdown.clone());
        tokio::spawn(async move { scheduler::serve(&config, Some(pool), shutdown).await })
    };
    (shutdown, task)
}

/// A runner whose journal writes to `pool`, for single runs.
fn runner(config: &Config, pool: &PgPool) -> Arc<Runner> {
    let (journal, _writer) = Journal::start(Some(pool.clone()), CancellationToken::new());
    Runner::new(config.clone(), Some(pool.clone()), journal).unwrap()
}

/// The process found every file of its schedule folder valid (its own configuration file is not there).
fn assert_no_invalid_file(userpipe: &Userpipe) {
    let log = userpipe.log_text();
    assert!(log.contains("scheduler started"), "{log}");
    assert!(!log.contains("invalid schedule file"), "{log}");
}

fn parse(text: &str) -> schedule::Schedule {
    schedule::parse(Path::new("test.toml"), text).expect("a valid schedule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_its_interval_skips_the_firings_it_overlaps_and_firing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_millis(3500)),
        Reply::json(200, fixture_page()),
    ])
    .await;
    config.fetch.source = server.url.clone();
    write(
        dir.path(),
        "tick",
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\ntimeout = \"30s\"\n",
    );
    let (shutdown, task) = start_scheduler(&config, &db.pool);

    let (slow, skipped, later) = wait_for(
        "a slow run, a skipped firing and a run after it",
        Duration::from_secs(30),
        || async {
            let runs = runs(&db.pool, "tick").await;
            let slow = runs
                .iter()
                .find(|r| r.status == Status::Succeeded && r.duration_ms >= Some(3000))?
                .clone();
            let slow_end = slow.finished_at?;
            let skipped = runs
                .iter()
                .find(|r| {
                    r.status == Status::Skipped
                        && r.started_at > slow.started_at
                        && r.started_at < slow_end
                })?
                .clone();
            let later = runs
                .iter()
                .find(|r| r.status == Status::Succeeded && r.scheduled_for > Some(slow_end))?
                .clone();
            Some((slow, skipped, later))
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        skipped.reason,
        Some(format!("the previous run {} is still running", slow.run_id))
    );
    assert_eq!(skipped.trigger, Trigger::Schedule);
    assert_eq!(later.trigger, Trigger::Schedule);
    let detail = later.detail.expect("a fetch run has detail");
    assert_eq!(detail["published"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_is_cancelled_and_recorded_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_secs(10)),
    ])
    .await;
    config.fetch.source = server.url.clone();
    let schedule = parse("job = \"fetch-users\"\ncron = \"@yearly\"\ntimeout = \"500ms\"\n");
    let started = std::time::Instant::now();
    let status = runner(&config, &db.pool)
        .fire(&schedule, Trigger::Manual, None)
        .await;
    assert_eq!(status, Some(Status::TimedOut));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled at the timeout, not when the job ended"
    );
    let run = wait_for("the journal row", Duration::from_secs(10), || async {
        runs(&db.pool, "test")
            .await
            .into_iter()
            .find(|r| r.status == Status::TimedOut)
    })
    .await;
    assert_eq!(
        run.reason.as_deref(),
        Some("cancelled after the timeout of 500ms")
    );
    assert_eq!(run.trigger, Trigger::Manual);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_is_retried_with_backoff_and_each_attempt_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![Reply::json(503, "down for maintenance")]).await;
    config.fetch.source = server.url.clone();
    let schedule = parse(
        "job = \"fetch-users\"\ncron = \"@yearly\"\nretries = 2\nretry_backoff = \"300ms\"\n",
    );
    let status = runner(&config, &db.pool)
        .fire(&schedule, Trigger::Manual, None)
        .await;
    assert_eq!(status, Some(Status::Failed));
    let attempts = wait_for(
        "three finished attempts",
        Duration::from_secs(10),
        || async {
            let runs = runs(&db.pool, "test").await;
            (runs.len() == 3 && runs.iter().all(|r| r.status == Status::Failed)).then_some(runs)
        },
    )
    .await;
    assert_eq!(
        attempts.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        attempts.iter().all(|r| r.run_id == attempts[0].run_id),
        "one run, three attempts"
    );
    for r in &attempts {
        let error = r.error.as_deref().unwrap();
        assert!(error.contains("the source answered http 503"), "{error}");
    }
    let gap = |a: &RunRecord, b: &RunRecord| b.started_at - a.finished_at.unwrap();
    assert!(gap(&attempts[0], &attempts[1]) >= chrono::Duration::milliseconds(300));
    assert!(
        gap(&attempts[1], &attempts[2]) >= chrono::Duration::milliseconds(600),
        "the backoff doubles"
    );
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_edits_keeps_the_last_good_version_and_drops_removed_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, config) = setup(dir.path()).await;
    write(
        dir.path(),
        "tick",
        "job = \"fetch-users\"\ncron = \"0 0 1 1 *\"\n",
    );
    let mut userpipe = Userpipe::spawn(
        &config,
        dir.path(),
        "userpipe.log",
        &["run", "--roles", "scheduler"],
    );
    wait_for(
        "the scheduler to start",
        Duration::from_secs(30),
        || async {
            userpipe
                .log_text()
                .contains("scheduler started")
                .then_some(())
        },
    )
    .await;
    assert!(
        runs(&db.pool, "tick").await.is_empty(),
        "a yearly schedule has not fired"
    );
    assert_no_invalid_file(&userpipe);

    // An edit takes effect within 5 seconds.
    let edited = Utc::now();
    write(
        dir.path(),
        "tick",
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\n",
    );
    let first = wait_for(
        "a run of the edited schedule",
        Duration::from_secs(10),
        || async { runs(&db.pool, "tick").await.into_iter().next() },
    )
    .await;
    assert!(
        first.started_at - edited <= chrono::Duration::seconds(5),
        "took {}",
        first.started_at - edited
    );

    // A broken edit is reported with file, line and column; the last good version keeps firing.
    write(
        dir.path(),
        "tick",
        "job = \"fetch-users\"\ncron = \"* * * *\"\n",
    );
    wait_for(
        "the error to be logged",
        Duration::from_secs(10),
        || async {
            let log = userpipe.log_text();
            (log.contains("tick.toml")
                && log.contains("line=2")
                && log.contains("column=8")
                && log.contains("has 4 fields"))
            .then_some(())
        },
    )
    .await;
    let broken = Utc::now();
    wait_for(
        "the previous version to fire again",
        Duration::from_secs(10),
        || async {
            runs(&db.pool, "tick")
                .await
                .into_iter()
                .find(|r| r.started_at > broken + chrono::Duration::seconds(1))
        },
    )
    .await;

    // A removed file stops its schedule.
    std::fs::remove_file(dir.path().join("tick.toml")).unwrap();
    wait_for(
        "the removal to be logged",
        Duration::from_secs(10),
        || async {
            userpipe
                .log_text()
                .contains("schedule removed")
                .then_some(())
        },
    )
    .await;
    let removed = Utc::now();
    // Watch for three seconds: no firing may start after the removal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<RunRecord> = runs(&db.pool, "tick")
        .await
        .into_iter()
        .filter(|r| r.started_at > removed)
        .collect();
    assert!(after.is_empty(), "runs after removal: {after:?}");
    let exited = userpipe.terminate().await;
    assert!(exited.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_run_each_firing_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (kafka, db, mut config) = setup(dir.path()).await;
    // Every run takes 3 s while the schedule fires every second.
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_secs(3)),
    ])
    .await;
    config.fetch.source = server.url.clone();
    config.fetch.timeout = Duration::from_secs(60);
    write(
        dir.path(),
        "tick",
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\ntimeout = \"60s\"\n",
    );
    let args = ["run", "--roles", "scheduler"];
    let mut a = Userpipe::spawn(&config, dir.path(), "a.log", &args);
    let mut b = Userpipe::spawn(&config, dir.path(), "b.log", &args);
    let instance_of = |replica: &Userpipe| {
        let host = journal::instance();
        let host = host.rsplit_once(':').unwrap().0;
        format!("{host}:{}", replica.child.id())
    };
    let (of_a, of_b) = (instance_of(&a), instance_of(&b));
    let replicas: HashSet<String> = [of_a.clone(), of_b.clone()].into();
    let on_another_replica = "the previous run is still running on another replica";

    // The replica whose timer ticks first tends to claim every firing. So while a run goes, its replica
    // is paused: its session keeps the schedule lock, and the other replica claims the firings meanwhile
    // and finds the lock held (the cross-replica path of `overlap = "skip"`). Bounded, but generous: how
    // soon this happens depends on the machine's load, not what is asserted.
    let skipper = wait_for(
        "a firing skipped on one replica while the other one ran",
        Duration::from_secs(180),
        || async {
            let runs = runs(&db.pool, "tick").await;
            if let Some(skip) = runs
                .iter()
                .find(|r| r.reason.as_deref() == Some(on_another_replica))
            {
                return Some(skip.instance.clone());
            }
            let running = runs.iter().find(|r| r.status == Status::Running)?;
            let replica = if running.instance == of_a { &a } else { &b };
            replica.pause(Duration::from_secs(3)).await;
            None
        },
    )
    .await;
    // The paused one stops; the other then runs firings itself.
    let (ran, other) = if skipper == of_a {
        (&mut b, &mut a)
    } else {
        (&mut a, &mut b)
    };
    assert!(ran.terminate().await.success());
    wait_for(
        "the remaining replica to run a firing",
        Duration::from_secs(60),
        || async {
            runs(&db.pool, "tick")
                .await
                .iter()
                .any(|r| r.instance == skipper && r.status == Status::Succeeded)
                .then_some(())
        },
    )
    .await;
    assert!(other.terminate().await.success());

    let runs: Vec<RunRecord> = runs(&db.pool, "tick")
        .await
        .into_iter()
        .filter(|r| r.trigger == Trigger::Schedule)
        .collect();
    let instances: HashSet<String> = runs.iter().map(|r| r.instance.clone()).collect();
    assert_eq!(
        instances, replicas,
        "the journal names both replicas, and only them"
    );
    // Each firing has one record (run or skipped) on one replica, the one that claimed it.
    let firings: Vec<DateTime<Utc>> = runs.iter().filter_map(|r| r.scheduled_for).collect();
    let distinct: HashSet<DateTime<Utc>> = firings.iter().copied().collect();
    assert_eq!(
        firings.len(),
        runs.len(),
        "every scheduled run names its firing"
    );
    assert_eq!(
        firings.len(),
        distinct.len(),
        "a firing ran twice: {runs:?}"
    );
    // And every firing from the first to the last has its record: none was lost between the replicas.
    let (first, last) = (
        *distinct.iter().min().unwrap(),
        *distinct.iter().max().unwrap(),
    );
    assert_eq!(
        distinct.len() as i64,
        (last - first).num_seconds() + 1,
        "a firing between {first} and {last} has no record"
    );
    let claims: HashMap<DateTime<Utc>, (uuid::Uuid, String)> = sqlx::query_as(
        "SELECT scheduled_for, run_id, instance FROM job_firings WHERE schedule = 'tick'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(at, run_id, instance): (DateTime<Utc>, uuid::Uuid, String)| (at, (run_id, instance)))
    .collect();
    for run in &runs {
        let claim = claims.get(&run.scheduled_for.unwrap());
        assert_eq!(
            claim,
            Some(&(run.run_id, run.instance.clone())),
            "{run:?} is not the run that claimed its firing"
        );
    }
    // A firing that came while a run was going is skipped, here or on the other replica, never run.
    for run in runs.iter().filter(|r| r.status != Status::Succeeded) {
        assert_eq!(run.status, Status::Skipped, "{run:?}");
        let reason = run.reason.as_deref().unwrap_or_default();
        assert!(
            reason == on_another_replica || reason.starts_with("the previous run "),
            "{run:?}"
        );
    }
    // overlap = "skip" across replicas: no two runs went on at once, whichever replica ran them.
    let mut ran: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.status == Status::Succeeded)
        .collect();
    ran.sort_by_key(|r| r.started_at);
    for pair in ran.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].finished_at.unwrap(),
            "two runs at once: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    let succeeded = ran.len();
    // Each run published the page's two users: twice as many users as runs, each pair from one run.
    let published = consume(
        &kafka.brokers,
        &config.topics.users,
        2 * succeeded,
        Duration::from_secs(30),
    )
    .await;
    let from_runs: HashSet<String> = published
        .iter()
        .map(|m| {
            let user: Value =
                serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
            user["fetch_run_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let run_ids: HashSet<String> = ran.iter().map(|r| r.run_id.to_string()).collect();
    assert_eq!(from_runs, run_ids);
    let (_, total) = lag_and_total(
        &kafka.brokers,
        "none",
        &config.topics.users,
        config.kafka.partitions,
    );
    assert_eq!(total as usize, 2 * succeeded, "no run published twice");
}

/// The `job run finished` events of a JSON log: (run id, attempt) -> status.
fn finished_events(log: &str) -> HashMap<(String, i64), String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "job run finished")
        .map(|event| {
            (
                (
                    event["run_id"].as_str().unwrap().to_owned(),
                    event["attempt"].as_i64().unwrap(),
                ),
                event["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_rows_match_the_log_and_an_interrupted_run_becomes_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_secs(120)),
    ])
    .await;
    config.fetch.source = server.url.clone();
    config.fetch.timeout = Duration::from_secs(300);
    write(
        dir.path(),
        "slow",
        "job = \"fetch-users\"\ncron = \"@yearly\"\nrun_on_start = true\ntimeout = \"10m\"\n",
    );
    write(
        dir.path(),
        "quick",
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\n[params]\nsource = \"generator\"\n",
    );
    let args = ["--log-format", "json", "run", "--roles", "scheduler"];

    let mut first = Userpipe::spawn(&config, dir.path(), "first.log", &args);
    let slow = wait_for(
        "the slow run to be running, and quick runs done",
        Duration::from_secs(30),
        || async {
            let slow = runs(&db.pool, "slow")
                .await
                .into_iter()
                .find(|r| r.status == Status::Running)?;
            (runs(&db.pool, "quick")
                .await
                .iter()
                .filter(|r| r.status == Status::Succeeded)
                .count()
                >= 3)
                .then_some(slow)
        },
    )
    .await;
    assert_eq!(slow.trigger, Trigger::Start);
    first.kill();

    std::fs::remove_file(dir.path().join("slow.toml")).unwrap();
    let mut second = Userpipe::spawn(&config, dir.path(), "second.log", &args);
    let abandoned = wait_for(
        "the interrupted run to be marked abandoned",
        Duration::from_secs(30),
        || async {
            runs(&db.pool, "slow")
                .await
                .into_iter()
                .find(|r| r.run_id == slow.run_id && r.status == Status::Abandoned)
        },
    )
    .await;
    assert_eq!(
        abandoned.reason.as_deref(),
        Some("the process running it stopped before it finished")
    );
    assert!(abandoned.finished_at.is_some());
    wait_for(
        "the second process to run quick",
        Duration::from_secs(30),
        || async { (finished_events(&second.log_text()).len() >= 2).then_some(()) },
    )
    .await;
    assert!(second.terminate().await.success());
    assert_no_invalid_file(&first);
    assert_no_invalid_file(&second);

    // Every finished event the second process logged is in the table, as logged; so is every row the first
    // process wrote before it was killed.
    let table: HashMap<(String, i64), String> = runs(&db.pool, "quick")
        .await
        .into_iter()
        .filter(|r| r.status != Status::Running)
        .map(|r| {
            (
                (r.run_id.to_string(), r.attempt as i64),
                r.status.to_string(),
            )
        })
        .collect();
    let second_events = finished_events(&second.log_text());
    for (key, status) in &second_events {
        assert_eq!(table.get(key), Some(status), "{key:?} logged as {status}");
    }
    let first_events = finished_events(&first.log_text());
    // Except a run the first process was killed in, whose end it may have logged but not yet written: the
    // row stayed `running`, and the second process marked it abandoned, as its log says.
    let marked: HashSet<(String, i64)> = second
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "job run marked abandoned")
        .map(|event| {
            (
                event["run_id"].as_str().unwrap().to_owned(),
                event["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    for (key, status) in &table {
        if status == "abandoned" {
            assert!(marked.contains(key), "row {key:?} is abandoned unmarked");
            continue;
        }
        let logged = first_events.get(key).or_else(|| second_events.get(key));
        assert_eq!(
            logged,
            Some(status),
            "row {key:?} is {status} but the log says {logged:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_a_job_still_runs_and_its_record_reaches_the_table_once_it_is_back() {
    let kafka = TestKafka::new();
    let cluster = crate::support::cluster::TestCluster::start();
    let config = config_for(&kafka, &cluster.url());
    userpipe::pipeline::topics::ensure(&config, &config.topics)
        .await
        .unwrap();
    let pool = userpipe::db::lazy_pool(&cluster.url(), 2).unwrap();
    userpipe::db::migrate(&pool).await.unwrap();
    cluster.stop();

    let schedule = parse(
        "job = \"fetch-users\"\ncron = \"@yearly\"\n[params]\nsource = \"generator\"\nresults = 3\n",
    );
    let status = runner(&config, &pool)
        .fire(&schedule, Trigger::Manual, None)
        .await;
    assert_eq!(
        status,
        Some(Status::Succeeded),
        "fetch-users does not need postgresql"
    );
    let published = consume(
        &kafka.brokers,
        &config.topics.users,
        3,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(published.len(), 3);

    cluster.start_again();
    let record = wait_for(
        "the run's record in job_runs",
        Duration::from_secs(60),
        || async {
            let filter = RunFilter {
                schedule: Some("test".into()),
                limit: 10,
                ..Default::default()
            };
            journal::list(&pool, &filter)
                .await
                .ok()?
                .into_iter()
                .find(|r| r.status == Status::Succeeded)
        },
    )
    .await;
    assert_eq!(record.trigger, Trigger::Manual);
    assert_eq!(record.detail.expect("detail")["published"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_allow_jitter_and_enabled_false_do_what_they_say_beside_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, config) = setup(dir.path()).await;
    // Every answer takes 2.5 s: a run every second overlaps the next ones.
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_millis(2500)),
    ])
    .await;
    let fetch = |cron: &str, more: &str| {
        format!(
            "job = \"fetch-users\"\ncron = \"{cron}\"\ntimeout = \"30s\"\n{more}\n[params]\nsource = \"{}\"\n",
            server.url
        )
    };
    write(
        dir.path(),
        "allow",
        &fetch("* * * * * *", "overlap = \"allow\""),
    );
    write(dir.path(), "off", &fetch("* * * * * *", "enabled = false"));
    // Runs that may overlap, so each firing waits its own jitter.
    write(
        dir.path(),
        "jittered",
        "job = \"fetch-users\"\ncron = \"*/2 * * * * *\"\njitter = \"20s\"\noverlap = \"allow\"\n[params]\nsource = \"generator\"\n",
    );
    write(
        dir.path(),
        "broken",
        "job = \"fetch-users\"\ncron = \"* * *\"\n",
    );
    let (shutdown, task) = start_scheduler(&config, &db.pool);

    let (allowed, jittered) = wait_for(
        "overlapping runs, and the first six jittered firings run",
        Duration::from_secs(120),
        || async {
            let allowed: Vec<RunRecord> = runs(&db.pool, "allow")
                .await
                .into_iter()
                .filter(|r| r.status == Status::Succeeded)
                .collect();
            // The first six firings, by their planned time, once each has run.
            let mut jittered: Vec<RunRecord> = runs(&db.pool, "jittered").await;
            jittered.sort_by_key(|r| r.scheduled_for);
            jittered.truncate(6);
            let done = jittered.len() == 6
                && jittered.iter().all(|r| r.status == Status::Succeeded)
                && jittered.windows(2).all(|w| {
                    w[1].scheduled_for.unwrap() - w[0].scheduled_for.unwrap()
                        == chrono::Duration::seconds(2)
                });
            (allowed.len() >= 3 && done).then_some((allowed, jittered))
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // overlap = "allow": a firing runs while the one before still goes; none is skipped.
    let all = runs(&db.pool, "allow").await;
    assert!(all.iter().all(|r| r.status != Status::Skipped), "{all:?}");
    assert!(
        allowed
            .windows(2)
            .any(|w| w[1].started_at < w[0].finished_at.unwrap()),
        "no two runs went on at once: {allowed:?}"
    );
    // enabled = false: never fires.
    let off = runs(&db.pool, "off").await;
    assert!(off.is_empty(), "{off:?}");
    // jitter = "20s": each run starts a random delay of up to 20 s after its firing, plus the moment the
    // scheduler takes to start it (the timer's half-second tick; the guards wait 3 s at most each). Six
    // delays drawn from 0..=20 s are all under 3 s once in 90,000 tries; a scheduler that ignores jitter
    // starts every run within the moment.
    let delays: Vec<chrono::Duration> = jittered
        .iter()
        .map(|r| r.started_at - r.scheduled_for.unwrap())
        .collect();
    assert!(
        delays
            .iter()
            .all(|d| *d >= chrono::Duration::zero() && *d <= chrono::Duration::seconds(27)),
        "a run started before its firing or past its jitter: {delays:?}"
    );
    assert!(
        delays.iter().any(|d| *d > chrono::Duration::seconds(3)),
        "no run was delayed by its jitter: {delays:?}"
    );
    // The broken file is not a schedule, and it stopped none of the others.
    let broken = runs(&db.pool, "broken").await;
    assert!(broken.is_empty(), "{broken:?}");
}
