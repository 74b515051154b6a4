//! Topic administration: creating the topics userpipe needs and deleting the ones it made for itself.

use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::client::base_config;

/// `max.message.bytes` of the dead-letter topics, so a dead letter of an oversized message still fits.
pub const DEAD_LETTER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A topic userpipe wants to exist, with the settings it is created with.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Largest record the topic accepts, in bytes (`max.message.bytes`); `None` keeps the broker default.
    pub max_message_bytes: Option<usize>,
}

/// Creates every topic in `specs` that does not exist yet; existing topics are left as they are.
pub async fn ensure_topics(brokers: &str, specs: &[TopicSpec]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(brokers)
        .create()
        .context("cannot create the kafka admin client")?;
    let max_bytes: Vec<Option<String>> = specs
        .iter()
        .map(|s| s.max_message_bytes.map(|b| b.to_string()))
        .collect();
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&max_bytes)
        .map(|(spec, max)| {
            let topic = NewTopic::new(
                &spec.name,
                spec.partitions,
                TopicReplication::Fixed(spec.replication),
            );
            match max {
                Some(max) => topic.set("max.message.bytes", max),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .with_context(|| format!("cannot create topics on kafka at {brokers}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Deletes topics (benchmarks clean up after themselves); a missing topic is not an error.
pub async fn delete_topics(brokers: &str, names: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(brokers)
        .create()
        .context("cannot create the kafka admin client")?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(&names, &AdminOptions::new())
        .await
        .with_context(|| format!("cannot delete topics on kafka at {brokers}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => bail!("cannot delete topic {name}: {code}"),
        }
    }
    Ok(())
}
