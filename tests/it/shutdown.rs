//! `userpipe run` exits 0 within 10 seconds of a SIGTERM with every role running (the default), in the
//! middle of a batch, with the Kafka broker gone (a private broker of this test, killed mid-stream); what
//! it could not finish is done by the next start, and nothing is lost. PostgreSQL gone is in `sink.rs`.

use std::collections::HashSet;
use std::time::Duration;

use uuid::Uuid;

use crate::pipeline::{generated_users, publish_users, wait_for_rows};
use crate::support::broker::TestBroker;
use crate::support::{TestDb, TestKafka, Userpipe, config_for, prepare, row_count, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_killed_mid_stream_a_sigterm_exits_0_within_10_seconds_and_nothing_is_lost()
{
    let mut broker = TestBroker::start().await;
    let (names, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let mut config = config_for(&names, &db.url());
    config.kafka.brokers = broker.brokers();
    config.scheduler.dir = dir.path().join("schedules");
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    // Small batches, so that the kill lands with batches in flight.
    config.stages.batch_size = 200;
    config.sink.batch_size = 200;
    prepare(&config, &db.pool).await;
    let users = generated_users(20_000, 31, None);
    publish_users(&config, &users).await;

    let mut child = Userpipe::spawn(&config, dir.path(), "first.log", &["run"]);
    let at_kill = wait_for("rows to arrive", Duration::from_secs(120), || async {
        let n = row_count(&db.pool).await;
        (n > 0).then_some(n)
    })
    .await;
    broker.stop();
    assert!(
        at_kill < users.len() as i64,
        "the broker went after every row was in"
    );
    let exited = child.terminate().await;
    assert!(exited.success(), "exit status {exited}");

    broker.start_again().await;
    let mut child = Userpipe::spawn(&config, dir.path(), "second.log", &["run"]);
    wait_for_rows(&db.pool, users.len() as i64, Duration::from_secs(180)).await;
    let ids: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM random_users")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: HashSet<Uuid> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, expected);
    let exited = child.terminate().await;
    assert!(exited.success(), "exit status {exited}");
}
