//! The sink's promises against the real broker and server: rows PostgreSQL itself refuses (classes 22
//! and 23, 54000) are written one by one and set aside with the database's reason while the rest of their
//! batch lands; an offset is stored only after its rows are committed, so while PostgreSQL is down the
//! sink group's committed offsets stand still, and a SIGTERM then leaves the batch for the next start.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::Message;
use serde_json::{Value, json};
use userpipe::config::dead_letter_topic;
use userpipe::kafka::header;
use uuid::Uuid;

use crate::pipeline::{Pipeline, generated_users, publish_users, wait_for_rows};
use crate::support::cluster::TestCluster;
use crate::support::{
    self, TestDb, TestKafka, Userpipe, config_for, consume, lag_and_total, prepare, total, wait_for,
};

fn id_of(user: &serde_json::Map<String, Value>) -> Uuid {
    user["id"].as_str().unwrap().parse().unwrap()
}

async fn ids(pool: &sqlx::PgPool) -> HashSet<Uuid> {
    sqlx::query_scalar("SELECT id FROM random_users")
        .fetch_all(pool)
        .await
        .expect("select ids")
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_database_refuses_are_dead_lettered_one_by_one_and_the_rest_of_the_batch_lands() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    // What an operator's schema may add: a bounded phone column, unique usernames (of one kind: the
    // generator repeats names), an index on the address.
    for sql in [
        "ALTER TABLE random_users ALTER COLUMN phone TYPE varchar(40)",
        "CREATE UNIQUE INDEX random_users_taken ON random_users (username) WHERE username LIKE 'taken-%'",
        "CREATE INDEX random_users_address ON random_users (address)",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    let mut users = generated_users(60, 21, None);
    // Class 22: a value too long for its column (22001).
    users[5].insert("phone".into(), json!(format!("+44 {}", "7".repeat(60))));
    // Class 23: the same username as another user of the batch (23505).
    users[3].insert("username".into(), json!("taken-1"));
    users[9].insert("username".into(), json!("taken-1"));
    // 54000: an address too large for a btree index entry, even compressed.
    let mut noise = vec![0u8; 2000];
    rand::fill(&mut noise[..]);
    let address: String = noise.iter().map(|b| format!("{b:02x}")).collect();
    users[12].insert("address".into(), json!(address));

    // Published before the pipeline starts, so that the sink takes them as one batch (or very few).
    publish_users(&config, &users).await;
    let pipeline = Pipeline::start(&config);
    let letters = dead_letter_topic(&config.topics.enriched);
    wait_for_rows(&db.pool, 57, Duration::from_secs(60)).await;
    let dead = consume(&config.kafka.brokers, &letters, 3, Duration::from_secs(60)).await;
    pipeline.stop().await;

    // The duplicate username is refused for whichever of the two came second.
    let table = ids(&db.pool).await;
    let (first, second) = (id_of(&users[3]), id_of(&users[9]));
    assert!(
        table.contains(&first) != table.contains(&second),
        "exactly one of the two users with the same username is a row"
    );
    let duplicate = if table.contains(&first) {
        second
    } else {
        first
    };
    let refused: HashMap<Uuid, &str> = [
        (
            id_of(&users[5]),
            "value too long for type character varying(40)",
        ),
        (
            duplicate,
            "duplicate key value violates unique constraint \"random_users_taken\"",
        ),
        (id_of(&users[12]), "exceeds btree version 4 maximum 2704"),
    ]
    .into();
    let written: HashSet<Uuid> = users
        .iter()
        .map(id_of)
        .filter(|id| !refused.contains_key(id))
        .collect();
    assert_eq!(table, written, "every row the database takes is written");

    for letter in &dead {
        let payload: Value = serde_json::from_slice(letter.payload().unwrap()).unwrap();
        let id: Uuid = payload["id"].as_str().unwrap().parse().unwrap();
        let cause = refused
            .get(&id)
            .unwrap_or_else(|| panic!("a dead letter for {id}, which was not refused"));
        let error = support::header(letter, header::ERROR).unwrap();
        assert!(
            error.starts_with("database refused the row: ") && error.contains(cause),
            "{error:?} should name {cause:?}"
        );
        assert_eq!(
            support::header(letter, header::STAGE).as_deref(),
            Some("sink")
        );
        assert_eq!(
            support::header(letter, header::ORIGIN_TOPIC).as_deref(),
            Some(config.topics.enriched.as_str())
        );
    }
    let letter_ids: HashSet<Uuid> = dead
        .iter()
        .map(|m| {
            let payload: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            payload["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(letter_ids.len(), 3, "one letter per refused row");
    assert_eq!(total(&config, &letters), 3, "nothing else set aside");
    for topic in [&config.topics.users, &config.topics.timestamped] {
        assert_eq!(total(&config, &dead_letter_topic(topic)), 0, "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_the_sink_stores_no_offset_and_a_sigterm_leaves_the_batch_unstored()
{
    let kafka = TestKafka::new();
    let cluster = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&kafka, &cluster.url());
    // Every role (the default), with a schedule folder of its own: only the built-in schedules.
    config.scheduler.dir = dir.path().join("schedules");
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    let pool = userpipe::db::connect(&cluster.url(), 2).await.unwrap();
    prepare(&config, &pool).await;
    let users = generated_users(5000, 22, None);
    let (brokers, partitions) = (config.kafka.brokers.clone(), config.kafka.partitions);
    let sink_group = config.kafka.group("sink");
    let committed = || {
        let (lag, total) =
            lag_and_total(&brokers, &sink_group, &config.topics.enriched, partitions);
        (total - lag, total)
    };

    publish_users(&config, &users[..2000]).await;
    let mut child = Userpipe::spawn(&config, dir.path(), "first.log", &["run"]);
    let base = child.http_base().await;
    wait_for_rows(&pool, 2000, Duration::from_secs(120)).await;
    wait_for(
        "the sink to commit what it wrote",
        Duration::from_secs(30),
        || async { (committed() == (2000, 2000)).then_some(()) },
    )
    .await;

    cluster.stop();
    let sink = |name: &'static str| {
        let base = base.clone();
        async move {
            support::sample(&support::scrape(&base).await, name, &[("stage", "sink")])
                .unwrap_or(0.0)
        }
    };
    let failed_before = sink("userpipe_failed_total").await;
    publish_users(&config, &users[2000..]).await;
    // The stages go on; the sink takes a batch and fails to write it, again and again, for longer than
    // the consumer's auto-commit interval (1 s).
    wait_for(
        "the sink to fail writing for a while",
        Duration::from_secs(60),
        || async {
            let taken = sink("userpipe_consumed_total").await > 2000.0;
            let failed = sink("userpipe_failed_total").await >= failed_before + 6.0;
            (taken && failed && committed().1 == 5000).then_some(())
        },
    )
    .await;
    assert_eq!(
        committed(),
        (2000, 5000),
        "the sink's committed offsets moved while PostgreSQL was down"
    );

    // A SIGTERM mid-batch, with the database gone: exit 0 within 10 seconds, the batch left unstored.
    let exited = child.terminate().await;
    assert!(exited.success(), "exit status {exited}");
    assert_eq!(
        committed(),
        (2000, 5000),
        "the stop stored the batch it could not write"
    );

    cluster.start_again();
    let mut child = Userpipe::spawn(&config, dir.path(), "second.log", &["run"]);
    wait_for_rows(&pool, 5000, Duration::from_secs(120)).await;
    let expected: HashSet<Uuid> = users.iter().map(id_of).collect();
    assert_eq!(ids(&pool).await, expected);
    let exited = child.terminate().await;
    assert!(exited.success(), "exit status {exited}");
}
