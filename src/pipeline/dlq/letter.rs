//! A dead letter as the tools see it: where it is, where it came from, which stage set it aside and why,
//! its reason (the error's first words, numbers masked, so alike letters group), the filter `--reason`,
//! the summary `dlq list` prints, and payload excerpts. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use serde::Serialize;

use rdkafka::message::OwnedMessage;

use crate::kafka::{header, header_text};

/// Most words of an error that make its reason.
const REASON_WORDS: usize = 12;

/// Most bytes of a payload shown on a terminal.
pub const EXCERPT_BYTES: usize = 300;

/// Where a message is (or was): topic, partition, offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// Where the letter itself is, in its dead-letter topic.
    pub at: Position,
    /// When it was set aside (the letter's timestamp).
    pub time: Option<DateTime<Utc>>,
    /// The message it was, when its headers say so.
    pub origin: Option<Position>,
    pub stage: String,
    /// Why (`userpipe.error`); empty when the header is missing.
    pub error: String,
    /// Why it was set aside before, if it is a replayed message that failed again.
    pub previous_error: Option<String>,
    /// The dead letter it was replayed from, if any.
    pub replayed_from: Option<String>,
    /// Why the payload is missing: it was too large for the dead-letter topic.
    pub payload_dropped: Option<String>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Letter {
    /// The letter `message` (read from a dead-letter topic) is.
    pub fn of(message: &OwnedMessage) -> Self {
        let text = |name| header_text(message, name);
        let origin = match (
            text(header::ORIGIN_TOPIC),
            text(header::ORIGIN_PARTITION).and_then(|p| p.parse().ok()),
            text(header::ORIGIN_OFFSET).and_then(|o| o.parse().ok()),
        ) {
            (Some(topic), Some(partition), Some(offset)) => Some(Position {
                topic,
                partition,
                offset,
            }),
            _ => None,
        };
        Self {
            at: Position {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
            time: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            origin,
            stage: text(header::STAGE).unwrap_or_default(),
            error: text(header::ERROR).unwrap_or_default(),
            previous_error: text(header::PREVIOUS_ERROR),
            replayed_from: text(header::REPLAYED_FROM),
            payload_dropped: text(header::PAYLOAD_DROPPED),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }

    /// The error's first words with its numbers masked: letters with the same fault share it.
    pub fn reason(&self) -> String {
        reason_of(&self.error)
    }

    /// Whether `--reason TEXT` chooses this letter: `text` is in its error or its reason (any case).
    pub fn matches(&self, text: Option<&str>) -> bool {
        let Some(text) = text else { return true };
        let text = text.to_lowercase();
        self.error.to_lowercase().contains(&text) || self.reason().to_lowercase().contains(&text)
    }

    /// The reasons this letter's message had, newest first, as its replay carries them.
    pub fn all_errors(&self) -> String {
        match &self.previous_error {
            Some(before) => format!("{} | {before}", self.error),
            None => self.error.clone(),
        }
    }
}

/// `error`'s first words, each run of digits shown as `N`.
pub fn reason_of(error: &str) -> String {
    let mut masked = String::with_capacity(error.len());
    let mut in_number = false;
    for c in error.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                masked.push('N');
            }
            in_number = true;
        } else {
            masked.push(c);
            in_number = false;
        }
    }
    let words: Vec<&str> = masked.split_whitespace().collect();
    let mut reason = words[..words.len().min(REASON_WORDS)].join(" ");
    if words.len() > REASON_WORDS {
        reason.push_str(" ...");
    }
    if reason.is_empty() {
        reason.push_str("(no userpipe.error header)");
    }
    reason
}

