//! The path every later test stands on: a topic round trip through the broker and a row through PostgreSQL.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use userpipe::kafka::{self, TopicSpec};

use crate::support::{TestDb, TestKafka};

#[tokio::test]
async fn kafka_round_trip_through_a_created_topic() {
    let kafka = TestKafka::new();
    let topic = kafka.topic("smoke");
    kafka::ensure_topics(
        &kafka.brokers,
        &[TopicSpec {
            name: topic.clone(),
            partitions: 3,
            replication: 1,
            max_message_bytes: None,
        }],
    )
    .await
    .expect("create the topic");

    let producer: FutureProducer = kafka::base_config(&kafka.brokers)
        .create()
        .expect("producer");
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key("k1").payload("hello"),
            Duration::from_secs(10),
        )
        .await
        .expect("delivery");

    let consumer: StreamConsumer = kafka::base_config(&kafka.brokers)
        .set("group.id", kafka.group("smoke"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30s")
        .expect("no consumer error");
    assert_eq!(message.partition(), delivery.partition);
    assert_eq!(message.offset(), delivery.offset);
    assert_eq!(message.key(), Some(&b"k1"[..]));
    assert_eq!(message.payload(), Some(&b"hello"[..]));
}

#[tokio::test]
async fn kafka_topic_creation_is_idempotent() {
    let kafka = TestKafka::new();
    let spec = TopicSpec {
        name: kafka.topic("twice"),
        partitions: 2,
        replication: 1,
        max_message_bytes: Some(4 << 20),
    };
    kafka::ensure_topics(&kafka.brokers, std::slice::from_ref(&spec))
        .await
        .expect("first create");
    kafka::ensure_topics(&kafka.brokers, &[spec])
        .await
        .expect("second create is a no-op");
}

#[tokio::test]
async fn postgres_row_round_trip_in_a_fresh_database() {
    let db = TestDb::new().await;
    let current: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&db.pool)
        .await
        .expect("query");
    assert_eq!(current, db.name);
    sqlx::query("create table t (id int primary key, name text not null)")
        .execute(&db.pool)
        .await
        .expect("create table");
    sqlx::query("insert into t (id, name) values ($1, $2)")
        .bind(7)
        .bind("seven")
        .execute(&db.pool)
        .await
        .expect("insert");
    let name: String = sqlx::query_scalar("select name from t where id = $1")
        .bind(7)
        .fetch_one(&db.pool)
        .await
        .expect("select");
    assert_eq!(name, "seven");
}
