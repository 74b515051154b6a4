//! The HTTP endpoints of `userpipe run` against the real stack: metrics that parse and move, readiness that
//! follows PostgreSQL, and a configuration dump that keeps the password to itself.

use std::time::Duration;

use userpipe::app::Role;
use userpipe::http::Readiness;

use crate::support::cluster::TestCluster;
use crate::support::{
    TestDb, TestKafka, Userpipe, config_for, prepare, sample, scrape, start_app, unique, wait_for,
    write_backup,
};

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (
        response.status().as_u16(),
        response.text().await.expect("a body"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_this_process_s_users_and_runs_and_api_jobs_filters_limits_and_answers_in_time()
 {
    let (kafka, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let mut config = config_for(&kafka, &db.url());
    // One verified backup and one that failed verification, later: the gauge shows the verified one.
    let backups = tempfile::tempdir().unwrap();
    let verified_at: chrono::DateTime<chrono::Utc> = "2026-11-21T02:03:04Z".parse().unwrap();
    write_backup(backups.path(), "20261121T020000Z", verified_at, true);
    write_backup(
        backups.path(),
        "20261128T020000Z",
        verified_at + chrono::Duration::days(7),
        false,
    );
    config.backup.dir = backups.path().to_owned();
    // A schedule of this test's own: 50 users from the generator, once at start.
    config.scheduler.dir = dir.path().join("schedules");
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    let schedule = unique("metrics");
    std::fs::write(
        config.scheduler.dir.join(format!("{schedule}.toml")),
        "job = \"fetch-users\"\ncron = \"@yearly\"\nrun_on_start = true\n[params]\nsource = \"generator\"\nresults = 50\n",
    )
    .unwrap();
    prepare(&config, &db.pool).await;
    // A process of its own: its registry counts nothing but this test's traffic.
    let mut up = Userpipe::spawn(&config, dir.path(), "userpipe.log", &["run"]);
    let base = up.http_base().await;
    assert_eq!(
        get(&format!("{base}/healthz")).await,
        (200, "ok\n".to_owned())
    );
    wait_for("50 rows", Duration::from_secs(60), || async {
        (crate::support::row_count(&db.pool).await == 50).then_some(())
    })
    .await;
    let body = wait_for("the run to be counted", Duration::from_secs(30), || async {
        let body = scrape(&base).await;
        let runs = [("schedule", schedule.as_str()), ("status", "succeeded")];
        (sample(&body, "userpipe_job_runs_total", &runs) == Some(1.0)).then_some(body)
    })
    .await;
    // The scheduler and the HTTP run-now share the process's one journal writer, so one owner.
    wait_for(
        "the run journaled with its owner",
        Duration::from_secs(30),
        || async {
            let owner: Option<Option<uuid::Uuid>> = sqlx::query_scalar(
                "SELECT owner FROM job_runs WHERE schedule = $1 AND status = 'succeeded'",
            )
            .bind(&schedule)
            .fetch_optional(&db.pool)
            .await
            .ok()?;
            owner.flatten()
        },
    )
    .await;
    let owners: i64 = sqlx::query_scalar("SELECT count(*) FROM job_owners")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(owners, 1, "journal owners registered by one userpipe run");
    let stage = |name: &str, stage: &str| sample(&body, name, &[("stage", stage)]);
    for (name, at, n) in [
        ("userpipe_consumed_total", "timestamp", 50.0),
        ("userpipe_produced_total", "timestamp", 50.0),
        ("userpipe_consumed_total", "tags", 50.0),
        ("userpipe_produced_total", "tags", 50.0),
        ("userpipe_consumed_total", "sink", 50.0),
        ("userpipe_produced_total", "sink", 50.0),
        ("userpipe_dead_lettered_total", "sink", 0.0),
    ] {
        assert_eq!(
            stage(name, at).unwrap_or(0.0),
            n,
            "{name}{{stage={at}}}\n{body}"
        );
    }
    assert_eq!(
        sample(&body, "userpipe_sink_batch_rows_sum", &[]),
        Some(50.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "userpipe_job_duration_seconds_count",
            &[("schedule", &schedule)]
        ),
        Some(1.0),
        "{body}"
    );
    let newest = sample(
        &body,
        "userpipe_last_verified_backup_timestamp_seconds",
        &[],
    );
    assert_eq!(newest, Some(verified_at.timestamp() as f64));

    // /api/jobs: a second run of the schedule, then its filters and limit.
    let manual = crate::support::userpipe_output(&config, dir.path(), &["jobs", "run", &schedule]);
    assert!(manual.status.success(), "{manual:?}");
    let jobs = |query: String| {
        let url = format!("{base}/api/jobs{query}");
        async move {
            let (status, body) = get(&url).await;
            assert_eq!(status, 200, "{url}: {body}");
            let runs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
            runs.iter()
                .map(|r| {
                    (
                        r["schedule"].as_str().unwrap().to_owned(),
                        r["trigger"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let mine = |triggers: &[&str]| {
        triggers
            .iter()
            .map(|t| (schedule.clone(), (*t).to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        jobs(format!("?schedule={schedule}")).await,
        mine(&["manual", "start"])
    );
    assert_eq!(
        jobs(format!("?schedule={schedule}&limit=1")).await,
        mine(&["manual"])
    );
    assert_eq!(
        jobs(format!("?schedule={schedule}&status=succeeded")).await,
        mine(&["manual", "start"])
    );
    assert_eq!(
        jobs(format!("?schedule={schedule}&status=failed")).await,
        mine(&[])
    );
    assert_eq!(jobs("?schedule=another".into()).await, mine(&[]));
    let (status, body) = get(&format!("{base}/api/jobs?status=done")).await;
    assert_eq!(status, 400, "{body}");

    // PostgreSQL holding the journal locked: /api/jobs answers within its bound, and says why.
    let mut locker = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let response = client
        .get(format!("{base}/api/jobs"))
        .send()
        .await
        .expect("an answer while the journal is locked");
    let took = asked.elapsed();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        "postgresql did not answer within 5s\n"
    );
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    locker.rollback().await.unwrap();
    assert!(up.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_unready_while_postgres_is_down_and_ready_when_it_returns() {
    let kafka = TestKafka::new();
    let cluster = TestCluster::start();
    let config = config_for(&kafka, &cluster.url());
    let (base, shutdown, task) = start_app(&config, &Role::PIPELINE).await;
    let readyz = format!("{base}/readyz");
    let readiness = |want: u16| {
        let readyz = readyz.clone();
        async move {
            let (status, body) = get(&readyz).await;
            (status == want)
                .then(|| serde_json::from_str::<Readiness>(&body).expect("readiness json"))
        }
    };

    let ready = wait_for("ready", Duration::from_secs(30), || readiness(200)).await;
    assert!(ready.ready && ready.kafka == "ok" && ready.postgresql == "ok");
    assert_eq!(ready.roles.len(), 3);

    cluster.stop();
    let unready = wait_for("unready", Duration::from_secs(30), || readiness(503)).await;
    assert!(!unready.ready);
    assert!(unready.postgresql.starts_with("unreachable"), "{unready:?}");
    assert_eq!(unready.kafka, "ok");

    cluster.start_again();
    wait_for("ready again", Duration::from_secs(30), || readiness(200)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[test]
fn config_show_never_prints_the_database_password() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_userpipe"))
        .args(["config", "show"])
        .env(
            "DATABASE_URL",
            "postgres://pipe:s3cr3t-Pa55@db.example:5432/users",
        )
        .env_remove("USERPIPE_CONFIG")
        .output()
        .expect("run userpipe config show");
    assert!(output.status.success());
    let shown = String::from_utf8(output.stdout).unwrap();
    let errors = String::from_utf8(output.stderr).unwrap();
    assert!(
        !shown.contains("s3cr3t") && !errors.contains("s3cr3t"),
        "{shown}{errors}"
    );
    assert!(
        shown.contains("postgres://pipe:***@db.example:5432/users"),
        "{shown}"
    );
}
