//! Kafka plumbing: client settings, topic creation, batched at-least-once consumption, delivery with
//! retries, and dead letters. The only module that names librdkafka settings.
//!
//! The consumption contract: a consumed offset is stored (and later auto-committed) only after the
//! batch it belongs to was completed by its [`BatchHandler`]; a batch that is abandoned stores nothing.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::{LagLabels, METRICS};

pub use rdkafka::message::OwnedMessage as Received;

/// Largest record userpipe produces (a dead letter carries the original payload plus headers).
const MAX_PRODUCED_BYTES: usize = 16 * 1024 * 1024;
/// `max.message.bytes` of the dead-letter topics, so a dead letter of an oversized message still fits.
pub const DEAD_LETTER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Header names on a dead letter.
pub mod header {
    pub const ERROR: &str = "userpipe.error";
    pub const STAGE: &str = "userpipe.stage";
    pub const ORIGIN_TOPIC: &str = "userpipe.origin.topic";
    pub const ORIGIN_PARTITION: &str = "userpipe.origin.partition";
    pub const ORIGIN_OFFSET: &str = "userpipe.origin.offset";
    /// On a dead letter whose payload was too large for the dead-letter topic: why it is empty.
    pub const PAYLOAD_DROPPED: &str = "userpipe.payload_dropped";
}

/// A topic userpipe wants to exist, with the settings it is created with.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Largest record the topic accepts, in bytes (`max.message.bytes`); `None` keeps the broker default.
    pub max_message_bytes: Option<usize>,
}

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

/// An idempotent producer that waits for every in-sync replica (`acks=all`) and retries on its own.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    base_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.max.bytes", MAX_PRODUCED_BYTES.to_string())
        .create()
        .with_context(|| format!("cannot create a kafka producer for {brokers}"))
}

/// A consumer context that turns librdkafka's statistics into the consumer-lag metric.
pub struct LagContext {
    group: String,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                // librdkafka reports -1 for partitions this member does not own, and a -1 partition.
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                let labels = LagLabels {
                    group: self.group.clone(),
                    topic: topic.clone(),
                    partition,
                };
                METRICS
                    .consumer_lag
                    .get_or_create(&labels)
                    .set(p.consumer_lag);
            }
        }
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
        .set("queued.max.messages.kbytes", "8192")
        .set("statistics.interval.ms", "5000")
        .create_with_context(LagContext {
            group: group.to_owned(),
        })
        .with_context(|| format!("cannot create a kafka consumer for {brokers}"))
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

/// A record to produce. Owned, so a failed delivery can be sent again.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Outbound {
    /// The dead letter of `message`: its key and payload unchanged, the reason and origin in headers.
    /// Logs where the message came from and why it is set aside.
    pub fn dead_letter(message: &OwnedMessage, topic: &str, stage: &str, error: &str) -> Self {
        warn!(
            message = "dead-lettering a message",
            stage,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            error
        );
        Self {
            topic: topic.to_owned(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: vec![
                (header::ERROR, error.to_owned()),
                (header::STAGE, stage.to_owned()),
                (header::ORIGIN_TOPIC, message.topic().to_owned()),
                (header::ORIGIN_PARTITION, message.partition().to_string()),
                (header::ORIGIN_OFFSET, message.offset().to_string()),
            ],
        }
    }

    fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut record = FutureRecord::to(&self.topic).payload(self.payload.as_slice());
        if let Some(key) = &self.key {
            record = record.key(key.as_slice());
        }
        if !self.headers.is_empty() {
            let headers = self.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            });
            record = record.headers(headers);
        }
        record
    }
}

/// The work was given up (shutdown came first); nothing of it may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned at shutdown")]
pub struct Abandoned;

/// Waits `delay`, or returns `Abandoned` if `abandon` fires first.
pub async fn backoff(delay: Duration, abandon: &CancellationToken) -> Result<(), Abandoned> {
    tokio::select! {
        _ = abandon.cancelled() => Err(Abandoned),
        _ = tokio::time::sleep(delay) => Ok(()),
    }
}

/// Produces every record and waits until each is acknowledged, sending failed ones again with backoff.
/// Never skips a record: it returns only when all are delivered (with how many deliveries failed and were
/// sent again), or `Abandoned`.
pub async fn deliver_all(
    producer: &FutureProducer,
    records: &[Outbound],
    abandon: &CancellationToken,
) -> Result<u64, Abandoned> {
    let mut retried = 0;
    let mut pending: Vec<Cow<'_, Outbound>> = records.iter().map(Cow::Borrowed).collect();
    let mut delay = Duration::from_millis(100);
    while !pending.is_empty() {
        let mut in_flight = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        let mut last_error = None;
        for record in pending {
            loop {
                match producer.send_result(record.record()) {
                    Ok(delivery) => {
                        in_flight.push((record, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        backoff(Duration::from_millis(2), abandon).await?;
                    }
                    Err((error, _)) => {
                        last_error = Some(error.to_string());
                        failed.push(retry_form(record, &error));
                        break;
                    }
                }
            }
        }
        for (record, delivery) in in_flight {
            let outcome = tokio::select! {
                _ = abandon.cancelled() => return Err(Abandoned),
                outcome = delivery => outcome,
            };
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    last_error = Some(error.to_string());
                    failed.push(retry_form(record, &error));
                }
                Err(_) => {
                    last_error = Some("the producer was dropped".into());
                    failed.push(record);
                }
            }
        }
        if !failed.is_empty() {
            retried += failed.len() as u64;
            warn!(
                message = "delivery failed, retrying",
                records = failed.len(),
                error = last_error.as_deref().unwrap_or_default(),
                retry_in_ms = delay.as_millis() as u64
            );
            backoff(delay, abandon).await?;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        pending = failed;
    }
    Ok(retried)
}

/// What to send again after `error`: the same record, except a dead letter too large for its topic, which
/// goes again without its payload (the original stays at its origin, which the headers name), so a stage
/// never stalls on it.
fn retry_form<'a>(record: Cow<'a, Outbound>, error: &KafkaError) -> Cow<'a, Outbound> {
    let too_large = matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    let dead_letter = record.headers.iter().any(|(k, _)| *k == header::ERROR);
    if !(too_large && dead_letter && !record.payload.is_empty()) {
        return record;
    }
    let mut smaller = record.into_owned();
    let size = smaller.payload.len();
    smaller.payload = Vec::new();
    smaller.headers.push((
        header::PAYLOAD_DROPPED,
        format!(
            "{size} bytes, more than the dead-letter topic accepts; the original is at its origin"
        ),
    ));
    Cow::Owned(smaller)
}

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
    let (tx, mut rx) = mpsc::channel::<(H::Work, Offsets)>(2);
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
