//! Consuming in batches, at least once: a consumed offset is stored (and later auto-committed) only after
//! the batch it belongs to was completed by its [`BatchHandler`]; a batch that is abandoned stores nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, MessageStream};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{LagContext, consumer};
use crate::retry::Abandoned;

/// The next offset to consume of every partition a batch touched, in the order first seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Offsets(Vec<(String, i32, i64)>);

impl Offsets {
    /// A batch touches a few partitions of one topic: a short list searched in place costs less per
    /// message than a map keyed by an owned topic name.
    pub fn of<M: Message>(batch: &[M]) -> Self {
        let mut offsets = Self::default();
        for message in batch {
            let (topic, partition, next) =
                (message.topic(), message.partition(), message.offset() + 1);
            match offsets
                .0
                .iter_mut()
                .find(|(t, p, _)| *p == partition && t == topic)
            {
                Some((_, _, stored)) => *stored = (*stored).max(next),
                None => offsets.0.push((topic.to_owned(), partition, next)),
            }
        }
        offsets
    }

    fn to_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in &self.0 {
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

    /// Pure work on a batch (parse, check, transform); no waiting. The messages are librdkafka's own,
    /// borrowed: `Work` keeps a copy of only what it needs.
    fn prepare(&self, batch: &[BorrowedMessage<'_>]) -> Self::Work;

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

    // One stream for the consumer's life: `recv` would register and unregister a waker per message.
    let mut stream = consumer.stream();
    let mut batch = Vec::with_capacity(settings.max);
    while next_batch(&mut stream, &mut batch, settings, &shutdown).await {
        let offsets = Offsets::of(&batch);
        let work = handler.prepare(&batch);
        // Back to librdkafka before waiting for room in the channel.
        batch.clear();
        if tx.send((work, offsets)).await.is_err() {
            break;
        }
    }
    drop(batch);
    drop(stream);
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

/// Fills the empty `batch`: waits for a first message, then gathers more until the batch is full or
/// `linger` has passed. `false` once `shutdown` fires; a batch being gathered then is dropped unstored.
async fn next_batch<'c>(
    stream: &mut MessageStream<'c, LagContext>,
    batch: &mut Vec<BorrowedMessage<'c>>,
    settings: BatchSettings,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return false,
            received = stream.next() => received.expect("kafka streams never end"),
        };
        match received {
            Ok(message) => {
                batch.push(message);
                break;
            }
            Err(error) => {
                warn!(message = "kafka consumer error", %error);
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + settings.linger;
    while batch.len() < settings.max {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return false,
            received = tokio::time::timeout_at(deadline, stream.next()) => received,
        };
        match received {
            Ok(Some(Ok(message))) => batch.push(message),
            Ok(Some(Err(error))) => {
                warn!(message = "kafka consumer error", %error);
                break;
            }
            Ok(None) => unreachable!("kafka streams never end"),
            Err(_elapsed) => break,
        }
    }
    true
}
