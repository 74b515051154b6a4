//! The fault campaign: a stream of users through `userpipe run` (the stages, the sink and the scheduler
//! with a fetch schedule) while the broker is stopped for 15 seconds, while Kafka takes no records for
//! longer than `kafka.delivery_timeout` (deliveries fail and are sent again), while PostgreSQL restarts, and
//! while the process is SIGKILLed ten times during a 50,000-user flow. Each time every user published lands in
//! `random_users` exactly once, no dead letter is written for the fault that passed, and the journal keeps
//! no run in `running`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use userpipe::app::{App, Role};
use userpipe::config::{Config, dead_letter_topic};
use userpipe::kafka::Outbound;
use userpipe::pipeline::fetch::generator::Generator;
use userpipe::pipeline::record;
use uuid::Uuid;

use super::write_schedule;
use crate::support::broker::{ProduceGate, TestBroker};
use crate::support::cluster::TestCluster;
use crate::support::{
    TestDb, TestKafka, Userpipe, config_for, consume, lag_and_total, prepare, row_count, wait_for,
};

/// Users in the stream besides the scheduler's.
const STREAM: usize = 20_000;

/// A configuration for `database_url` with its schedules in `dir`, and small batches so that a fault
/// lands while work is in flight.
fn campaign_config(names: &TestKafka, database_url: &str, dir: &Path) -> Config {
    let mut config = config_for(names, database_url);
    config.scheduler.dir = dir.join("schedules");
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    config.stages.batch_size = 500;
    config.sink.batch_size = 500;
    config
}

/// A fetch schedule every second, `results` users a run, from the built-in generator.
fn fetch_schedule(config: &Config, results: usize, enabled: bool) {
    write_schedule(
        &config.scheduler.dir,
        "users",
        &format!(
            "job = \"fetch-users\"\ncron = \"* * * * * *\"\nenabled = {enabled}\ntimeout = \"2m\"\n\
             [params]\nsource = \"generator\"\nresults = {results}\n"
        ),
    );
}

/// Publishes `n` generated users to the users topic, as `fetch` does.
async fn publish_stream(config: &Config, n: usize, seed: u64) {
    let mut generator = Generator::new(Some(seed));
    let producer = userpipe::kafka::producer(&config.kafka).unwrap();
    for _ in 0..n.div_ceil(5000) {
        let records: Vec<Outbound> = (0..5000)
            .map(|_| {
                let id = Uuid::new_v4();
                let user = record::user_from_randomuser(&generator.result(), id, None).unwrap();
                Outbound {
                    topic: config.topics.users.as_str().into(),
                    key: Some(id.to_string().into_bytes()),
                    payload: serde_json::to_vec(&user).unwrap(),
                    headers: Vec::new(),
                }
            })
            .collect();
        userpipe::pipeline::fetch::publish(config, &producer, &records)
            .await
            .expect("publish the stream");
    }
}

/// Messages in `topic`, or `None` while the broker cannot say (it is coming back).
fn try_total(config: &Config, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = userpipe::kafka::base_config(&config.kafka.brokers)
        .create()
        .ok()?;
    let mut total = 0;
    for partition in 0..config.kafka.partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .ok()?;
        total += high - low;
    }
    Some(total)
}

/// Messages in `topic`, waiting while the broker cannot say.
async fn total(config: &Config, topic: &str) -> i64 {
    wait_for(
        &format!("the size of {topic}"),
        Duration::from_secs(60),
        || async { try_total(config, topic) },
    )
    .await
}

