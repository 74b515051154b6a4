//! Producing: records owned until acknowledged, delivery rounds whose acknowledgements are counted (no
//! future per record), delivery that sends failures again until every record is in, and dead letters that
//! carry their reason and origin in headers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::retry::{Abandoned, Backoff, sleep_or_abandon};

/// Header names on a dead letter.
pub mod header {
    pub const ERROR: &str = "userpipe.error";
    pub const STAGE: &str = "userpipe.stage";
    pub const ORIGIN_TOPIC: &str = "userpipe.origin.topic";
    pub const ORIGIN_PARTITION: &str = "userpipe.origin.partition";
    pub const ORIGIN_OFFSET: &str = "userpipe.origin.offset";
    /// On a dead letter whose payload was too large for the dead-letter topic: why it is empty.
    pub const PAYLOAD_DROPPED: &str = "userpipe.payload_dropped";
    /// On a message `dlq replay` sent back, and on its dead letter should it fail again: the dead letter
    /// it came from, as `topic/partition/offset`.
    pub const REPLAYED_FROM: &str = "userpipe.replayed_from";
    /// Beside `REPLAYED_FROM`: why it was set aside before, newest first, separated by ` | `.
    pub const PREVIOUS_ERROR: &str = "userpipe.previous_error";
}

/// userpipe's producer: librdkafka's, with a thread that runs the delivery callbacks into [`Acks`].
pub type Producer = ThreadedProducer<Acks>;

/// A record to produce. Owned, so a failed delivery can be sent again.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Shared by every record of a batch (one reference count each, no copy of the name).
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Outbound {
    /// What a stage makes of `message` for `topic`: the new key and payload, with the replay headers of
    /// `message` carried along, so a replayed message that fails at a later stage still names the dead
    /// letter it came from and why it was set aside before.
    pub fn forward(
        message: &impl Message,
        topic: &Arc<str>,
        key: Vec<u8>,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            topic: topic.clone(),
            key: Some(key),
            payload,
            headers: carried_headers(message),
        }
    }

    /// The dead letter of `message`: its key and payload unchanged, the reason and origin in headers, and,
    /// for a message `dlq replay` sent back, the dead letter it came from and the reasons before.
    /// Logs where the message came from and why it is set aside.
    pub fn dead_letter(message: &impl Message, topic: &Arc<str>, stage: &str, error: &str) -> Self {
        warn!(
            message = "dead-lettering a message",
            stage,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            error
        );
        let mut headers = vec![
            (header::ERROR, error.to_owned()),
            (header::STAGE, stage.to_owned()),
            (header::ORIGIN_TOPIC, message.topic().to_owned()),
            (header::ORIGIN_PARTITION, message.partition().to_string()),
            (header::ORIGIN_OFFSET, message.offset().to_string()),
        ];
        headers.extend(carried_headers(message));
        Self {
            topic: topic.clone(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }

    fn record(&self, opaque: usize) -> BaseRecord<'_, [u8], [u8], usize> {
        let mut record =
            BaseRecord::with_opaque_to(&self.topic, opaque).payload(self.payload.as_slice());
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

/// The headers a message keeps through every stage and into its dead letter: those `dlq replay` set.
/// Reads the message's headers once: librdkafka parses them anew on each call.
fn carried_headers(message: &impl Message) -> Vec<(&'static str, String)> {
    let Some(headers) = message.headers() else {
        return Vec::new();
    };
    [header::REPLAYED_FROM, header::PREVIOUS_ERROR]
        .into_iter()
        .filter_map(|name| last_value(headers, name).map(|value| (name, value)))
        .collect()
}

/// The value of header `name` of `message`, as text (the last one, should there be several).
pub fn header_text(message: &impl Message, name: &str) -> Option<String> {
    last_value(message.headers()?, name)
}

fn last_value(headers: &impl Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The producer's context: counts the acknowledgements of each delivery round and keeps its failures.
/// A record's opaque is its round and its index in the round, so a record costs no allocation and no
/// channel; an acknowledgement of a round no longer awaited (an abandoned batch's) is dropped.
#[derive(Default)]
pub struct Acks {
    rounds: Mutex<HashMap<u32, Round>>,
    next: AtomicU32,
}

/// One round's acknowledgements still to come, and the records that failed (by index).
struct Round {
    waiting: usize,
    failed: Vec<(usize, KafkaError)>,
    done: Arc<Notify>,
}

// A record's opaque holds its round in the high half and its index in the low half.
const _: () = assert!(usize::BITS == 64);

impl Acks {
    fn rounds(&self) -> MutexGuard<'_, HashMap<u32, Round>> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a round of `records` records; dropping the guard forgets it.
    fn open(&self, records: usize) -> RoundGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(Notify::new());
        let round = Round {
            waiting: records,
            failed: Vec::new(),
            done: done.clone(),
        };
        self.rounds().insert(id, round);
        RoundGuard {
            acks: self,
            id,
            done,
        }
    }

    /// Records the outcome of record `opaque`.
    fn settle(&self, opaque: usize, error: Option<KafkaError>) {
        let (id, index) = ((opaque >> 32) as u32, opaque & 0xffff_ffff);
        let mut rounds = self.rounds();
        let Some(round) = rounds.get_mut(&id) else {
            return;
        };
        if let Some(error) = error {
            round.failed.push((index, error));
        }
        round.waiting -= 1;
        if round.waiting == 0 {
            round.done.notify_one();
        }
    }
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        self.settle(
            opaque,
            result.as_ref().err().map(|(error, _)| error.clone()),
        );
    }
}

/// A round being delivered; forgotten when dropped, so late acknowledgements go nowhere.
struct RoundGuard<'a> {
    acks: &'a Acks,
    id: u32,
    done: Arc<Notify>,
}

