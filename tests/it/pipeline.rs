//! The pipeline end to end against the real broker and server: every field, replays, crashes, poison,
//! and a PostgreSQL outage.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use userpipe::app::{self, Role};
use userpipe::config::{Config, dead_letter_topic};
use userpipe::kafka::{self, Outbound, header};
use userpipe::pipeline::fetch::generator::Generator;
use userpipe::pipeline::record::{self, Object};
use uuid::Uuid;

use crate::support::cluster::TestCluster;
use crate::support::{
    self, TestDb, TestKafka, Userpipe, config_for, consume, lag_and_total, prepare, row_count,
    wait_for,
};

/// `userpipe run` with every role, in this process.
pub struct Pipeline {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Pipeline {
    pub fn start(config: &Config) -> Self {
        let shutdown = CancellationToken::new();
        let task = {
            let (config, shutdown) = (config.clone(), shutdown.clone());
            tokio::spawn(async move { app::run(&config, &Role::PIPELINE, shutdown).await })
        };
        Self { shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the pipeline stops within 10 seconds");
        stopped
            .expect("no panic")
            .expect("the pipeline stops cleanly");
    }
}

/// `n` users as `fetch` would publish them, from a seeded generator.
pub fn generated_users(n: usize, seed: u64, run: Option<Uuid>) -> Vec<Object> {
    let mut generator = Generator::new(Some(seed));
    (0..n)
        .map(|_| {
            record::user_from_randomuser(&generator.result(), Uuid::new_v4(), run)
                .expect("a valid result")
        })
        .collect()
}

fn outbound(topic: &str, user: &Object) -> Outbound {
    Outbound {
        topic: topic.into(),
        key: user["id"].as_str().map(|id| id.as_bytes().to_vec()),
        payload: serde_json::to_vec(user).expect("encode"),
        headers: Vec::new(),
    }
}

pub async fn publish_users(config: &Config, users: &[Object]) {
    let producer = kafka::producer(&config.kafka).unwrap();
    for chunk in users.chunks(5000) {
        let records: Vec<Outbound> = chunk
            .iter()
            .map(|u| outbound(&config.topics.users, u))
            .collect();
        userpipe::pipeline::fetch::publish(config, &producer, &records)
            .await
            .expect("publish");
    }
}

pub async fn wait_for_rows(pool: &PgPool, n: i64, timeout: Duration) {
    wait_for(&format!("{n} rows"), timeout, || async {
        (row_count(pool).await >= n).then_some(())
    })
    .await;
    assert_eq!(row_count(pool).await, n, "exactly {n} rows");
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    id: Uuid,
    first_name: String,
    last_name: String,
    gender: String,
    address: String,
    post_code: String,
    email: String,
    username: String,
    dob: DateTime<Utc>,
    registered_date: DateTime<Utc>,
    phone: String,
    picture: String,
    majors: String,
    hobbies: String,
    enriched_at: DateTime<Utc>,
    ingested_at: DateTime<Utc>,
    fetch_run_id: Option<Uuid>,
}

async fn rows(pool: &PgPool) -> HashMap<Uuid, Row> {
    let rows: Vec<Row> = sqlx::query_as("SELECT * FROM random_users")
        .fetch_all(pool)
        .await
        .expect("select rows");
    rows.into_iter().map(|r| (r.id, r)).collect()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .expect("a string")
        .parse()
        .expect("an iso 8601 time")
}

/// Every field of `row` is what the contract makes of `user`.
fn assert_row_matches(row: &Row, user: &Object, run: Option<Uuid>) {
    let text = |name: &str| {
        user[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is a string"))
            .to_owned()
    };
    assert_eq!(row.first_name, text("first_name"));
    assert_eq!(row.last_name, text("last_name"));
    assert_eq!(row.gender, text("gender"));
    assert_eq!(row.address, text("address"));
    let post_code = match &user["post_code"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert_eq!(row.post_code, post_code);
    assert_eq!(row.email, text("email"));
    assert_eq!(row.username, text("username"));
    assert_eq!(row.dob, time(&user["dob"]));
    assert_eq!(row.registered_date, time(&user["registered_date"]));
    assert_eq!(row.phone, text("phone"));
    assert_eq!(row.picture, text("picture"));
    let (major, hobby) = record::tags_for(row.id);
    assert_eq!((row.majors.as_str(), row.hobbies.as_str()), (major, hobby));
    assert!(row.enriched_at <= row.ingested_at + chrono::Duration::seconds(1));
    assert!(Utc::now() - row.ingested_at < chrono::Duration::minutes(10));
    assert_eq!(row.fetch_run_id, run);
}

/// Moves `group`'s committed offsets on `topic` back to the start of every partition.
async fn reset_group(brokers: &str, group: &str, topic: &str, partitions: i32) {
    let consumer: StreamConsumer = kafka::base_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Offset(0))
            .expect("offset");
    }
    consumer.assign(&list).expect("assign");
    consumer
        .commit(&list, CommitMode::Sync)
        .expect("commit the reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_land_exactly_once_and_a_replay_changes_nothing() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    let run = Uuid::new_v4();
    let users = generated_users(10_000, 11, Some(run));
    publish_users(&config, &users).await;

    let pipeline = Pipeline::start(&config);
    wait_for_rows(&db.pool, 10_000, Duration::from_secs(180)).await;
    pipeline.stop().await;

    let table = rows(&db.pool).await;
    assert_eq!(table.len(), 10_000);
    for user in &users {
        let id: Uuid = user["id"].as_str().unwrap().parse().unwrap();
        let row = table.get(&id).unwrap_or_else(|| panic!("a row for {id}"));
        assert_row_matches(row, user, Some(run));
    }

    // Replay: every stage starts again from the beginning of its input.
    let partitions = config.kafka.partitions;
    let prefix = &config.kafka.group_prefix;
    let stages = [
        ("timestamp", &config.topics.users),
        ("tags", &config.topics.timestamped),
        ("sink", &config.topics.enriched),
    ];
    for (role, topic) in stages {
        reset_group(
            &config.kafka.brokers,
            &format!("{prefix}-{role}"),
            topic,
            partitions,
        )
        .await;
    }
    let pipeline = Pipeline::start(&config);
    // The replay is over when each stage has committed its whole input, which has grown by what the
    // stage before replayed: 10,000 users, 20,000 timestamped, 30,000 enriched.
    wait_for(
        "every stage to consume its replayed input",
        Duration::from_secs(180),
        || async {
            let done = stages
                .iter()
                .zip([10_000, 20_000, 30_000])
                .all(|((role, topic), n)| {
                    let group = format!("{prefix}-{role}");
                    let (lag, total) =
                        lag_and_total(&config.kafka.brokers, &group, topic, partitions);
                    lag == 0 && total >= n
                });
            done.then_some(())
        },
    )
    .await;
    pipeline.stop().await;
    assert_eq!(
        rows(&db.pool).await,
        table,
        "a replay changes no row, not even its ingested_at"
    );
    // A user already there is no fault of the data: none of the replayed rows is set aside.
    let (_, dead_letters) = lag_and_total(
        &config.kafka.brokers,
        "none",
        &dead_letter_topic(&config.topics.enriched),
        partitions,
    );
    assert_eq!(dead_letters, 0, "a replayed row is not dead-lettered");

    // Every pass gave every user the same tags.
    let enriched = consume(
        &config.kafka.brokers,
        &config.topics.enriched,
        30_000,
        Duration::from_secs(60),
    )
    .await;
    let mut tags: HashMap<String, HashSet<(String, String)>> = HashMap::new();
    for message in &enriched {
        let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        tags.entry(value["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert((
                value["random_majors"].as_str().unwrap().to_owned(),
                value["random_hobbies"].as_str().unwrap().to_owned(),
            ));
    }
    assert_eq!(tags.len(), 10_000);
    assert!(
        tags.values().all(|t| t.len() == 1),
        "a user got different tags on replay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dead_letter_topics_and_good_users_to_the_table() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    let producer = kafka::producer(&config.kafka).unwrap();
    let users = generated_users(60, 12, None);
    let mut missing = users[0].clone();
    missing.remove("email");
    let mut wrong_type = users[1].clone();
    wrong_type.insert("first_name".into(), json!(42));
    let mut huge = users[2].clone();
    huge.insert("padding".into(), json!("x".repeat(1_000_000)));
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"id\": \"not json".to_vec(), "payload is not json"),
        (
            serde_json::to_vec(&missing).unwrap(),
            "missing field `email`",
        ),
        (
            serde_json::to_vec(&wrong_type).unwrap(),
            "field `first_name` is a number, expected a string",
        ),
        (
            serde_json::to_vec(&huge).unwrap(),
            "exceeds the limit of 65536 bytes",
        ),
    ];
    // Bad messages mixed among the good ones; remember where each bad one went.
    let mut origins = Vec::new();
    let good = &users[3..];
    for (i, user) in good.iter().enumerate() {
        if i % 14 == 0 && i / 14 < bad.len() {
            let (payload, reason) = &bad[i / 14];
            let delivery = support::located_producer(&config.kafka.brokers)
                .send(
                    FutureRecord::<str, _>::to(&config.topics.users).payload(payload),
                    Duration::from_secs(10),
                )
                .await
                .expect("deliver a bad message");
            origins.push((delivery.partition, delivery.offset, *reason));
        }
        kafka::deliver_all(
            &producer,
            &[outbound(&config.topics.users, user)],
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    }
    // A record that passes both stages' checks but lacks what the sink needs is the sink's poison.
    let untagged = &users[0];
    support::located_producer(&config.kafka.brokers)
        .send(
            FutureRecord::to(&config.topics.enriched)
                .key("untagged")
                .payload(&serde_json::to_vec(untagged).unwrap()),
            Duration::from_secs(10),
        )
        .await
        .expect("deliver");

    let pipeline = Pipeline::start(&config);
    wait_for_rows(&db.pool, good.len() as i64, Duration::from_secs(120)).await;
    let dead = consume(
        &config.kafka.brokers,
        &dead_letter_topic(&config.topics.users),
        4,
        Duration::from_secs(60),
    )
    .await;
    let sink_dead = consume(
        &config.kafka.brokers,
        &dead_letter_topic(&config.topics.enriched),
        1,
        Duration::from_secs(60),
    )
    .await;
    pipeline.stop().await;

    for (partition, offset, reason) in origins {
        let letter = dead
            .iter()
            .find(|m| {
                support::header(m, header::ORIGIN_PARTITION) == Some(partition.to_string())
                    && support::header(m, header::ORIGIN_OFFSET) == Some(offset.to_string())
            })
            .unwrap_or_else(|| panic!("a dead letter for partition {partition} offset {offset}"));
        let error = support::header(letter, header::ERROR).unwrap();
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
        assert_eq!(
            support::header(letter, header::STAGE).as_deref(),
            Some("timestamp")
        );
        assert_eq!(
            support::header(letter, header::ORIGIN_TOPIC).as_deref(),
            Some(config.topics.users.as_str())
        );
    }
    assert_eq!(
        dead.iter()
            .filter(|m| m.payload().map(<[u8]>::len) > Some(1_000_000))
            .count(),
        1,
        "the oversized payload is kept whole"
    );
    let letter = &sink_dead[0];
    assert_eq!(
        support::header(letter, header::STAGE).as_deref(),
        Some("sink")
    );
    assert_eq!(
        support::header(letter, header::ERROR).as_deref(),
        Some("missing field `random_majors`")
    );
    assert_eq!(letter.key(), Some(&b"untagged"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_twenty_seconds_loses_nothing() {
    let kafka = TestKafka::new();
    let cluster = TestCluster::start();
    let config = config_for(&kafka, &cluster.url());
    let pool = userpipe::db::connect(&cluster.url(), 2).await.unwrap();
    prepare(&config, &pool).await;
    let users = generated_users(6000, 13, None);
    publish_users(&config, &users[..2000]).await;

    let pipeline = Pipeline::start(&config);
    wait_for_rows(&pool, 2000, Duration::from_secs(120)).await;
    cluster.stop();
    let stopped_at = tokio::time::Instant::now();
    publish_users(&config, &users[2000..]).await;
    // The stages go on without the database: everything reaches the sink's input.
    wait_for(
        "the stages to pass 6000 users on",
        Duration::from_secs(60),
        || async {
            let (_, total) = lag_and_total(
                &config.kafka.brokers,
                "unused",
                &config.topics.enriched,
                config.kafka.partitions,
            );
            (total >= 6000).then_some(())
        },
    )
    .await;
    // The outage itself lasts 20 seconds.
    tokio::time::sleep_until(stopped_at + Duration::from_secs(20)).await;
    cluster.start_again();
    wait_for_rows(&pool, 6000, Duration::from_secs(120)).await;
    pipeline.stop().await;
    let ids: HashSet<Uuid> = rows(&pool).await.into_keys().collect();
    let expected: HashSet<Uuid> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_shaped_as_the_old_get_data_py_made_it_becomes_a_row() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    // Python's json.dumps of the seed's dict: its separators, its field order, no key, no extra fields.
    let id = Uuid::new_v4();
    let old = format!(
        r#"{{"id": "{id}", "first_name": "Jennie", "last_name": "Nichols", "gender": "female", "address": "8929 Valwood Pkwy, Billings, Michigan, United States", "post_code": 63104, "email": "jennie.nichols@example.com", "username": "yellowpeacock117", "dob": "1992-03-08T15:13:16.688Z", "registered_date": "2007-07-09T05:51:59.390Z", "phone": "(272) 790-0888", "picture": "https://randomuser.me/api/portraits/med/men/75.jpg"}}"#
    );
    let producer = support::located_producer(&config.kafka.brokers);
    producer
        .send(
            FutureRecord::<str, _>::to(&config.topics.users).payload(&old),
            Duration::from_secs(10),
        )
        .await
        .expect("deliver");
    let pipeline = Pipeline::start(&config);
    wait_for_rows(&db.pool, 1, Duration::from_secs(60)).await;
    pipeline.stop().await;
    let table = rows(&db.pool).await;
    let expected: Value = serde_json::from_str(&old).unwrap();
    assert_row_matches(&table[&id], expected.as_object().unwrap(), None);
}

/// Each row's `ingested_at`, which the sink sets when it writes the row: a second write would move it.
async fn ingested_at(pool: &PgPool) -> HashMap<Uuid, DateTime<Utc>> {
    sqlx::query_as("SELECT id, ingested_at FROM random_users")
        .fetch_all(pool)
        .await
        .expect("select ingested_at")
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_three_times_loses_nothing_and_writes_nothing_twice() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let mut config = config_for(&kafka, &db.url());
    // Small batches, so each kill lands while work is in flight.
    config.sink.batch_size = 500;
    config.stages.batch_size = 500;
    prepare(&config, &db.pool).await;
    let dir = tempfile::tempdir().unwrap();
    // A log per process, so the last one's HTTP address is its own.
    let start = |n: usize| {
        Userpipe::spawn(
            &config,
            dir.path(),
            &format!("userpipe-{n}.log"),
            &["run", "--roles", "timestamp,tags,sink"],
        )
    };
    let sink_group = config.kafka.group("sink");

    let chunk = 12_000;
    let users = generated_users(chunk * 3, 14, None);
    let mut child = start(0);
    let mut written: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    // Rows in the table whose messages the sink had not committed when it was killed: read again.
    let (mut replayed, mut replayed_last) = (0, 0);
    for round in 0..3 {
        let before = row_count(&db.pool).await;
        publish_users(&config, &users[round * chunk..(round + 1) * chunk]).await;
        let published = ((round + 1) * chunk) as i64;
        wait_for(
            "rows of this round to arrive",
            Duration::from_secs(120),
            || async { (row_count(&db.pool).await > before).then_some(()) },
        )
        .await;
        child.kill();
        // The process is gone: the table and the committed offsets stand still until the next start.
        let at_kill = ingested_at(&db.pool).await;
        assert!(
            (at_kill.len() as i64) < published,
            "round {round}: the kill came after all {published} rows were in"
        );
        let (lag, total) = lag_and_total(
            &config.kafka.brokers,
            &sink_group,
            &config.topics.enriched,
            config.kafka.partitions,
        );
        replayed_last = (at_kill.len() as i64 - (total - lag)).max(0);
        replayed += replayed_last;
        for (id, at) in &written {
            assert_eq!(
                at_kill.get(id),
                Some(at),
                "round {round}: row {id} was written again"
            );
        }
        written = at_kill;
        child = start(round + 1);
    }
    assert!(replayed > 0, "no kill left written rows to be read again");
    wait_for_rows(&db.pool, users.len() as i64, Duration::from_secs(180)).await;

    let table = ingested_at(&db.pool).await;
    let expected: HashSet<Uuid> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(table.keys().copied().collect::<HashSet<_>>(), expected);
    for (id, at) in &written {
        assert_eq!(
            table.get(id),
            Some(at),
            "row {id} was written again after the last kill"
        );
    }

    // The last process wrote exactly the rows missing when it started, and no row twice, although it
    // read again what the killed one had written.
    let base = child.http_base().await;
    let missing = (users.len() - written.len()) as f64;
    let sink = |name: &'static str| {
        let base = base.clone();
        async move {
            support::sample(&support::scrape(&base).await, name, &[("stage", "sink")])
                .unwrap_or(0.0)
        }
    };
    wait_for(
        "the sink to count its rows",
        Duration::from_secs(30),
        || async { (sink("userpipe_produced_total").await >= missing).then_some(()) },
    )
    .await;
    assert_eq!(
        sink("userpipe_produced_total").await,
        missing,
        "rows written by the last process"
    );
    assert!(
        sink("userpipe_consumed_total").await >= missing + replayed_last as f64,
        "the last process read again what the killed one wrote without committing"
    );

    // A SIGTERM stops it cleanly, with exit status 0, within 10 seconds.
    let exited = child.terminate().await;
    assert!(exited.success(), "exit status {exited}");
}

/// `sql` on the stack's admin database (not the test's own).
async fn admin(sql: &str, db: &TestDb) {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let pool = userpipe::db::connect(&url, 1)
        .await
        .expect("connect to the admin database");
    sqlx::query(sqlx::AssertSqlSafe(sql.replace("{db}", &db.name)))
        .execute(&pool)
        .await
        .expect("admin statement");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_refusing_writes_for_another_reason_than_the_data_delays_rows_but_loses_none() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    let users = generated_users(110, 15, None);
    publish_users(&config, &users[..10]).await;
    let pipeline = Pipeline::start(&config);
    wait_for_rows(&db.pool, 10, Duration::from_secs(60)).await;

    // As after a failover onto a standby: every session is read-only, every insert fails with 25006.
    admin(
        r#"ALTER DATABASE "{db}" SET default_transaction_read_only = on"#,
        &db,
    )
    .await;
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()";
    admin(terminate, &db).await;
    let check = userpipe::db::connect(&db.url(), 1).await.unwrap();
    let rollbacks = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&check)
        .await
        .ok()
    };
    let before = rollbacks().await.unwrap_or(0);
    publish_users(&config, &users[10..]).await;
    wait_for(
        "the sink to be refused a few times",
        Duration::from_secs(60),
        || async { (rollbacks().await? >= before + 3).then_some(()) },
    )
    .await;
    let dead = dead_letter_topic(&config.topics.enriched);
    let (_, dead_letters) = lag_and_total(
        &config.kafka.brokers,
        "none",
        &dead,
        config.kafka.partitions,
    );
    assert_eq!(
        dead_letters, 0,
        "nothing is dead-lettered for a fault that is not the data's"
    );
    assert_eq!(row_count(&check).await, 10);

    // The operator fixes it; the old sessions go away, as they do in a real failover.
    admin(
        r#"ALTER DATABASE "{db}" RESET default_transaction_read_only"#,
        &db,
    )
    .await;
    admin(terminate, &db).await;
    let fresh = userpipe::db::connect(&db.url(), 1).await.unwrap();
    wait_for_rows(&fresh, 110, Duration::from_secs(60)).await;
    pipeline.stop().await;
    let (_, dead_letters) = lag_and_total(
        &config.kafka.brokers,
        "none",
        &dead,
        config.kafka.partitions,
    );
    assert_eq!(dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_topic_goes_without_its_payload_and_the_stage_goes_on() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    // An input topic that takes larger records than the dead-letter topic (8 MB), as one inherited from
    // another system might.
    let big = userpipe::kafka::TopicSpec {
        name: config.topics.users.clone(),
        partitions: 1,
        replication: 1,
        max_message_bytes: Some(16 << 20),
    };
    kafka::ensure_topics(&config.kafka.brokers, &[big])
        .await
        .unwrap();
    prepare(&config, &db.pool).await;
    let producer = support::located_producer(&config.kafka.brokers);
    // Random bytes: compression must not shrink it below the limit.
    let mut huge = vec![0u8; 9 << 20];
    rand::fill(&mut huge[..]);
    let delivery = producer
        .send(
            FutureRecord::<str, _>::to(&config.topics.users).payload(&huge),
            Duration::from_secs(30),
        )
        .await
        .expect("deliver 9 MB");
    publish_users(&config, &generated_users(1, 16, None)).await;

    let pipeline = Pipeline::start(&config);
    wait_for_rows(&db.pool, 1, Duration::from_secs(60)).await;
    let letters = consume(
        &config.kafka.brokers,
        &dead_letter_topic(&config.topics.users),
        1,
        Duration::from_secs(30),
    )
    .await;
    pipeline.stop().await;
    let letter = &letters[0];
    assert_eq!(letter.payload().map_or(0, <[u8]>::len), 0);
    let dropped =
        support::header(letter, header::PAYLOAD_DROPPED).expect("the reason the payload is gone");
    assert!(
        dropped.starts_with(&format!("{} bytes", 9 << 20)),
        "{dropped}"
    );
    assert_eq!(
        support::header(letter, header::ORIGIN_OFFSET),
        Some(delivery.offset.to_string())
    );
    assert!(
        support::header(letter, header::ERROR)
            .unwrap()
            .contains("exceeds the limit")
    );
}
