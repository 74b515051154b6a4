//! Hostile payloads through the real pipeline: what userpipe accepts passes every field it does not own
//! byte for byte to the enriched topic (and its post code as written to PostgreSQL); what it refuses goes
//! to the dead-letter topic with its reason, whichever path would have read it.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use userpipe::config::dead_letter_topic;
use userpipe::kafka::header;
use userpipe::pipeline::fetch::generator::Generator;
use userpipe::pipeline::record;
use uuid::Uuid;

use crate::pipeline::Pipeline;
use crate::support::{self, TestDb, TestKafka, config_for, consume, prepare, row_count, wait_for};

/// A generated user as the old `get_data.py` wrote it (Python's `json.dumps`: `", "` and `": "`,
/// non-ASCII escaped), with `extra` put before the closing brace.
fn user_with(generator: &mut Generator, extra: &str) -> (Uuid, Vec<u8>) {
    let id = Uuid::new_v4();
    let user = record::user_from_randomuser(&generator.result(), id, None).expect("a valid result");
    let mut text = String::from("{");
    for (i, (key, value)) in user.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!("{key:?}: {value}"));
    }
    text.push_str(extra);
    text.push('}');
    (id, text.into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_pass_byte_for_byte_or_are_dead_lettered_with_their_reason() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    let mut generator = Generator::new(Some(21));

    let passing = [
        r#", "big": 12345678901234567890123, "float": 1.0, "exp": 1E2, "neg": -0"#,
        r#", "nat": "S\u00e9bastien", "nat": "twice", "escaped": "\\ud800""#,
        r#", "nested": {"a": [1e-400, {"b": null}], "a": true}"#,
    ];
    let mut accepted: HashMap<Uuid, Vec<u8>> = HashMap::new();
    let mut payloads = Vec::new();
    for extra in passing {
        let (id, payload) = user_with(&mut generator, extra);
        accepted.insert(id, payload.clone());
        payloads.push((payload, None));
    }
    // A post code that is a big integer reaches the table as written, not rounded.
    let (id, payload) = user_with(&mut generator, "");
    let text = String::from_utf8(payload).unwrap();
    let start = text.find("\"post_code\": ").unwrap();
    let end = start + text[start..].find(", \"email\"").unwrap();
    let big = text.replacen(
        &text[start..end],
        "\"post_code\": 12345678901234567890123",
        1,
    );
    assert_ne!(big, text);
    accepted.insert(id, big.clone().into_bytes());
    payloads.push((big.into_bytes(), None));

    let refused = [
        (r#", "extra": "\ud800""#.to_owned(), "payload is not json"),
        (r#", "extra": ["\udfff"]"#.to_owned(), "payload is not json"),
        (", \"extra\": 1e400".to_owned(), "number out of range"),
        (
            ", \"id\": \"5b1e3c2a-9f0d-4e6b-8a7c-1d2e3f405162\"".to_owned(),
            "duplicate field `id`",
        ),
    ];
    for (extra, reason) in &refused {
        payloads.push((user_with(&mut generator, extra).1, Some(*reason)));
    }
    let (_, mut invalid_utf8) = user_with(&mut generator, r#", "extra": "x""#);
    let at = invalid_utf8.len() - 3;
    invalid_utf8[at] = 0xff;
    payloads.push((
        invalid_utf8,
        Some("payload is not json: invalid unicode code point"),
    ));

    let mut origins = Vec::new();
    let producer = support::located_producer(&config.kafka.brokers);
    for (payload, reason) in &payloads {
        let delivery = producer
            .send(
                FutureRecord::<str, _>::to(&config.topics.users).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("deliver");
        if let Some(reason) = reason {
            origins.push((delivery.partition, delivery.offset, *reason));
        }
    }

    let pipeline = Pipeline::start(&config);
    wait_for(
        "every accepted user in random_users",
        Duration::from_secs(120),
        || async { (row_count(&db.pool).await >= accepted.len() as i64).then_some(()) },
    )
    .await;
    let brokers = &config.kafka.brokers;
    let dead = consume(
        brokers,
        &dead_letter_topic(&config.topics.users),
        origins.len(),
        Duration::from_secs(60),
    )
    .await;
    let enriched = consume(
        brokers,
        &config.topics.enriched,
        accepted.len(),
        Duration::from_secs(60),
    )
    .await;
    pipeline.stop().await;
    assert_eq!(row_count(&db.pool).await, accepted.len() as i64);

    for message in &enriched {
        let id: Uuid = std::str::from_utf8(message.key().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let original = &accepted[&id];
        let out = message.payload().unwrap();
        // The original up to its closing brace, then the three fields the stages own.
        let body = &original[..original.len() - 1];
        assert!(
            out.starts_with(body),
            "{id}: {} does not start with {}",
            String::from_utf8_lossy(out),
            String::from_utf8_lossy(body)
        );
        let added: Value = serde_json::from_slice(&[b"{", &out[body.len() + 1..]].concat())
            .unwrap_or_else(|e| panic!("{id}: what the stages added is not json: {e}"));
        let keys: Vec<&str> = added
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["timestamp", "random_majors", "random_hobbies"]);
    }
    let post_code: String = sqlx::query_scalar("SELECT post_code FROM random_users WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(post_code, "12345678901234567890123");

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
    }
}
