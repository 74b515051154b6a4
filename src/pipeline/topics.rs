//! The topics of the pipeline, with their dead-letter topics, and creating them where missing.

use anyhow::Context;

use crate::config::{Config, TopicsConfig, dead_letter_topic};
use crate::kafka::{self, DEAD_LETTER_MAX_BYTES, TopicSpec};

/// Every topic the pipeline uses, with its dead-letter topics.
pub fn specs(config: &Config, topics: &TopicsConfig) -> Vec<TopicSpec> {
    let spec = |name: &str, max_message_bytes| TopicSpec {
        name: name.to_owned(),
        partitions: config.kafka.partitions,
        replication: config.kafka.replication_factor,
        max_message_bytes,
    };
    let mut specs = Vec::new();
    for name in [&topics.users, &topics.timestamped, &topics.enriched] {
        specs.push(spec(name, None));
        specs.push(spec(&dead_letter_topic(name), Some(DEAD_LETTER_MAX_BYTES)));
    }
    specs
}

/// Creates the topics of `topics` (and their dead-letter topics) that do not exist yet.
pub async fn ensure(config: &Config, topics: &TopicsConfig) -> anyhow::Result<()> {
    kafka::ensure_topics(&config.kafka.brokers, &specs(config, topics))
        .await
        .context("cannot prepare the topics")
}
