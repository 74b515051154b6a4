//! The old scripts read what userpipe writes: their Kafka client, kafka-python 2.0.2 with no compression
//! library (`scripts/old-scripts-venv` makes it), reads every topic userpipe produces to with the default
//! `kafka.compression`, and fails on the codecs it lacks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::Message;
use serde::Deserialize;
use serde_json::{Value, json};
use userpipe::config::{Compression, Config, KafkaConfig, dead_letter_topic};
use userpipe::kafka::{self, Outbound};
use userpipe::pipeline::fetch;
use userpipe::pipeline::record::{HOBBIES, MAJORS};
use uuid::Uuid;

use crate::pipeline::Pipeline;
use crate::support::{TestDb, TestKafka, config_for, consume, prepare, row_count, wait_for};

/// The interpreter of the kafka-python 2.0.2 environment; fails the test when it is missing.
fn old_python() -> PathBuf {
    let stack = std::env::var_os("USERPIPE_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".stack"));
    let python = stack.join("kafka-python-2.0.2/bin/python");
    assert!(
        stack.join("kafka-python-2.0.2/.complete").exists() && python.exists(),
        "the old scripts' kafka-python 2.0.2 is missing at {}: run scripts/test, which makes it with \
         scripts/old-scripts-venv",
        python.display()
    );
    python
}

/// One message as the old scripts' consumer saw it.
#[derive(Debug, Deserialize)]
struct OldMessage {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Value,
    headers: BTreeMap<String, String>,
}

/// `topic` (with `kafka.partitions` partitions) read from beginning to end by kafka-python 2.0.2
/// (tests/it/old_scripts/read_topic.py), or what it printed when it failed.
async fn read_as_old_scripts(kafka: &KafkaConfig, topic: &str) -> Result<Vec<OldMessage>, String> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/old_scripts/read_topic.py");
    let run = tokio::process::Command::new(old_python())
        .arg(&script)
        .args([&kafka.brokers, topic, &kafka.partitions.to_string()])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .unwrap_or_else(|_| panic!("kafka-python still reading {topic} after 90 s"))
        .expect("run read_topic.py");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let lines = String::from_utf8(output.stdout).expect("read_topic.py prints utf-8");
    Ok(lines
        .lines()
        .map(|line| serde_json::from_str(line).expect("read_topic.py prints json lines"))
        .collect())
}

