//! Kafka down at start blocks nothing that does not need it: `userpipe run` serves its HTTP endpoints, the
//! scheduler takes a verified base backup, `/readyz` names Kafka as what is missing and which roles wait
//! for it, and `jobs run` of a backup needs no Kafka. Once the broker is up the waiting roles start and
//! users flow. Kafka is a private broker of this test; PostgreSQL a private cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use userpipe::app::{App, Role};
use userpipe::config::{Config, Secret};
use userpipe::http::Readiness;
use userpipe::scheduler::journal::Status;

use super::{runs, write_schedule};
use crate::support::broker::TestBroker;
use crate::support::cluster::TestCluster;
use crate::support::{TestKafka, config_for, row_count, wait_for};

/// All of userpipe on `cluster` and the broker at `brokers`, with its schedules, backups and config file in
/// `dir`.
fn config(brokers: &str, cluster: &TestCluster, dir: &Path) -> Config {
    let names = TestKafka::new();
    let mut config = config_for(&names, &cluster.url());
    config.kafka.brokers = brokers.to_owned();
    config.database.url = Secret::new(cluster.url());
    config.scheduler.dir = dir.join("schedules");
    config.backup.dir = dir.join("backups");
    config.backup.wal_archive = cluster.archive();
    config.backup.scratch = cluster.make_dir("scratch");
    config.backup.pg_bin =
        PathBuf::from(std::env::var("USERPIPE_PG_BIN").expect("USERPIPE_PG_BIN"));
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    config
}

async fn readiness(url: &str) -> Option<(u16, Readiness)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_down_every_role_starts_backups_run_and_readyz_names_kafka() {
    let mut broker = TestBroker::start().await;
    broker.stop();
    let cluster = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&broker.brokers(), &cluster, dir.path());
    write_schedule(
        &config.scheduler.dir,
        "backup",
        "job = \"base-backup\"\ncron = \"@yearly\"\nrun_on_start = true\ntimeout = \"5m\"\n",
    );

    let app = tokio::time::timeout(Duration::from_secs(15), App::build(&config, &Role::ALL))
        .await
        .expect("built at once while kafka is down")
        .expect("built");
    let readyz = format!("http://127.0.0.1:{}/readyz", app.http_port().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));

    let (status, waiting) = wait_for(
        "readyz to name kafka and the roles waiting for it",
        Duration::from_secs(60),
        || async {
            let (status, r) = readiness(&readyz).await?;
            (r.postgresql == "ok" && r.roles.get("sink")? == "waiting for kafka")
                .then_some((status, r))
        },
    )
    .await;
    assert_eq!(status, 503);
    assert!(!waiting.ready);
    assert_eq!(waiting.missing, ["kafka"], "{waiting:?}");
    assert!(waiting.kafka.starts_with("unreachable"), "{waiting:?}");
    for role in ["timestamp", "tags", "sink"] {
        assert_eq!(waiting.roles[role], "waiting for kafka", "{waiting:?}");
    }
    assert_eq!(waiting.roles["scheduler"], "running", "{waiting:?}");

    // The scheduler runs its backup meanwhile.
    let pool = userpipe::db::connect(&cluster.url(), 1).await.unwrap();
    let backup = wait_for(
        "the backup run at start to succeed",
        Duration::from_secs(120),
        || async {
            runs(&pool, "backup")
                .await
                .into_iter()
                .find(|r| r.status != Status::Running)
        },
    )
    .await;
    assert_eq!(backup.status, Status::Succeeded, "{backup:?}");
    assert_eq!(backup.detail.as_ref().unwrap()["verified"], true);

    // `jobs run` of a backup needs no Kafka either.
    let file = dir.path().join("userpipe.toml");
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_userpipe"));
    command
        .arg("--config")
        .arg(&file)
        .args(["jobs", "run", "backup"]);
    for (name, _) in userpipe::config::ENV_OVERRIDES {
        command.env_remove(name);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "jobs run backup: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let backups = userpipe::pg::backup::list(&config.backup.dir).unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");

    // The broker comes: the waiting roles start, and users flow end to end.
    broker.start_again().await;
    let ready = wait_for(
        "ready once kafka is up",
        Duration::from_secs(90),
        || async {
            let (status, r) = readiness(&readyz).await?;
            (status == 200).then_some(r)
        },
    )
    .await;
    assert!(ready.missing.is_empty() && ready.roles.values().all(|r| r == "running"));
    let producer = userpipe::kafka::producer(&config.kafka).unwrap();
    userpipe::pipeline::fetch::run(&config, &producer, 20, uuid::Uuid::new_v4())
        .await
        .expect("publish 20 users");
    wait_for("20 rows", Duration::from_secs(90), || async {
        (row_count(&pool).await == 20).then_some(())
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops within 10 seconds")
        .unwrap()
        .unwrap();
}
