//! The HTTP endpoints of `userpipe run` against the real stack: metrics that parse and move, readiness that
//! follows PostgreSQL, and a configuration dump that keeps the password to itself.

use std::time::Duration;

use userpipe::app::Role;
use userpipe::http::Readiness;

use crate::support::cluster::TestCluster;
use crate::support::{TestDb, TestKafka, config_for, prepare, sample, start_app, wait_for};

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (
        response.status().as_u16(),
        response.text().await.expect("a body"),
    )
}

/// A backup folder with its `backup.json`, as a base-backup run leaves it.
fn write_backup(
    dir: &std::path::Path,
    id: &str,
    finished_at: chrono::DateTime<chrono::Utc>,
    ok: bool,
) {
    let metadata = userpipe::pg::backup::Metadata {
        id: id.to_owned(),
        label: format!("userpipe {id}"),
        started_at: finished_at - chrono::Duration::minutes(3),
        finished_at,
        bytes: 1,
        server_version: "15.18".into(),
        server_version_num: 150018,
        pg_basebackup: "pg_basebackup (PostgreSQL) 15.18".into(),
        timeline: 1,
        start_lsn: "0/2000028".into(),
        end_lsn: "0/2000100".into(),
        start_wal: None,
        verification: userpipe::pg::backup::Verification {
            ok,
            at: finished_at,
            problems: Vec::new(),
        },
        compressed: None,
    };
    let folder = dir.join(id);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("backup.json"),
        serde_json::to_vec(&metadata).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_their_counters_move_when_users_flow() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
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
    prepare(&config, &db.pool).await;
    let (base, shutdown, task) = start_app(&config, &Role::PIPELINE).await;

    assert_eq!(
        get(&format!("{base}/healthz")).await,
        (200, "ok\n".to_owned())
    );
    let (status, body) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let before =
        |stage: &str| sample(&body, "userpipe_consumed_total", &[("stage", stage)]).unwrap_or(0.0);
    let (timestamp0, sink0) = (before("timestamp"), before("sink"));

    let producer = userpipe::kafka::producer(&config.kafka).unwrap();
    userpipe::pipeline::fetch::run(&config, &producer, 50, uuid::Uuid::new_v4())
        .await
        .expect("publish 50 users");
    wait_for("50 rows", Duration::from_secs(60), || async {
        (crate::support::row_count(&db.pool).await == 50).then_some(())
    })
    .await;

    let (_, body) = get(&format!("{base}/metrics")).await;
    let now = |name: &str, stage: &str| sample(&body, name, &[("stage", stage)]).unwrap_or(0.0);
    assert!(
        now("userpipe_consumed_total", "timestamp") >= timestamp0 + 50.0,
        "{body}"
    );
    assert!(
        now("userpipe_consumed_total", "sink") >= sink0 + 50.0,
        "{body}"
    );
    assert!(now("userpipe_produced_total", "tags") >= 50.0, "{body}");
    assert!(now("userpipe_produced_total", "sink") >= 50.0, "{body}");
    assert!(body.contains("userpipe_sink_batch_rows_bucket"), "{body}");
    assert!(body.contains("userpipe_dead_lettered_total"), "{body}");
    let newest = sample(
        &body,
        "userpipe_last_verified_backup_timestamp_seconds",
        &[],
    );
    assert_eq!(newest, Some(verified_at.timestamp() as f64));

    let (status, body) = get(&format!("{base}/api/jobs")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!([])
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
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
