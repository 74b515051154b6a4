//! One fetch run: get a page of users from the source, map each to a `users_info` value, publish them
//! keyed by `id` with the idempotent producer, and wait until every one is acknowledged.

pub mod generator;
pub mod source;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::kafka::{self, Outbound, Producer};
use crate::pipeline::record;

/// The source's page size limits: randomuser.me silently turns any other value into 1.
pub const MAX_RESULTS: usize = 5000;

/// What a fetch run did; it goes into the run's log and journal.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The run's id (already the journal record's own).
    #[serde(skip)]
    pub run_id: Uuid,
    pub requested: usize,
    pub received: usize,
    pub published: usize,
    pub skipped: usize,
}

/// Fetches `count` users from the configured source and publishes them to the users topic with `producer`.
pub async fn run(
    config: &Config,
    producer: &Producer,
    count: usize,
    run_id: Uuid,
) -> anyhow::Result<FetchReport> {
    let topics = &config.topics;
    if !(1..=MAX_RESULTS).contains(&count) {
        bail!("results must be between 1 and {MAX_RESULTS}, not {count}");
    }
    let results = fetch_results(config, count).await?;
    let mut records = Vec::with_capacity(results.len());
    let mut skipped = 0;
    for (index, result) in results.iter().enumerate() {
        let id = Uuid::new_v4();
        match record::user_from_randomuser(result, id, Some(run_id)) {
            Ok(user) => records.push(Outbound {
                topic: topics.users.as_str().into(),
                key: Some(id.to_string().into_bytes()),
                payload: serde_json::to_vec(&Value::Object(user))
                    .context("cannot encode a user")?,
                headers: Vec::new(),
            }),
            Err(error) => {
                skipped += 1;
                warn!(message = "skipping a result", %run_id, index, %error);
            }
        }
    }
    publish(config, producer, &records).await?;
    let report = FetchReport {
        run_id,
        requested: count,
        received: results.len(),
        published: records.len(),
        skipped,
    };
    info!(message = "fetch run done", %run_id, requested = count, received = report.received, published = report.published, skipped);
    Ok(report)
}

/// The raw results of one page from the configured source.
async fn fetch_results(config: &Config, count: usize) -> anyhow::Result<Vec<Value>> {
    if config.fetch.source == "generator" {
        let mut page = generator::Generator::new(config.fetch.seed).page(count);
        return Ok(match page["results"].take() {
            Value::Array(results) => results,
            _ => Vec::new(),
        });
    }
    source::HttpSource::new(&config.fetch.source, &config.fetch)?
        .page(count)
        .await
}

/// Publishes `records` and waits for every acknowledgement, up to `fetch.publish_timeout`.
pub async fn publish(
    config: &Config,
    producer: &Producer,
    records: &[Outbound],
) -> anyhow::Result<()> {
    let deadline = CancellationToken::new();
    let timer = {
        let deadline = deadline.clone();
        let timeout = config.fetch.publish_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            deadline.cancel();
        })
    };
    let delivered = kafka::deliver_all(producer, records, &deadline).await;
    timer.abort();
    if delivered.is_err() {
        bail!(
            "kafka at {} did not acknowledge all {} users within {}",
            config.kafka.brokers,
            records.len(),
            humantime::format_duration(config.fetch.publish_timeout)
        );
    }
    Ok(())
}
