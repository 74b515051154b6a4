//! The cross-replica guards with the shared pool run dry: two replicas whose every pooled connection is
//! busy (a sink writing, a slow scrape) still run each firing once and keep `overlap = "skip"` across
//! them, because the firing claims and schedule locks have connections of their own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use userpipe::config::Config;
use userpipe::scheduler::journal::{Journal, Status, Trigger};
use userpipe::scheduler::{Runner, schedule};

use crate::support::randomuser::{FakeRandomUser, Reply, fixture_page};
use crate::support::{TestDb, TestKafka, config_for, prepare};

/// A replica: a runner whose pool (2 connections) is held busy by the returned connections.
async fn replica_with_its_pool_exhausted(
    config: &Config,
    db: &TestDb,
) -> (Arc<Runner>, Vec<sqlx::pool::PoolConnection<sqlx::Postgres>>) {
    let pool = userpipe::db::lazy_pool(&db.url(), 2).unwrap();
    let held = vec![pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
    // Records go to the log only: the journal's table writes would wait for the same pool.
    let (journal, _) = Journal::start(None, CancellationToken::new());
    let runner = Runner::new(config.clone(), Some(pool), journal).unwrap();
    (runner, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shared_pool_exhausted_each_firing_runs_once_and_overlap_holds_across_replicas() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let mut config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_secs(6)),
        Reply::json(200, fixture_page()),
    ])
    .await;
    config.fetch.source = server.url.clone();
    config.fetch.max_attempts = 1;
    let (a, _held_a) = replica_with_its_pool_exhausted(&config, &db).await;
    let (b, _held_b) = replica_with_its_pool_exhausted(&config, &db).await;
    let quick = schedule::parse(
        Path::new("quick.toml"),
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\n[params]\nsource = \"generator\"\n",
    )
    .unwrap();

    // The same firing on both replicas at once: one runs it, the other leaves it.
    let at: DateTime<Utc> = "2026-05-01T12:00:00Z".parse().unwrap();
    let (on_a, on_b) = tokio::join!(
        a.fire(&quick, Trigger::Schedule, Some(at)),
        b.fire(&quick, Trigger::Schedule, Some(at))
    );
    let mut outcomes = [on_a, on_b];
    outcomes.sort_by_key(|o| o.is_some());
    assert_eq!(
        outcomes,
        [None, Some(Status::Succeeded)],
        "the firing ran on both replicas or on none"
    );
    let claims: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_firings WHERE schedule = 'quick' AND scheduled_for = $1",
    )
    .bind(at)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(claims, 1);

    // A slow run on one replica: a firing of the same schedule on the other is skipped.
    let slow = schedule::parse(
        Path::new("slow.toml"),
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\ntimeout = \"1m\"\n",
    )
    .unwrap();
    let first = {
        let (a, slow) = (a.clone(), slow.clone());
        tokio::spawn(async move { a.fire(&slow, Trigger::Schedule, Some(at)).await })
    };
    crate::support::wait_for(
        "the slow run to ask for its page",
        Duration::from_secs(20),
        || async { (!server.seen().is_empty()).then_some(()) },
    )
    .await;
    let second = b
        .fire(
            &slow,
            Trigger::Schedule,
            Some(at + chrono::Duration::seconds(1)),
        )
        .await;
    assert_eq!(
        second,
        Some(Status::Skipped),
        "both replicas ran the schedule at once"
    );
    assert_eq!(first.await.unwrap(), Some(Status::Succeeded));
}
