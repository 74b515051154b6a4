//! Kafka clients: the settings every client shares, the idempotent producer, the at-least-once consumer
//! with its consumer-lag statistics, and the readiness probe. The only file that names librdkafka
//! settings.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::statistics::Statistics;

use super::deliver::{Acks, Producer};
use crate::config::KafkaConfig;
use crate::metrics::{LagLabels, METRICS};

/// Largest record userpipe produces (a dead letter carries the original payload plus headers).
const MAX_PRODUCED_BYTES: usize = 16 * 1024 * 1024;

/// Settings every client of one cluster shares.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "userpipe")
        // Keep librdkafka's own chatter out of the logs unless something is wrong.
        .set("log_level", "4");
    config
}

/// An idempotent producer that waits for every in-sync replica (`acks=all`) and retries on its own for up
/// to `kafka.delivery_timeout` (then the delivery fails, and `deliver_all` sends the record again), and
/// compresses its batches as `kafka.compression` says (none by default: the old scripts' kafka-python has
/// no lz4, snappy or zstd).
pub fn producer(kafka: &KafkaConfig) -> anyhow::Result<Producer> {
    let brokers = &kafka.brokers;
    base_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", kafka.compression.name())
        .set(
            "message.timeout.ms",
            kafka.delivery_timeout.as_millis().to_string(),
        )
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.max.bytes", MAX_PRODUCED_BYTES.to_string())
        .create_with_context(Acks::default())
        .with_context(|| format!("cannot create a kafka producer for {brokers}"))
}

/// A consumer context that turns librdkafka's statistics into the consumer-lag metric.
pub struct LagContext {
    group: String,
    /// The partitions whose lag this member last exported: one it no longer owns (moved to another
    /// member at a rebalance) loses its gauge instead of keeping its last value.
    exported: Mutex<HashSet<LagLabels>>,
}

impl LagContext {
    fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            exported: Mutex::default(),
        }
    }
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = None;
        let mut owned = HashSet::new();
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                // librdkafka reports -1 for partitions this member does not own, and a -1 partition.
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                *total.get_or_insert(0) += p.consumer_lag;
                let labels = LagLabels {
                    group: self.group.clone(),
                    topic: topic.clone(),
                    partition,
                };
                METRICS
                    .consumer_lag
                    .get_or_create(&labels)
                    .set(p.consumer_lag);
                owned.insert(labels);
            }
        }
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        for gone in exported.difference(&owned) {
            METRICS.consumer_lag.remove(gone);
        }
        *exported = owned;
        METRICS.set_group_lag(&self.group, total);
    }
}

impl ConsumerContext for LagContext {}

/// A consumer in `group` that starts at the earliest offset and stores offsets only when told to.
pub fn consumer(brokers: &str, group: &str) -> anyhow::Result<StreamConsumer<LagContext>> {
    base_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A member that died is noticed in seconds, so its partitions move on quickly.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "50")
        // Bound the prefetch buffer (librdkafka's default is 64 MB per consumer): memory stays small.
        .set("queued.max.messages.kbytes", "4096")
        // Once that buffer is full, fetch again 10 ms later, not librdkafka's 1 s: a stage drains 4 MB in
        // a fraction of a second and would otherwise wait, idle, for the rest of it.
        .set("fetch.queue.backoff.ms", "10")
        .set("statistics.interval.ms", "5000")
        .create_with_context(LagContext::new(group))
        .with_context(|| format!("cannot create a kafka consumer for {brokers}"))
}

/// A consumer that reads the partitions it is assigned and never commits: for reading a topic whole
/// (the dead-letter tools), leaving no trace in the cluster.
pub fn reader(brokers: &str) -> anyhow::Result<BaseConsumer> {
    base_config(brokers)
        // librdkafka wants a group for a consumer; nothing is committed to it.
        .set("group.id", "userpipe-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", "8192")
        .create()
        .with_context(|| format!("cannot create a kafka reader for {brokers}"))
}

/// A client kept for readiness checks: can the broker be reached now?
pub struct Probe {
    client: BaseProducer,
}

impl Probe {
    pub fn new(brokers: &str) -> anyhow::Result<Self> {
        let client = base_config(brokers)
            .create()
            .with_context(|| format!("cannot create a kafka client for {brokers}"))?;
        Ok(Self { client })
    }

    /// The messages `topic` holds now (the sum over its partitions of high minus low watermark). Blocks
    /// for up to `timeout` per request: call it off the async threads.
    pub fn messages_in(&self, topic: &str, timeout: Duration) -> Result<i64, String> {
        let client = self.client.client();
        let metadata = client
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| e.to_string())?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(format!("no topic {topic}"));
        };
        if let Some(error) = found.error() {
            return Err(format!(
                "topic {topic}: {}",
                rdkafka::types::RDKafkaErrorCode::from(error)
            ));
        }
        let mut total = 0;
        for partition in found.partitions() {
            let (low, high) = client
                .fetch_watermarks(topic, partition.id(), timeout)
                .map_err(|e| e.to_string())?;
            total += (high - low).max(0);
        }
        Ok(total)
    }

    /// Asks the cluster for its metadata; an error says why it did not answer within `timeout`.
    pub async fn check(probe: &Arc<Self>, timeout: Duration) -> Result<(), String> {
        let probe = probe.clone();
        tokio::task::spawn_blocking(move || {
            probe
                .client
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::{Partition, Topic};

    /// Statistics of a member owning `owned` partitions of `topic` with lag 10, 11, ...; partition 2 it
    /// does not own (lag -1), as librdkafka reports them.
    fn statistics(topic: &str, owned: &[i32]) -> Statistics {
        let mut partitions = std::collections::HashMap::new();
        for partition in 0..3 {
            let consumer_lag = if owned.contains(&partition) {
                10 + i64::from(partition)
            } else {
                -1
            };
            let p = Partition {
                partition,
                consumer_lag,
                ..Partition::default()
            };
            partitions.insert(partition, p);
        }
        let mut stats = Statistics::default();
        let topic_stats = Topic {
            topic: topic.to_owned(),
            partitions,
            ..Topic::default()
        };
        stats.topics.insert(topic.to_owned(), topic_stats);
        stats
    }

    #[test]
    fn a_partition_that_moved_away_loses_its_lag_gauge() {
        let context = LagContext::new("unit-test-lag-group");
        let labels = |partition| LagLabels {
            group: "unit-test-lag-group".into(),
            topic: "lag-topic".into(),
            partition,
        };
        let lag = |partition| {
            METRICS
                .consumer_lag
                .get(&labels(partition))
                .map(|g| g.get())
        };
        context.stats(statistics("lag-topic", &[0, 1]));
        assert_eq!((lag(0), lag(1), lag(2)), (Some(10), Some(11), None));
        assert_eq!(METRICS.group_lag("unit-test-lag-group"), Some(21));
        // A rebalance gave partition 1 to another replica.
        context.stats(statistics("lag-topic", &[0]));
        assert_eq!((lag(0), lag(1), lag(2)), (Some(10), None, None));
        assert_eq!(METRICS.group_lag("unit-test-lag-group"), Some(10));
        context.stats(statistics("lag-topic", &[]));
        assert_eq!((lag(0), lag(1)), (None, None));
        assert_eq!(METRICS.group_lag("unit-test-lag-group"), None);
    }
}
