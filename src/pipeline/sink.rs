//! The PostgreSQL sink: enriched users -> `random_users`, in batches, one transaction each, with an
//! idempotent upsert on `id`; offsets are stored only after the transaction commits.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::Timestamp;
use rdkafka::message::{BorrowedMessage, OwnedHeaders, OwnedMessage};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::config::{Config, TopicsConfig, dead_letter_topic};
use crate::db;
use crate::kafka::{self, BatchHandler, BatchSettings, Outbound, Producer};
use crate::metrics::{METRICS, StageCounters};
use crate::pipeline::record::{self, UserRow};
use crate::retry::{Abandoned, Attempt, Backoff, until_done};

/// The stage name on the sink's dead letters.
const STAGE: &str = "sink";

/// Runs the sink until `shutdown`, on a database whose schema is in place (`App` migrates first).
pub async fn run(
    config: &Config,
    topics: &TopicsConfig,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handler = Arc::new(SinkHandler {
        pool,
        producer: kafka::producer(&config.kafka)?,
        input: topics.enriched.clone(),
        dead_letters: dead_letter_topic(&topics.enriched).into(),
        max_message_bytes: config.stages.max_message_bytes,
        counters: METRICS.stage(STAGE),
    });
    let settings = BatchSettings {
        max: config.sink.batch_size,
        linger: config.sink.linger,
        grace: crate::SHUTDOWN_GRACE,
    };
    let group = config.kafka.group(STAGE);
    kafka::consume_batches(
        &config.kafka.brokers,
        &group,
        &topics.enriched,
        settings,
        handler,
        shutdown,
    )
    .await
}

struct SinkHandler {
    pool: PgPool,
    producer: Producer,
    input: String,
    dead_letters: Arc<str>,
    max_message_bytes: usize,
    counters: StageCounters,
}

/// A prepared batch: rows to write with the message each came from, and dead letters.
struct SinkWork {
    rows: RowBatch,
    origins: Origins,
    dead: Vec<Outbound>,
}

impl BatchHandler for SinkHandler {
    type Work = SinkWork;

    fn prepare(&self, batch: &[BorrowedMessage<'_>]) -> SinkWork {
        self.counters.consumed.inc_by(batch.len() as u64);
        let mut work = SinkWork {
            rows: RowBatch::with_capacity(batch.len()),
            origins: Origins::with_capacity(batch.len()),
            dead: Vec::new(),
        };
        for message in batch {
            let row = record::row_from_payload(message.payload(), self.max_message_bytes);
            match row {
                Ok(row) => {
                    work.rows.push(&row);
                    work.origins.push(message);
                }
                Err(error) => work
                    .dead
                    .push(self.dead_letter(message, &error.to_string())),
            }
        }
        work
    }

    async fn complete(
        &self,
        mut work: SinkWork,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let started = Instant::now();
        match self.write(work.rows.iter(), abandon).await? {
            Ok(inserted) => {
                debug!(message = "batch written", rows = work.rows.len(), inserted);
                self.counters.produced.inc_by(inserted);
            }
            Err(error) => {
                // Some row's data is refused by the database itself: write them one by one to find it.
                let error = db::refusal(&error);
                warn!(message = "batch refused, writing its rows one by one", %error);
                for (index, row) in work.rows.iter().enumerate() {
                    match self.write(std::iter::once(row), abandon).await? {
                        Ok(inserted) => {
                            self.counters.produced.inc_by(inserted);
                        }
                        Err(error) => work.dead.push(self.dead_letter(
                            &work.origins.message(index, &self.input),
                            &format!("database refused the row: {}", db::refusal(&error)),
                        )),
                    }
                }
            }
        }
        METRICS.sink_batch_rows.observe(work.rows.len() as f64);
        METRICS
            .sink_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        let retried = kafka::deliver_all(&self.producer, &work.dead, abandon).await?;
        self.counters.failed.inc_by(retried);
        self.counters.dead_lettered.inc_by(work.dead.len() as u64);
        Ok(())
    }
}

impl SinkHandler {
    fn dead_letter(&self, message: &impl Message, error: &str) -> Outbound {
        Outbound::dead_letter(message, &self.dead_letters, STAGE, error)
    }

    /// Writes `rows` in one transaction, retrying with backoff until it commits, until the database
    /// refuses the data itself (`Ok(Err(_))`: only then may rows be set aside), or until `abandon`. Every
    /// other failure (connection, server shutting down, a missing table or permission, a read-only
    /// standby, a query hanging past `QUERY_TIMEOUT`) is waited out: it passes once fixed, so skipping the
    /// rows would lose them.
    async fn write<'a>(
        &self,
        rows: impl Iterator<Item = UserRow<&'a str>> + Clone,
        abandon: &CancellationToken,
    ) -> Result<Result<u64, sqlx::Error>, Abandoned> {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        until_done("cannot write batch, retrying", backoff, abandon, || {
            let insert = tokio::time::timeout(QUERY_TIMEOUT, insert_rows(&self.pool, rows.clone()));
            async move {
                let error = match insert.await {
                    Ok(Ok(inserted)) => return Attempt::Done(Ok(inserted)),
                    Ok(Err(error)) if db::is_data_error(&error) => {
                        return Attempt::Done(Err(error));
                    }
                    Ok(Err(error)) => db::refusal(&error),
                    Err(_) => format!(
                        "no answer within {}",
                        humantime::format_duration(QUERY_TIMEOUT)
                    ),
                };
                self.counters.failed.inc();
                Attempt::Retry(error)
            }
        })
        .await
    }
}

