//! Reading a topic whole: every partition from its first offset to its last as of the start, without a
//! consumer group (the dead-letter tools). Blocking: call it from `spawn_blocking`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::client::reader;

/// Longest wait for the cluster's answer to one request (metadata, watermarks).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time without a message while partitions are not yet read to their end.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// Reads every message of `topic` that was in it when the read began, partition by partition in offset
/// order, handing each to `visit`. `None` when there is no such topic; else how many messages were read.
pub fn read_to_end(
    brokers: &str,
    topic: &str,
    mut visit: impl FnMut(OwnedMessage),
) -> anyhow::Result<Option<u64>> {
    let consumer = reader(brokers)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("cannot read the metadata of topic {topic} from {brokers}"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
        Some(code) => bail!("cannot read topic {topic}: {code}"),
    }
    // Where each partition ends now: what arrives later is not read.
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in found.partitions() {
        let id = partition.id();
        let (low, high) = consumer
            .fetch_watermarks(topic, id, REQUEST_TIMEOUT)
            .with_context(|| format!("cannot read the offsets of topic {topic} partition {id}"))?;
        if high > low {
            ends.insert(id, high);
            assignment
                .add_partition_offset(topic, id, Offset::Offset(low))
                .with_context(|| format!("cannot assign topic {topic} partition {id}"))?;
        }
    }
    if ends.is_empty() {
        return Ok(Some(0));
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("cannot assign the partitions of topic {topic}"))?;
    let mut read = 0;
    let mut last_message = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                last_message = Instant::now();
                let (partition, offset) = (message.partition(), message.offset());
                let Some(&end) = ends.get(&partition) else {
                    continue;
                };
                if offset < end {
                    visit(message.detach());
                    read += 1;
                }
                if offset + 1 >= end {
                    ends.remove(&partition);
                }
            }
            Some(Err(error)) => {
                return Err(error)
                    .with_context(|| format!("cannot read topic {topic} from {brokers}"));
            }
            None => {
                // No message: a partition whose last offsets hold no message (a transaction marker) is
                // done once its position has passed its end.
                let positions = consumer.position().context("cannot read the positions")?;
                for element in positions.elements() {
                    if let Offset::Offset(at) = element.offset()
                        && ends.get(&element.partition()).is_some_and(|end| at >= *end)
                    {
                        ends.remove(&element.partition());
                    }
                }
                if !ends.is_empty() && last_message.elapsed() > IDLE_LIMIT {
                    bail!(
                        "topic {topic}: no message for {}s with partitions {:?} not read to their end",
                        IDLE_LIMIT.as_secs(),
                        ends.keys().collect::<Vec<_>>()
                    );
                }
            }
        }
    }
    Ok(Some(read))
}