/// Up to `limit` bytes of `payload` as text (invalid UTF-8 shown as U+FFFD), saying how much was left
/// out.
pub fn excerpt(payload: &[u8], limit: usize) -> String {
    if payload.len() <= limit {
        return String::from_utf8_lossy(payload).into_owned();
    }
    let mut end = limit;
    // Not in the middle of a character: back up over continuation bytes.
    while end > 0 && (payload[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    format!(
        "{}... ({} of {} bytes)",
        String::from_utf8_lossy(&payload[..end]),
        end,
        payload.len()
    )
}

/// Letters of one stage and reason in one dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub stage: String,
    pub reason: String,
    pub count: u64,
    /// How many of them were replayed already.
    pub replayed: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

/// A dead-letter topic's letters by stage and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    pub topic: String,
    /// Whether the topic exists.
    pub exists: bool,
    pub groups: Vec<Group>,
}

impl TopicSummary {
    /// `letters` of `topic` grouped by stage and reason, `replayed` telling which were replayed.
    pub fn of<'a>(
        topic: &str,
        letters: impl IntoIterator<Item = &'a Letter>,
        replayed: impl Fn(&Letter) -> bool,
    ) -> Self {
        let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
        for letter in letters {
            let key = (letter.stage.clone(), letter.reason());
            let group = groups.entry(key).or_insert_with(|| Group {
                stage: letter.stage.clone(),
                reason: letter.reason(),
                count: 0,
                replayed: 0,
                oldest: None,
                newest: None,
            });
            group.count += 1;
            group.replayed += u64::from(replayed(letter));
            if let Some(time) = letter.time {
                group.oldest = Some(group.oldest.map_or(time, |t| t.min(time)));
                group.newest = Some(group.newest.map_or(time, |t| t.max(time)));
            }
        }
        Self {
            topic: topic.to_owned(),
            exists: true,
            groups: groups.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    fn message(offset: i64, headers: &[(&str, &str)], payload: &[u8]) -> OwnedMessage {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        });
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"user-1".to_vec()),
            "users_info.dlq".into(),
            Timestamp::CreateTime(1_767_225_600_000 + offset * 1000),
            2,
            offset,
            Some(headers),
        )
    }

    fn letter(offset: i64, error: &str) -> Letter {
        Letter::of(&message(
            offset,
            &[
                (header::ERROR, error),
                (header::STAGE, "timestamp"),
                (header::ORIGIN_TOPIC, "users_info"),
                (header::ORIGIN_PARTITION, "1"),
                (header::ORIGIN_OFFSET, "41"),
            ],
            b"{}",
        ))
    }

    #[test]
    fn a_letter_reads_its_origin_stage_error_and_time_from_the_message() {
        let letter = letter(17, "missing field `email`");
        assert_eq!(letter.at.to_string(), "users_info.dlq/2/17");
        assert_eq!(
            letter.origin.as_ref().map(ToString::to_string).as_deref(),
            Some("users_info/1/41")
        );
        assert_eq!(letter.stage, "timestamp");
        assert_eq!(letter.error, "missing field `email`");
        assert_eq!(
            letter.time.unwrap().to_rfc3339(),
            "2026-01-01T00:00:17+00:00"
        );
        assert_eq!(letter.key.as_deref(), Some(&b"user-1"[..]));
        let bare = Letter::of(&message(3, &[], b""));
        assert_eq!(bare.origin, None);
        assert_eq!(bare.reason(), "(no userpipe.error header)");
    }

    #[test]
    fn reasons_mask_numbers_and_keep_the_first_words() {
        let check = |error: &str, reason: &str| assert_eq!(reason_of(error), reason, "{error}");
        check(
            "payload of 2000 bytes exceeds the limit of 1024 bytes",
            "payload of N bytes exceeds the limit of N bytes",
        );
        check(
            "payload is not json: expected value at line 1 column 13",
            "payload is not json: expected value at line N column N",
        );
        check(
            "database refused the row: error returned from database: new row for relation \"random_users\" violates check constraint \"c\"",
            "database refused the row: error returned from database: new row for relation ...",
        );
    }

    #[test]
    fn the_reason_filter_reads_the_error_and_the_reason_in_any_case() {
        let letter = letter(1, "payload of 2000 bytes exceeds the limit of 1024 bytes");
        assert!(letter.matches(None));
        assert!(letter.matches(Some("EXCEEDS the limit")));
        assert!(letter.matches(Some("of 2000 bytes")));
        assert!(letter.matches(Some("payload of N bytes")));
        assert!(!letter.matches(Some("missing field")));
    }

    #[test]
    fn the_summary_groups_by_stage_and_reason_with_the_oldest_and_newest() {
        let letters = [
            letter(5, "payload of 10 bytes exceeds the limit of 5 bytes"),
            letter(1, "payload of 99 bytes exceeds the limit of 5 bytes"),
            letter(3, "missing field `email`"),
        ];
        let summary = TopicSummary::of("users_info.dlq", &letters, |l| l.at.offset == 5);
        assert_eq!(summary.groups.len(), 2);
        let oversized = &summary.groups[1];
        assert_eq!(
            oversized.reason,
            "payload of N bytes exceeds the limit of N bytes"
        );
        assert_eq!((oversized.count, oversized.replayed), (2, 1));
        assert_eq!(oversized.oldest, letters[1].time);
        assert_eq!(oversized.newest, letters[0].time);
        assert_eq!(summary.groups[0].reason, "missing field `email`");
    }

    #[test]
    fn an_excerpt_is_short_and_cut_between_characters() {
        assert_eq!(excerpt(b"{\"a\": 1}", 300), "{\"a\": 1}");
        let long = "é".repeat(400);
        let shown = excerpt(long.as_bytes(), 301);
        assert!(shown.starts_with(&"é".repeat(150)), "{shown}");
        assert!(shown.ends_with("... (300 of 800 bytes)"), "{shown}");
        assert!(!shown.contains('\u{FFFD}'));
    }

    #[test]
    fn a_replayed_letter_carries_every_reason_newest_first() {
        let mut letter = letter(1, "database refused the row: b");
        assert_eq!(letter.all_errors(), "database refused the row: b");
        letter.previous_error = Some("database refused the row: a".into());
        assert_eq!(
            letter.all_errors(),
            "database refused the row: b | database refused the row: a"
        );
    }
}