/// Every user in the users topic is one row, no dead-letter topic has a message, and no run of the journal
/// stays `running`.
async fn assert_every_user_landed_once(config: &Config, pool: &PgPool) {
    // The fetch schedule is off: once the last runs are done, the topic stops growing and the rows catch up.
    let published = wait_for(
        "every published user to become a row",
        Duration::from_secs(300),
        || async {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM job_runs WHERE schedule = 'users' AND status = 'running'",
            )
            .fetch_one(pool)
            .await
            .ok()?;
            let published = try_total(config, &config.topics.users)?;
            (running == 0 && row_count(pool).await == published).then_some(published)
        },
    )
    .await;
    let messages = consume(
        &config.kafka.brokers,
        &config.topics.users,
        published as usize,
        Duration::from_secs(120),
    )
    .await;
    let ids: HashSet<Uuid> = messages
        .iter()
        .map(|m| {
            let user: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            user["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let rows: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM random_users")
        .fetch_all(pool)
        .await
        .unwrap();
    let landed: HashSet<Uuid> = rows.iter().copied().collect();
    assert_eq!(rows.len(), ids.len(), "as many rows as users");
    assert!(landed == ids, "the rows are not the published users");
    for topic in [
        &config.topics.users,
        &config.topics.timestamped,
        &config.topics.enriched,
    ] {
        let dead = total(config, &dead_letter_topic(topic)).await;
        assert_eq!(dead, 0, "dead letters in {topic}.dlq");
    }
    wait_for(
        "no job run left running",
        Duration::from_secs(90),
        || async {
            let running: i64 =
                sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE status = 'running'")
                    .fetch_one(pool)
                    .await
                    .ok()?;
            (running == 0).then_some(())
        },
    )
    .await;
}

/// `userpipe run` with every role, in this process.
async fn run_in_process(
    config: &Config,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let app = App::build(config, &Role::ALL).await.expect("build");
    let shutdown = CancellationToken::new();
    (shutdown.clone(), tokio::spawn(app.run(shutdown)))
}

async fn stop_in_process(
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops within 10 seconds")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_for_fifteen_seconds_mid_stream_loses_and_dead_letters_nothing() {
    let mut broker = TestBroker::start().await;
    let (names, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let mut config = campaign_config(&names, &db.url(), dir.path());
    config.kafka.brokers = broker.brokers();
    prepare(&config, &db.pool).await;
    fetch_schedule(&config, 20, true);
    let (shutdown, task) = run_in_process(&config).await;
    publish_stream(&config, STREAM, 41).await;

    let at_stop = wait_for("rows to arrive", Duration::from_secs(120), || async {
        let n = row_count(&db.pool).await;
        (n > 0).then_some(n)
    })
    .await;
    broker.stop();
    assert!(
        at_stop < STREAM as i64,
        "the broker stopped after the stream was in"
    );
    // The outage itself.
    tokio::time::sleep(Duration::from_secs(15)).await;
    broker.start_again().await;

    fetch_schedule(&config, 20, false);
    assert_every_user_landed_once(&config, &db.pool).await;
    stop_in_process(shutdown, task).await;
}

/// The lines of `log` that say a delivery failed and its records are sent again.
fn failed_deliveries(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("delivery failed, retrying"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_failed_in_a_kafka_outage_are_sent_again_and_nothing_is_lost_or_dead_lettered() {
    // The outage takes no records while fetches, heartbeats and offset commits go on: a stopped broker
    // would also end the consumer groups' sessions (6 s), and their replay from the last commit would hide
    // a stage that skipped what it could not deliver.
    let (_broker, gate) = ProduceGate::start().await;
    let (names, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let mut config = campaign_config(&names, &db.url(), dir.path());
    config.kafka.brokers = gate.brokers();
    // Unacknowledged for 3 s, a delivery fails (librdkafka stops retrying on its own) and userpipe sends
    // the records again: the path this test takes.
    config.kafka.delivery_timeout = Duration::from_secs(3);
    prepare(&config, &db.pool).await;
    publish_stream(&config, STREAM, 43).await;
    let mut process = Userpipe::spawn(
        &config,
        dir.path(),
        "run.log",
        &["run", "--roles", "timestamp,tags,sink"],
    );

    // The outage begins once stage 1 has delivered its first users: the rest of the stream is in flight.
    let at_outage = wait_for(
        "stage 1 to deliver its first users",
        Duration::from_secs(120),
        || async {
            let n = try_total(&config, &config.topics.timestamped)?;
            (n > 0).then_some(n)
        },
    )
    .await;
    gate.close();
    assert!(
        at_outage < STREAM as i64,
        "the outage began after stage 1 was done"
    );
    let first = wait_for(
        "a failed delivery to be sent again",
        Duration::from_secs(60),
        || {
            let first = failed_deliveries(&process.log_text()).first().cloned();
            async move { first }
        },
    )
    .await;
    assert!(first.contains("Message timed out"), "{first}");

    // Stage 1 stores no offset of a user it could not deliver: its group's commits stand still through
    // four more failed deliveries (of two stages, so at least one stage's two, 3 s apart: three auto-commit
    // intervals).
    let group = format!("{}-timestamp", config.kafka.group_prefix);
    let users = &config.topics.users;
    let lag = || {
        lag_and_total(
            &config.kafka.brokers,
            &group,
            users,
            config.kafka.partitions,
        )
        .0
    };
    let (lag_before, seen) = (lag(), failed_deliveries(&process.log_text()).len());
    wait_for(
        "four more failed deliveries",
        Duration::from_secs(90),
        || {
            let more = failed_deliveries(&process.log_text()).len() >= seen + 4;
            async move { more.then_some(()) }
        },
    )
    .await;
    assert_eq!(
        lag(),
        lag_before,
        "stage 1 committed offsets of users it could not deliver"
    );
    gate.open();

    assert_every_user_landed_once(&config, &db.pool).await;
    let status = process.terminate().await;
    assert!(status.success(), "{status}: {}", process.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_stream_loses_and_dead_letters_nothing() {
    let cluster = TestCluster::start();
    let (names, dir) = (TestKafka::new(), tempfile::tempdir().unwrap());
    let config = campaign_config(&names, &cluster.url(), dir.path());
    let pool = userpipe::db::connect(&cluster.url(), 2).await.unwrap();
    prepare(&config, &pool).await;
    fetch_schedule(&config, 20, true);
    let (shutdown, task) = run_in_process(&config).await;
    publish_stream(&config, STREAM, 42).await;

    let at_restart = wait_for("rows to arrive", Duration::from_secs(120), || async {
        let n = row_count(&pool).await;
        (n > 0).then_some(n)
    })
    .await;
    // Down longer than the pool waits for a connection (5 s), so that writes fail meanwhile.
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(12)).await;
    cluster.start_again();
    assert!(
        at_restart < STREAM as i64,
        "the restart came after the stream was in"
    );

    fetch_schedule(&config, 20, false);
    assert_every_user_landed_once(&config, &pool).await;
    stop_in_process(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sigkills_during_a_fifty_thousand_user_flow_lose_and_dead_letter_nothing() {
    let (names, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let config = campaign_config(&names, &db.url(), dir.path());
    prepare(&config, &db.pool).await;
    // 50,000 users from the generator, 5,000 a run, through the scheduler of the process being killed.
    fetch_schedule(&config, 5000, true);
    let start = || Userpipe::spawn(&config, dir.path(), "userpipe.log", &["run"]);

    let mut child = start();
    let mut at_kills = Vec::new();
    let mut fetching = true;
    for _ in 0..10 {
        let before = row_count(&db.pool).await;
        let at_kill = wait_for(
            "rows to arrive since the last start",
            Duration::from_secs(120),
            || async {
                let n = row_count(&db.pool).await;
                (n > before).then_some(n)
            },
        )
        .await;
        child.kill();
        at_kills.push(at_kill);
        if fetching && total(&config, &config.topics.users).await >= 50_000 {
            fetch_schedule(&config, 5000, false);
            fetching = false;
        }
        child = start();
    }
    if fetching {
        wait_for(
            "50,000 users published",
            Duration::from_secs(180),
            || async { (try_total(&config, &config.topics.users)? >= 50_000).then_some(()) },
        )
        .await;
        fetch_schedule(&config, 5000, false);
    }

    assert_every_user_landed_once(&config, &db.pool).await;
    let landed = row_count(&db.pool).await;
    assert!(landed >= 50_000);
    assert!(
        at_kills.iter().all(|n| *n < landed),
        "a kill came after every user was in: {at_kills:?} of {landed}"
    );
    let abandoned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE status = 'abandoned'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    eprintln!("ten kills at {at_kills:?} rows; {abandoned} fetch runs abandoned");
    let exited = child.terminate().await;
    assert!(exited.success(), "exit status {exited}");
}
