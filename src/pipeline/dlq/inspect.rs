//! Looking at dead letters: every letter of a dead-letter topic, the pipeline's dead-letter topics summed
//! up by stage and reason (`dlq list`), and the letters a `--reason` chooses (`dlq show`), each with when it
//! was replayed where the replay record can be read.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::letter::{Letter, TopicSummary};
use super::record::{self, Replayed};
use crate::config::{Config, dead_letter_topic};
use crate::{db, kafka};

/// Every letter of dead-letter topic `topic`, oldest first; `None` when there is no such topic.
pub async fn letters(brokers: &str, topic: &str) -> anyhow::Result<Option<Vec<Letter>>> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    let read = tokio::task::spawn_blocking(move || {
        let mut letters = Vec::new();
        let found = kafka::read_to_end(&brokers, &topic, |message| {
            letters.push(Letter::of(&message))
        })?;
        anyhow::Ok(found.map(|_| letters))
    })
    .await
    .context("the reader panicked")??;
    Ok(read.map(|mut letters| {
        letters.sort_by(|a, b| (a.time, &a.at).cmp(&(b.time, &b.at)));
        letters
    }))
}

/// The replay record of `topic`, or why it cannot be read (the letters are shown without it).
pub async fn replay_record(config: &Config, topic: &str) -> Result<Replayed, String> {
    let read = async {
        let mut session = db::connect_one(config.database.url.expose()).await?;
        record::replayed(&mut session, topic).await
    };
    read.await.map_err(|e| format!("{e:#}"))
}

/// What `dlq list` shows: the pipeline's dead-letter topics, each with its letters by stage and reason;
/// and why the replay record could not be read, if it could not.
pub async fn list(config: &Config) -> anyhow::Result<(Vec<TopicSummary>, Option<String>)> {
    let topics = &config.topics;
    let mut summaries = Vec::new();
    let mut unrecorded = None;
    for input in [&topics.users, &topics.timestamped, &topics.enriched] {
        let topic = dead_letter_topic(input);
        let Some(letters) = letters(&config.kafka.brokers, &topic).await? else {
            summaries.push(TopicSummary {
                topic,
                exists: false,
                groups: Vec::new(),
            });
            continue;
        };
        let replayed = if letters.is_empty() {
            Replayed::default()
        } else {
            replay_record(config, &topic).await.unwrap_or_else(|error| {
                unrecorded = Some(error);
                Replayed::default()
            })
        };
        summaries.push(TopicSummary::of(&topic, &letters, |l| {
            replayed.at(l).is_some()
        }));
    }
    Ok((summaries, unrecorded))
}

/// A letter `dlq show` shows, with when it was replayed.
#[derive(Debug, Clone)]
pub struct Shown {
    pub letter: Letter,
    pub replayed_at: Option<DateTime<Utc>>,
}

/// What `dlq show` shows: the first `limit` letters of `topic` that `reason` chooses, oldest first, and
/// how many it chooses in all; and why the replay record could not be read, if it could not.
pub async fn show(
    config: &Config,
    topic: &str,
    reason: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<Shown>, usize, Option<String>)> {
    let letters = letters(&config.kafka.brokers, topic)
        .await?
        .with_context(|| format!("there is no topic {topic}"))?;
    let chosen: Vec<Letter> = letters.into_iter().filter(|l| l.matches(reason)).collect();
    let (replayed, unrecorded) = match replay_record(config, topic).await {
        Ok(replayed) => (replayed, None),
        Err(error) => (Replayed::default(), Some(error)),
    };
    let total = chosen.len();
    let shown = chosen
        .into_iter()
        .take(limit)
        .map(|letter| Shown {
            replayed_at: replayed.at(&letter),
            letter,
        })
        .collect();
    Ok((shown, total, unrecorded))
}