impl RoundGuard<'_> {
    fn opaque(&self, index: usize) -> usize {
        (self.id as usize) << 32 | index
    }

    /// Waits until every record of the round is settled; returns the failed ones, by index.
    async fn failures(&self) -> Vec<(usize, KafkaError)> {
        self.done.notified().await;
        let mut failed = self
            .acks
            .rounds()
            .get_mut(&self.id)
            .map(|round| std::mem::take(&mut round.failed))
            .unwrap_or_default();
        failed.sort_unstable_by_key(|(index, _)| *index);
        failed
    }
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.acks.rounds().remove(&self.id);
    }
}

/// Produces every record and waits until each is acknowledged, sending failed ones again with backoff.
/// Never skips a record: it returns only when all are delivered (with how many deliveries failed and were
/// sent again), or `Abandoned`.
pub async fn deliver_all(
    producer: &Producer,
    records: &[Outbound],
    abandon: &CancellationToken,
) -> Result<u64, Abandoned> {
    let acks = producer.context();
    let mut retried = 0;
    let mut pending: Vec<Cow<'_, Outbound>> = records.iter().map(Cow::Borrowed).collect();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !pending.is_empty() {
        let round = acks.open(pending.len());
        for (index, record) in pending.iter().enumerate() {
            loop {
                match producer.send(record.record(round.opaque(index))) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        sleep_or_abandon(Duration::from_millis(2), abandon).await?;
                    }
                    Err((error, _)) => {
                        acks.settle(round.opaque(index), Some(error));
                        break;
                    }
                }
            }
        }
        let failures = tokio::select! {
            _ = abandon.cancelled() => return Err(Abandoned),
            failures = round.failures() => failures,
        };
        drop(round);
        let Some((_, last_error)) = failures.last() else {
            break;
        };
        let last_error = last_error.to_string();
        let mut slots: Vec<Option<Cow<'_, Outbound>>> = pending.into_iter().map(Some).collect();
        pending = failures
            .iter()
            .filter_map(|(index, error)| Some(retry_form(slots[*index].take()?, error)))
            .collect();
        retried += pending.len() as u64;
        let delay = backoff.next_delay();
        warn!(
            message = "delivery failed, retrying",
            records = pending.len(),
            error = last_error,
            retry_in_ms = delay.as_millis() as u64
        );
        sleep_or_abandon(delay, abandon).await?;
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

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    fn message(headers: &[(&str, &str)]) -> OwnedMessage {
        let owned = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| {
                all.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"k".to_vec()),
            "users_info".into(),
            Timestamp::NotAvailable,
            1,
            42,
            Some(owned),
        )
    }

    #[test]
    fn a_replayed_message_keeps_its_replay_headers_through_a_stage_and_into_its_dead_letter() {
        let replayed = message(&[
            (header::REPLAYED_FROM, "users_info.dlq/0/7"),
            (header::PREVIOUS_ERROR, "missing field `email`"),
            ("other", "dropped"),
        ]);
        let forwarded = Outbound::forward(&replayed, &"out".into(), b"k".to_vec(), b"{}".to_vec());
        assert_eq!(
            forwarded.headers,
            [
                (header::REPLAYED_FROM, "users_info.dlq/0/7".to_owned()),
                (header::PREVIOUS_ERROR, "missing field `email`".to_owned()),
            ]
        );
        let letter = Outbound::dead_letter(&replayed, &"out.dlq".into(), "tags", "bad");
        assert!(
            letter
                .headers
                .contains(&(header::REPLAYED_FROM, "users_info.dlq/0/7".to_owned()))
        );
        let plain = Outbound::forward(&message(&[]), &"out".into(), b"k".to_vec(), b"{}".to_vec());
        assert!(plain.headers.is_empty());
    }
}
