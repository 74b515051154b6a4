//! The topics of the pipeline, with their dead-letter topics, and creating them where missing: at once, or
//! waiting until Kafka answers.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TopicsConfig, dead_letter_topic};
use crate::kafka::{self, DEAD_LETTER_MAX_BYTES, TopicSpec};
use crate::retry::{Attempt, Backoff, until_done};

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

/// Creates the topics like [`ensure`], waiting while Kafka does not answer, until done or `shutdown`.
/// `Ok(false)` when shut down first; an error only when Kafka refuses a topic for good (a replication
/// factor above the number of brokers, a policy, a missing permission).
pub async fn ensure_when_reachable(
    config: &Config,
    topics: &TopicsConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let specs = specs(config, topics);
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let outcome = until_done(
        "cannot prepare the topics, retrying",
        backoff,
        shutdown,
        || async {
            match kafka::ensure_topics(&config.kafka.brokers, &specs).await {
                Ok(()) => Attempt::Done(Ok(())),
                Err(e) if e.is_transient() => Attempt::Retry(e.to_string()),
                Err(e) => Attempt::Done(Err(e)),
            }
        },
    )
    .await;
    match outcome {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("cannot prepare the topics")),
        Err(_abandoned) => Ok(false),
    }
}
