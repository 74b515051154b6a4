//! Topic administration: creating the topics userpipe needs and deleting the ones it made for itself;
//! whether a consumer group has settled.

use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
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

/// Why topics could not be made: the broker did not answer (wait and try again), or it refused one.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("cannot create the kafka admin client: {0}")]
    Client(KafkaError),
    #[error("kafka at {brokers} did not answer: {error}")]
    Unreachable { brokers: String, error: KafkaError },
    #[error("cannot create topic {topic}: {code}")]
    Refused {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

impl TopicsError {
    /// Passes once the broker is back (or its controller is ready): worth waiting for.
    pub fn is_transient(&self) -> bool {
        match self {
            TopicsError::Client(_) => false,
            TopicsError::Unreachable { .. } => true,
            TopicsError::Refused { code, .. } => !matches!(
                code,
                RDKafkaErrorCode::InvalidReplicationFactor
                    | RDKafkaErrorCode::InvalidPartitions
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::InvalidReplicaAssignment
                    | RDKafkaErrorCode::InvalidRequest
                    | RDKafkaErrorCode::PolicyViolation
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            ),
        }
    }
}

/// How long one attempt to create topics waits for the broker.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates every topic in `specs` that does not exist yet; existing topics are left as they are.
pub async fn ensure_topics(brokers: &str, specs: &[TopicSpec]) -> Result<(), TopicsError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(brokers).create().map_err(TopicsError::Client)?;
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
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|error| TopicsError::Unreachable {
            brokers: brokers.to_owned(),
            error,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicsError::Refused { topic, code }),
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

/// How many members consumer group `group` has once it is stable (every member has its partitions);
/// 0 while it is empty, forming or rebalancing, or while its coordinator is loading or moving (a broker
/// just started says so for a few seconds).
pub async fn stable_members(brokers: &str, group: &str) -> anyhow::Result<usize> {
    let client: BaseProducer = base_config(brokers)
        .create()
        .context("cannot create a kafka client")?;
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let groups = match client
            .client()
            .fetch_group_list(Some(&group), Duration::from_secs(10))
        {
            Err(KafkaError::GroupListFetch(
                RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator,
            )) => return Ok(0),
            other => other.with_context(|| format!("cannot describe consumer group {group}"))?,
        };
        Ok(groups
            .groups()
            .iter()
            .find(|g| g.name() == group && g.state() == "Stable")
            .map_or(0, |g| g.members().len()))
    })
    .await
    .context("describing a consumer group panicked")?
}
