//! `dlq replay`: dead letters sent back to their origin topic, each with a header naming the letter it came
//! from and the reasons it was set aside; a letter is recorded as replayed (`dlq_replays`) once its message
//! is acknowledged, so a second replay skips it. One replay of a topic at a time (an advisory lock).
//!
//! At least once, as the pipeline: should the process die between the acknowledgement and the record, the
//! next replay sends those letters again, and the stages and the sink's upsert make that harmless.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::inspect::letters;
use super::letter::Letter;
use super::record;
use crate::config::Config;
use crate::db;
use crate::kafka::{self, Outbound, header};

/// Letters sent per round: one wait for the acknowledgements, then one record.
const CHUNK: usize = 500;

/// What a replay chose and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub topic: String,
    /// Whether it only said what it would send.
    pub dry_run: bool,
    /// Letters sent back (or, on a dry run, that would be), by origin topic.
    pub sent: BTreeMap<String, u64>,
    /// Letters `--reason` did not choose.
    pub not_chosen: u64,
    /// Chosen letters replayed before.
    pub replayed_before: u64,
    /// Chosen letters without the headers naming their origin: nowhere to send them.
    pub without_origin: u64,
    /// Chosen letters whose payload was too large for the dead-letter topic: the original is at its
    /// origin, named here (`topic/partition/offset`).
    pub without_payload: Vec<String>,
}

impl ReplayReport {
    /// Letters sent back (or that would be).
    pub fn total_sent(&self) -> u64 {
        self.sent.values().sum()
    }
}

/// The message that sends `letter` back: its key and payload to its origin topic, with headers naming the
/// letter and every reason it was set aside.
pub fn replay_of(letter: &Letter) -> Option<Outbound> {
    let origin = letter.origin.as_ref()?;
    Some(Outbound {
        topic: origin.topic.as_str().into(),
        key: letter.key.clone(),
        payload: letter.payload.clone(),
        headers: vec![
            (header::REPLAYED_FROM, letter.at.to_string()),
            (header::PREVIOUS_ERROR, letter.all_errors()),
        ],
    })
}

/// Sends the letters of dead-letter topic `topic` that `reason` chooses and no replay sent before back to
/// their origin topics; with `dry_run`, only says which. A progress bar on stderr when `progress`. Stops
/// between rounds at `shutdown` (what was sent is recorded).
pub async fn replay(
    config: &Config,
    topic: &str,
    reason: Option<&str>,
    dry_run: bool,
    progress: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<ReplayReport> {
    let url = config.database.url.expose();
    let mut session = if dry_run {
        db::connect_one(url).await?
    } else {
        let mut session = record::connect(url).await?;
        record::lock(&mut session, topic).await?;
        session
    };
    let replayed = record::replayed(&mut session, topic).await?;
    let all = letters(&config.kafka.brokers, topic)
        .await?
        .ok_or_else(|| anyhow::anyhow!("there is no topic {topic}"))?;
    let mut report = ReplayReport {
        topic: topic.to_owned(),
        dry_run,
        ..ReplayReport::default()
    };
    let mut chosen = Vec::new();
    for letter in &all {
        if !letter.matches(reason) {
            report.not_chosen += 1;
        } else if replayed.at(letter).is_some() {
            report.replayed_before += 1;
        } else if letter.payload_dropped.is_some() {
            let origin = letter.origin.as_ref().map(ToString::to_string);
            report
                .without_payload
                .push(origin.unwrap_or_else(|| letter.at.to_string()));
        } else if let Some(replay) = replay_of(letter) {
            chosen.push((letter, replay));
        } else {
            report.without_origin += 1;
        }
    }
    if dry_run {
        for (_, replay) in &chosen {
            *report.sent.entry(replay.topic.to_string()).or_default() += 1;
        }
        return Ok(report);
    }
    let producer = kafka::producer(&config.kafka)?;
    let bar = progress_bar(progress, chosen.len() as u64);
    for round in chosen.chunks(CHUNK) {
        if shutdown.is_cancelled() {
            break;
        }
        let records: Vec<Outbound> = round.iter().map(|(_, replay)| replay.clone()).collect();
        if kafka::deliver_all(&producer, &records, shutdown)
            .await
            .is_err()
        {
            // Shut down mid-round: nothing of it is recorded, the next replay sends it again.
            break;
        }
        let sent: Vec<&Letter> = round.iter().map(|(letter, _)| *letter).collect();
        record::record(&mut session, &sent).await?;
        for (_, replay) in round {
            *report.sent.entry(replay.topic.to_string()).or_default() += 1;
        }
        bar.inc(round.len() as u64);
    }
    bar.finish_and_clear();
    info!(
        message = "dead letters replayed",
        topic,
        sent = report.total_sent(),
        replayed_before = report.replayed_before
    );
    Ok(report)
}

fn progress_bar(show: bool, letters: u64) -> ProgressBar {
    if !show || letters == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(letters);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} letters sent back, {eta}")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::dlq::letter::Position;

    #[test]
    fn a_replay_goes_to_the_origin_naming_its_letter_and_every_reason() {
        let letter = Letter {
            at: Position {
                topic: "t.dlq".into(),
                partition: 1,
                offset: 9,
            },
            time: None,
            origin: Some(Position {
                topic: "t".into(),
                partition: 0,
                offset: 4,
            }),
            stage: "sink".into(),
            error: "b".into(),
            previous_error: Some("a".into()),
            replayed_from: Some("t.dlq/0/2".into()),
            payload_dropped: None,
            key: Some(b"k".to_vec()),
            payload: b"{}".to_vec(),
        };
        let replay = replay_of(&letter).unwrap();
        assert_eq!(&*replay.topic, "t");
        assert_eq!(replay.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(replay.payload, b"{}");
        assert_eq!(
            replay.headers,
            [
                (header::REPLAYED_FROM, "t.dlq/1/9".to_owned()),
                (header::PREVIOUS_ERROR, "b | a".to_owned())
            ]
        );
        let lost = Letter {
            origin: None,
            ..letter
        };
        assert!(replay_of(&lost).is_none());
    }
}
