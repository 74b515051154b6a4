//! Consuming in batches, at least once: a consumed offset is stored (and later auto-committed) only after
//! the batch it belongs to was completed by its [`BatchHandler`]; a batch that is abandoned stores nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{LagContext, consumer};
use crate::retry::Abandoned;

/// The next offset to consume of every partition a batch touched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Offsets(BTreeMap<(String, i32), i64>);

impl Offsets {
    pub fn of(batch: &[OwnedMessage]) -> Self {
        let mut offsets = Self::default();
        for message in batch {
            let next = offsets
                .0
                .entry((message.topic().to_owned(), message.partition()))
                .or_insert(0);
            *next = (*next).max(message.offset() + 1);
        }
        offsets
    }

    fn to_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &self.0 {
            // Cannot fail for an absolute offset.
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        list
    }
}

/// Longest wait for the last offset commit at shutdown.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a consumer loop cuts its input into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most messages in a batch.
    pub max: usize,
    /// Longest wait for a batch to fill once its first message is in.
    pub linger: Duration,
    /// After shutdown, how long in-flight batches may still be completed before they are abandoned.
    pub grace: Duration,
}

/// What a consumer loop does with its batches, in two steps so that preparing the next batch overlaps
/// completing the previous one.
pub trait BatchHandler: Send + Sync + 'static {
    /// What `prepare` hands to `complete`.
    type Work: Send + 'static;

    /// Pure work on a batch (parse, check, transform); no waiting.
    fn prepare(&self, batch: Vec<OwnedMessage>) -> Self::Work;

    /// Makes the batch's effect durable (produce acknowledged, rows committed), retrying transient
    /// failures until done or `abandon` fires. Batches are completed one at a time, in order.
    fn complete(
        &self,
        work: Self::Work,
        abandon: &CancellationToken,
    ) -> impl Future<Output = Result<(), Abandoned>> + Send;
}

/// Consumes `topic` in `group` until `shutdown`, handing batches to `handler` and storing their offsets
/// once completed. On shutdown it stops taking messages, completes what is in flight within the grace
/// period (else abandons it, storing nothing), and commits the stored offsets.
pub async fn consume_batches<H: BatchHandler>(
    brokers: &str,
    group: &str,
    topic: &str,
    settings: BatchSettings,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = Arc::new(consumer(brokers, group)?);
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("cannot subscribe to topic {topic}"))?;
    info!(message = "consuming", topic, group);

    let abandon = CancellationToken::new();
    let grace_timer = {
        let (shutdown, abandon) = (shutdown.clone(), abandon.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(settings.grace).await;
            abandon.cancel();
        })
    };
    // One prepared batch waits while another is completed (and a third is gathered): enough to keep the
    // completer busy; each more would only hold another batch in memory.
    let (tx, mut rx) = mpsc::channel::<(H::Work, Offsets)>(1);
    let completer = {
        let (consumer, handler, abandon) = (consumer.clone(), handler.clone(), abandon.clone());
        tokio::spawn(async move {
            while let Some((work, offsets)) = rx.recv().await {
                if handler.complete(work, &abandon).await.is_err() {
                    warn!(
                        message =
                            "in-flight batches abandoned at shutdown; their offsets are not stored"
                    );
                    return;
                }
                if let Err(error) = consumer.store_offsets(&offsets.to_list()) {
                    // The partitions were revoked meanwhile: their new owner reads them again.
                    debug!(message = "cannot store offsets", %error);
                }
            }
        })
    };

    while let Some(batch) = next_batch(&consumer, settings, &shutdown).await {
        let offsets = Offsets::of(&batch);
        let work = handler.prepare(batch);
        if tx.send((work, offsets)).await.is_err() {
            break;
        }
    }
    drop(tx);
    completer.await.context("the batch completer panicked")?;
    grace_timer.abort();

    // With the broker gone the commit (and closing the consumer) could wait for its timeouts; the stop
    // must not. Offsets not committed here are consumed again by the next owner: duplicates, never a loss.
    let committer = consumer.clone();
    let commit =
        tokio::task::spawn_blocking(move || committer.commit_consumer_state(CommitMode::Sync));
    match tokio::time::timeout(FINAL_COMMIT_TIMEOUT, commit).await {
        Ok(Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)))) => {}
        Ok(Ok(Err(error))) => warn!(message = "final offset commit failed", %error),
        Ok(Err(panic)) => warn!(message = "final offset commit panicked", %panic),
        Err(_) => warn!(
            message = "final offset commit did not finish in time; the next owner reads those messages again"
        ),
    }
    tokio::task::spawn_blocking(move || drop(consumer));
    info!(message = "stopped consuming", topic, group);
    Ok(())
}

/// Waits for a first message, then gathers more until the batch is full or `linger` has passed.
/// `None` once `shutdown` fires; a batch being gathered then is dropped unstored.
async fn next_batch(
    consumer: &StreamConsumer<LagContext>,
    settings: BatchSettings,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedMessage>> {
    let mut batch = Vec::with_capacity(settings.max);
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return None,
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => {
                batch.push(message.detach());
                break;
            }
            Err(error) => {
                warn!(message = "kafka consumer error", %error);
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + settings.linger;
    while batch.len() < settings.max {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return None,
            received = tokio::time::timeout_at(deadline, consumer.recv()) => received,
        };
        match received {
            Ok(Ok(message)) => batch.push(message.detach()),
            Ok(Err(error)) => {
                warn!(message = "kafka consumer error", %error);
                break;
            }
            Err(_elapsed) => break,
        }
    }
    Some(batch)
}