/// kafka-python's reading of `topic` must be what rdkafka reads there, message for message.
async fn assert_reads_like_rdkafka(
    kafka: &KafkaConfig,
    topic: &str,
    expected: usize,
) -> Vec<OldMessage> {
    let brokers = &kafka.brokers;
    let old = read_as_old_scripts(kafka, topic)
        .await
        .unwrap_or_else(|error| panic!("kafka-python 2.0.2 cannot read {topic}: {error}"));
    assert_eq!(old.len(), expected, "messages kafka-python read in {topic}");
    let ours: BTreeMap<(i32, i64), Value> =
        consume(brokers, topic, expected, Duration::from_secs(60))
            .await
            .iter()
            .map(|m| {
                let value = serde_json::from_slice(m.payload().expect("a payload")).expect("json");
                ((m.partition(), m.offset()), value)
            })
            .collect();
    for message in &old {
        assert_eq!(
            ours.get(&(message.partition, message.offset)),
            Some(&message.value),
            "{topic} partition {} offset {}",
            message.partition,
            message.offset
        );
    }
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_reads_every_topic_userpipe_writes() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    assert_eq!(
        config.kafka.compression,
        Compression::None,
        "the default is what this test proves readable"
    );
    prepare(&config, &db.pool).await;
    let producer = kafka::producer(&config.kafka).unwrap();
    let users = 40;
    fetch::run(&config, &producer, users, Uuid::new_v4())
        .await
        .expect("fetch");
    // Poison for the timestamp stage and for the sink: both stages write a dead letter.
    let poison = |topic: &str, payload: Value| Outbound {
        topic: topic.into(),
        key: None,
        payload: serde_json::to_vec(&payload).unwrap(),
        headers: Vec::new(),
    };
    let poisons = [
        poison(&config.topics.users, json!({"id": 5})),
        poison(&config.topics.enriched, json!({"id": "not a user"})),
    ];
    fetch::publish(&config, &producer, &poisons)
        .await
        .expect("publish poison");

    let pipeline = Pipeline::start(&config);
    wait_for(
        "every user in random_users",
        Duration::from_secs(120),
        || async { (row_count(&db.pool).await == users as i64).then_some(()) },
    )
    .await;
    let brokers = &config.kafka.brokers;
    for input in [&config.topics.users, &config.topics.enriched] {
        consume(
            brokers,
            &dead_letter_topic(input),
            1,
            Duration::from_secs(60),
        )
        .await;
    }
    pipeline.stop().await;

    let fetched = assert_reads_like_rdkafka(&config.kafka, &config.topics.users, users + 1).await;
    let stamped = assert_reads_like_rdkafka(&config.kafka, &config.topics.timestamped, users).await;
    let enriched =
        assert_reads_like_rdkafka(&config.kafka, &config.topics.enriched, users + 1).await;
    for message in fetched.iter().chain(&stamped).chain(&enriched) {
        if message.value["id"].is_string() && message.value["id"] != "not a user" {
            assert_eq!(
                message.key.as_ref(),
                message.value["id"].as_str().map(String::from).as_ref()
            );
        }
    }
    assert!(stamped.iter().all(|m| m.value["timestamp"].is_string()));
    let tagged: Vec<&OldMessage> = enriched
        .iter()
        .filter(|m| m.value["id"] != "not a user")
        .collect();
    assert_eq!(tagged.len(), users);
    for message in tagged {
        let major = message.value["random_majors"].as_str().unwrap_or_default();
        let hobby = message.value["random_hobbies"].as_str().unwrap_or_default();
        assert!(
            MAJORS.contains(&major) && HOBBIES.contains(&hobby),
            "{:?}",
            message.value
        );
    }

    for (input, stage) in [
        (&config.topics.users, "timestamp"),
        (&config.topics.enriched, "sink"),
    ] {
        let letters = assert_reads_like_rdkafka(&config.kafka, &dead_letter_topic(input), 1).await;
        let headers = &letters[0].headers;
        assert_eq!(
            headers.get("userpipe.stage").map(String::as_str),
            Some(stage)
        );
        assert_eq!(headers.get("userpipe.origin.topic"), Some(input));
        assert!(headers.contains_key("userpipe.error"), "{headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_reads_none_and_gzip_and_fails_on_the_other_codecs() {
    let kafka = TestKafka::new();
    let mut config: Config = config_for(&kafka, "postgres://unused@127.0.0.1:1/unused");
    for (name, compression) in Compression::ALL {
        config.kafka.compression = compression;
        config.topics.users = kafka.topic(&format!("users_{name}"));
        userpipe::pipeline::topics::ensure(&config, &config.topics)
            .await
            .expect("create the topics");
        let producer = kafka::producer(&config.kafka).unwrap();
        fetch::run(&config, &producer, 25, Uuid::new_v4())
            .await
            .expect("fetch");
        let read = read_as_old_scripts(&config.kafka, &config.topics.users).await;
        match compression {
            Compression::None | Compression::Gzip => {
                let read = read.unwrap_or_else(|error| panic!("{name}: {error}"));
                assert_eq!(read.len(), 25, "{name}");
            }
            Compression::Snappy | Compression::Lz4 | Compression::Zstd => {
                let error = read.err().unwrap_or_else(|| {
                    panic!("kafka-python without codecs should not read {name} batches")
                });
                assert!(
                    error.starts_with("UnsupportedCodecError"),
                    "{name}: {error}"
                );
            }
        }
    }
}
