//! Producing: records owned until acknowledged, delivery that sends failures again until every record is
//! in, and dead letters that carry their reason and origin in headers.

use std::borrow::Cow;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
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

/// A record to produce. Owned, so a failed delivery can be sent again.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Outbound {
    /// What a stage makes of `message` for `topic`: the new key and payload, with the replay headers of
    /// `message` carried along, so a replayed message that fails at a later stage still names the dead
    /// letter it came from and why it was set aside before.
    pub fn forward(message: &OwnedMessage, topic: &str, key: Vec<u8>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.to_owned(),
            key: Some(key),
            payload,
            headers: carried_headers(message),
        }
    }

    /// The dead letter of `message`: its key and payload unchanged, the reason and origin in headers, and,
    /// for a message `dlq replay` sent back, the dead letter it came from and the reasons before.
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
        let mut headers = vec![
            (header::ERROR, error.to_owned()),
            (header::STAGE, stage.to_owned()),
            (header::ORIGIN_TOPIC, message.topic().to_owned()),
            (header::ORIGIN_PARTITION, message.partition().to_string()),
            (header::ORIGIN_OFFSET, message.offset().to_string()),
        ];
        headers.extend(carried_headers(message));
        Self {
            topic: topic.to_owned(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
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

/// The value of header `name` of `message`, as text (the last one, should there be several).
/// The headers a message keeps through every stage and into its dead letter: those `dlq replay` set.
fn carried_headers(message: &OwnedMessage) -> Vec<(&'static str, String)> {
    [header::REPLAYED_FROM, header::PREVIOUS_ERROR]
        .into_iter()
        .filter_map(|name| header_text(message, name).map(|value| (name, value)))
        .collect()
}

pub fn header_text(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
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
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
                        sleep_or_abandon(Duration::from_millis(2), abandon).await?;
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
            let delay = backoff.next_delay();
            warn!(
                message = "delivery failed, retrying",
                records = failed.len(),
                error = last_error.as_deref().unwrap_or_default(),
                retry_in_ms = delay.as_millis() as u64
            );
            sleep_or_abandon(delay, abandon).await?;
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

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

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
        let forwarded = Outbound::forward(&replayed, "out", b"k".to_vec(), b"{}".to_vec());
        assert_eq!(
            forwarded.headers,
            [
                (header::REPLAYED_FROM, "users_info.dlq/0/7".to_owned()),
                (header::PREVIOUS_ERROR, "missing field `email`".to_owned()),
            ]
        );
        let letter = Outbound::dead_letter(&replayed, "out.dlq", "tags", "bad");
        assert!(
            letter
                .headers
                .contains(&(header::REPLAYED_FROM, "users_info.dlq/0/7".to_owned()))
        );
        let plain = Outbound::forward(&message(&[]), "out", b"k".to_vec(), b"{}".to_vec());
        assert!(plain.headers.is_empty());
    }
}
