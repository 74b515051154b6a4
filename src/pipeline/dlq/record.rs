//! The replay record in PostgreSQL (`dlq_replays`): which dead letters were sent back, so a second replay
//! skips them; and the lock that lets one replay of a topic run at a time.

use std::collections::HashMap;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::letter::Letter;
use crate::db::{self, AdvisoryLock};

/// SQLSTATE of a table that does not exist.
const UNDEFINED_TABLE: &str = "42P01";

/// One row of `dlq_replays`: a letter that was replayed.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Replay {
    partition: i32,
    offset: i64,
    /// The letter's timestamp.
    letter_time: Option<DateTime<Utc>>,
    replayed_at: DateTime<Utc>,
}

/// The letters of one dead-letter topic that were replayed, by partition and offset.
#[derive(Debug, Clone, Default)]
pub struct Replayed(HashMap<(i32, i64), Replay>);

impl Replayed {
    /// When `letter` was replayed, if it was. A record of another letter at the same offset (the topic
    /// was deleted and made again) does not count.
    pub fn at(&self, letter: &Letter) -> Option<DateTime<Utc>> {
        let replay = self.0.get(&(letter.at.partition, letter.at.offset))?;
        (replay.letter_time == letter.time).then_some(replay.replayed_at)
    }
}

/// A session to record replays on, with the schema in place. Reading needs no migration:
/// [`replayed`] reads a database never migrated as one where nothing was replayed.
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let mut session = db::connect_one(url).await?;
    db::MIGRATOR
        .run(&mut session)
        .await
        .context("cannot apply the database migrations")?;
    Ok(session)
}

/// Takes the replay lock of `topic` on `session` (released when the session closes); fails when another
/// replay of it runs.
pub async fn lock(session: &mut PgConnection, topic: &str) -> anyhow::Result<()> {
    let taken = AdvisoryLock::DlqReplay(topic)
        .try_take(session, true)
        .await
        .context("cannot take the replay lock")?;
    if !taken {
        bail!("another `dlq replay` of {topic} is running; try again when it is done");
    }
    Ok(())
}

/// The replayed letters of dead-letter topic `topic` (none where `dlq_replays` was never made).
pub async fn replayed(session: &mut PgConnection, topic: &str) -> anyhow::Result<Replayed> {
    let read: Result<Vec<Replay>, sqlx::Error> = sqlx::query_as(
        r#"SELECT partition, "offset", letter_time, replayed_at FROM dlq_replays WHERE topic = $1"#,
    )
    .bind(topic)
    .fetch_all(session)
    .await;
    let rows = match read {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_TABLE) => Vec::new(),
        read => read.with_context(|| format!("cannot read the replays of {topic}"))?,
    };
    Ok(Replayed(
        rows.into_iter()
            .map(|row| ((row.partition, row.offset), row))
            .collect(),
    ))
}

/// Records `letters` as replayed now (after their messages were acknowledged).
pub async fn record(session: &mut PgConnection, letters: &[&Letter]) -> anyhow::Result<()> {
    let Some(first) = letters.first() else {
        return Ok(());
    };
    let partitions: Vec<i32> = letters.iter().map(|l| l.at.partition).collect();
    let offsets: Vec<i64> = letters.iter().map(|l| l.at.offset).collect();
    let times: Vec<Option<DateTime<Utc>>> = letters.iter().map(|l| l.time).collect();
    let origins: Vec<&str> = letters
        .iter()
        .map(|l| l.origin.as_ref().map_or("", |o| o.topic.as_str()))
        .collect();
    sqlx::query(
        r#"INSERT INTO dlq_replays (topic, partition, "offset", letter_time, origin_topic, replayed_at)
           SELECT $1, u.* , now() FROM UNNEST($2::integer[], $3::bigint[], $4::timestamptz[], $5::text[]) AS u
           ON CONFLICT (topic, partition, "offset") DO UPDATE
             SET letter_time = excluded.letter_time, origin_topic = excluded.origin_topic,
                 replayed_at = excluded.replayed_at"#,
    )
    .bind(&first.at.topic)
    .bind(partitions)
    .bind(offsets)
    .bind(times)
    .bind(origins)
    .execute(session)
    .await
    .with_context(|| format!("cannot record the replays of {}", first.at.topic))?;
    Ok(())
}