/// Longest wait for one insert before it is given up and tried again.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Inserts rows in one statement (one transaction); a user already there is left as it is.
/// Returns how many rows were new.
pub async fn insert_rows<'a>(
    pool: &PgPool,
    rows: impl Iterator<Item = UserRow<&'a str>>,
) -> Result<u64, sqlx::Error> {
    let mut columns = Columns::default();
    for row in rows {
        columns.push(row);
    }
    let done = sqlx::query(
        "INSERT INTO random_users (id, first_name, last_name, gender, address, post_code, email, username, \
           dob, registered_date, phone, picture, majors, hobbies, enriched_at, fetch_run_id, ingested_at) \
         SELECT u.*, clock_timestamp() FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
           $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[], \
           $13::text[], $14::text[], $15::timestamptz[], $16::uuid[]) AS u \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(columns.id)
    .bind(columns.first_name)
    .bind(columns.last_name)
    .bind(columns.gender)
    .bind(columns.address)
    .bind(columns.post_code)
    .bind(columns.email)
    .bind(columns.username)
    .bind(columns.dob)
    .bind(columns.registered_date)
    .bind(columns.phone)
    .bind(columns.picture)
    .bind(columns.majors)
    .bind(columns.hobbies)
    .bind(columns.enriched_at)
    .bind(columns.fetch_run_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Rows turned into columns, one array parameter each.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<Uuid>,
    first_name: Vec<&'a str>,
    last_name: Vec<&'a str>,
    gender: Vec<&'a str>,
    address: Vec<&'a str>,
    post_code: Vec<&'a str>,
    email: Vec<&'a str>,
    username: Vec<&'a str>,
    dob: Vec<DateTime<Utc>>,
    registered_date: Vec<DateTime<Utc>>,
    phone: Vec<&'a str>,
    picture: Vec<&'a str>,
    majors: Vec<&'a str>,
    hobbies: Vec<&'a str>,
    enriched_at: Vec<DateTime<Utc>>,
    fetch_run_id: Vec<Option<Uuid>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, row: UserRow<&'a str>) {
        self.id.push(row.id);
        self.first_name.push(row.first_name);
        self.last_name.push(row.last_name);
        self.gender.push(row.gender);
        self.address.push(row.address);
        self.post_code.push(row.post_code);
        self.email.push(row.email);
        self.username.push(row.username);
        self.dob.push(row.dob);
        self.registered_date.push(row.registered_date);
        self.phone.push(row.phone);
        self.picture.push(row.picture);
        self.majors.push(row.majors);
        self.hobbies.push(row.hobbies);
        self.enriched_at.push(row.enriched_at);
        self.fetch_run_id.push(row.fetch_run_id);
    }
}

/// A batch's rows with their texts in one buffer: a row costs no allocation of its own.
struct RowBatch {
    text: String,
    rows: Vec<UserRow<Range<usize>>>,
}

impl RowBatch {
    fn with_capacity(rows: usize) -> Self {
        Self {
            text: String::with_capacity(rows * 256),
            rows: Vec::with_capacity(rows),
        }
    }

    fn push<S: AsRef<str>>(&mut self, row: &UserRow<S>) {
        let text = &mut self.text;
        let row = row.map(|value| {
            let start = text.len();
            text.push_str(value.as_ref());
            start..text.len()
        });
        self.rows.push(row);
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn iter(&self) -> impl Iterator<Item = UserRow<&str>> + Clone {
        self.rows
            .iter()
            .map(|row| row.map(|at| &self.text[at.clone()]))
    }
}

/// Where each row's message came from, kept to dead-letter a row the database refuses: its key and
/// payload in one buffer, its headers only when it has any.
struct Origins {
    bytes: Vec<u8>,
    messages: Vec<Origin>,
}

struct Origin {
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
    headers: Option<OwnedHeaders>,
}

impl Origins {
    fn with_capacity(messages: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(messages * 1024),
            messages: Vec::with_capacity(messages),
        }
    }

    fn push(&mut self, message: &BorrowedMessage<'_>) {
        let bytes = &mut self.bytes;
        let mut keep = |part: &[u8]| {
            let start = bytes.len();
            bytes.extend_from_slice(part);
            start..bytes.len()
        };
        let key = message.key().map(&mut keep);
        let payload = message.payload().map(&mut keep);
        self.messages.push(Origin {
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp(),
            key,
            payload,
            headers: message.headers().map(|headers| headers.detach()),
        });
    }

    /// Message `index` as it was consumed from `topic`.
    fn message(&self, index: usize, topic: &str) -> OwnedMessage {
        let origin = &self.messages[index];
        let part = |at: &Option<Range<usize>>| at.clone().map(|at| self.bytes[at].to_vec());
        OwnedMessage::new(
            part(&origin.payload),
            part(&origin.key),
            topic.to_owned(),
            origin.timestamp,
            origin.partition,
            origin.offset,
            origin.headers.clone(),
        )
    }
}
