//! The two enrichment stages: `timestamp` (users_info -> ..._timestamp) and `tags` (-> ..._randomtopics).
//! Each consumes, transforms, produces, and stores a consumed offset only once the produce is acknowledged.

use std::sync::Arc;

use chrono::Utc;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TopicsConfig, dead_letter_topic};
use crate::kafka::{self, BatchHandler, BatchSettings, Outbound, Producer};
use crate::metrics::{METRICS, StageCounters};
use crate::pipeline::record::{self, Enrichment, RecordError};
use crate::retry::Abandoned;

/// Which stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Adds `timestamp`.
    Timestamp,
    /// Adds `random_majors` and `random_hobbies`.
    Tags,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Timestamp => "timestamp",
            Stage::Tags => "tags",
        }
    }

    pub fn input(self, topics: &TopicsConfig) -> &str {
        match self {
            Stage::Timestamp => &topics.users,
            Stage::Tags => &topics.timestamped,
        }
    }

    pub fn output(self, topics: &TopicsConfig) -> &str {
        match self {
            Stage::Timestamp => &topics.timestamped,
            Stage::Tags => &topics.enriched,
        }
    }

    /// The transform of one payload: the output record's key (the user id) and value, or why it is poison.
    /// `stamp` is the batch's `timestamp` text.
    pub fn transform(
        self,
        payload: Option<&[u8]>,
        limit: usize,
        stamp: &str,
    ) -> Result<(String, Vec<u8>), RecordError> {
        let enrichment = match self {
            Stage::Timestamp => Enrichment::Timestamp(stamp),
            Stage::Tags => Enrichment::Tags,
        };
        let (id, value) = record::enrich_payload(payload, limit, enrichment)?;
        Ok((id.to_string(), value))
    }
}

/// Runs `stage` until `shutdown`.
pub async fn run(
    stage: Stage,
    config: &Config,
    topics: &TopicsConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handler = Arc::new(StageHandler {
        stage,
        output: stage.output(topics).into(),
        dead_letters: dead_letter_topic(stage.input(topics)).into(),
        max_message_bytes: config.stages.max_message_bytes,
        producer: kafka::producer(&config.kafka)?,
        counters: METRICS.stage(stage.name()),
    });
    let settings = BatchSettings {
        max: config.stages.batch_size,
        linger: config.stages.linger,
        grace: crate::SHUTDOWN_GRACE,
    };
    let group = config.kafka.group(stage.name());
    kafka::consume_batches(
        &config.kafka.brokers,
        &group,
        stage.input(topics),
        settings,
        handler,
        shutdown,
    )
    .await
}

struct StageHandler {
    stage: Stage,
    output: Arc<str>,
    dead_letters: Arc<str>,
    max_message_bytes: usize,
    producer: Producer,
    counters: StageCounters,
}

/// A prepared batch: the records to produce, `dead` of them dead letters.
struct StageWork {
    records: Vec<Outbound>,
    dead: u64,
}

impl BatchHandler for StageHandler {
    type Work = StageWork;

    fn prepare(&self, batch: &[BorrowedMessage<'_>]) -> StageWork {
        self.counters.consumed.inc_by(batch.len() as u64);
        let stamp = record::timestamp_text(Utc::now());
        let mut dead = 0;
        let records = batch
            .iter()
            .map(|message| {
                match self
                    .stage
                    .transform(message.payload(), self.max_message_bytes, &stamp)
                {
                    Ok((key, payload)) => {
                        Outbound::forward(message, &self.output, key.into_bytes(), payload)
                    }
                    Err(error) => {
                        dead += 1;
                        Outbound::dead_letter(
                            message,
                            &self.dead_letters,
                            self.stage.name(),
                            &error.to_string(),
                        )
                    }
                }
            })
            .collect();
        StageWork { records, dead }
    }

    async fn complete(
        &self,
        work: StageWork,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let retried = kafka::deliver_all(&self.producer, &work.records, abandon).await?;
        self.counters.failed.inc_by(retried);
        self.counters.dead_lettered.inc_by(work.dead);
        self.counters
            .produced
            .inc_by(work.records.len() as u64 - work.dead);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn user() -> Value {
        json!({
            "id": "5b1e3c2a-9f0d-4e6b-8a7c-1d2e3f405162", "first_name": "Ava", "last_name": "Smith",
            "gender": "female", "address": "1 Main St, Leeds, WY, UK", "post_code": "LS1 4AB",
            "email": "a@example.com", "username": "ava", "dob": "1993-07-20T09:44:18.674Z",
            "registered_date": "2015-03-01T12:00:00.000Z", "phone": "0", "picture": "https://x/y.jpg",
            "extra": {"kept": true}
        })
    }

    #[test]
    fn timestamp_then_tags_keys_by_id_and_keeps_extra_fields() {
        let input = serde_json::to_vec(&user()).unwrap();
        let (key, stamped) = Stage::Timestamp
            .transform(Some(&input), 1 << 16, "2024-01-02 03:04:05")
            .unwrap();
        assert_eq!(key, "5b1e3c2a-9f0d-4e6b-8a7c-1d2e3f405162");
        let (_, tagged) = Stage::Tags
            .transform(Some(&stamped), 1 << 16, "unused")
            .unwrap();
        let tagged: Value = serde_json::from_slice(&tagged).unwrap();
        assert_eq!(tagged["timestamp"], "2024-01-02 03:04:05");
        assert!(tagged["random_majors"].is_string() && tagged["random_hobbies"].is_string());
        assert_eq!(tagged["extra"], json!({"kept": true}));
    }

    #[test]
    fn poison_is_refused_with_its_reason() {
        let check = |payload: &[u8], expected: &str| {
            let error = Stage::Timestamp
                .transform(Some(payload), 1 << 10, "2024-01-02 03:04:05")
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(expected),
                "{error:?} should start with {expected:?}"
            );
        };
        check(b"not json", "payload is not json");
        check(b"{\"id\": 5}", "field `id` is a number, expected a string");
        check(
            &[b' '; 2000],
            "payload of 2000 bytes exceeds the limit of 1024 bytes",
        );
        let mut missing = user();
        missing.as_object_mut().unwrap().remove("phone");
        check(
            &serde_json::to_vec(&missing).unwrap(),
            "missing field `phone`",
        );
    }
}
