//! `userpipe run`: starts the chosen roles (the two stages, the sink, the scheduler) and stops them on one
//! signal.

use std::str::FromStr;

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{Config, TopicsConfig, dead_letter_topic};
use crate::kafka::{self, DEAD_LETTER_MAX_BYTES, TopicSpec};
use crate::stages::Stage;
use crate::{db, sink};

/// A long-running part of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Timestamp,
    Tags,
    Sink,
    Scheduler,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Timestamp, Role::Tags, Role::Sink, Role::Scheduler];
    /// The pipeline without the scheduler.
    pub const PIPELINE: [Role; 3] = [Role::Timestamp, Role::Tags, Role::Sink];

    pub fn name(self) -> &'static str {
        match self {
            Role::Timestamp => "timestamp",
            Role::Tags => "tags",
            Role::Sink => "sink",
            Role::Scheduler => "scheduler",
        }
    }

    fn needs_database(self) -> bool {
        matches!(self, Role::Sink | Role::Scheduler)
    }
}

impl FromStr for Role {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "timestamp" => Ok(Role::Timestamp),
            "tags" => Ok(Role::Tags),
            "sink" => Ok(Role::Sink),
            "scheduler" => Ok(Role::Scheduler),
            other => {
                bail!("unknown role {other:?}: the roles are timestamp, tags, sink and scheduler")
            }
        }
    }
}

/// Every topic the pipeline uses, with its dead-letter topics.
pub fn topic_specs(config: &Config, topics: &TopicsConfig) -> Vec<TopicSpec> {
    let spec = |name: &str, max_message_bytes| TopicSpec {
        name: name.to_owned(),
        partitions: config.kafka.partitions,
        replication: config.kafka.replication_factor,
        max_message_bytes,
    };
    let mut specs = Vec::new();
    for name in [&topics.users, &topics.timestamped, &topics.enriched] {
        specs.push(spec(name, None));
        specs.push(spec(&dead_letter_topic(name), Some(DEAD_LETTER_MAX_BYTES)));
    }
    specs
}

/// Creates the topics, then runs `roles` until `shutdown`. The database pool connects lazily: roles that
/// need it wait for it (and for the schema), the others run while PostgreSQL is down.
pub async fn run(
    config: &Config,
    topics: &TopicsConfig,
    roles: &[Role],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    kafka::ensure_topics(&config.kafka.brokers, &topic_specs(config, topics)).await?;
    let pool = if roles.iter().any(|r| r.needs_database()) {
        Some(db::lazy_pool(
            config.database.url.expose(),
            config.database.max_connections,
        )?)
    } else {
        None
    };
    run_roles(config, topics, roles, pool, shutdown).await
}

/// Runs `roles` until `shutdown`; if one fails, the others are stopped too and the error returned.
pub async fn run_roles(
    config: &Config,
    topics: &TopicsConfig,
    roles: &[Role],
    pool: Option<PgPool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for &role in roles {
        let (config, topics, shutdown) = (config.clone(), topics.clone(), shutdown.clone());
        let pool = pool.clone();
        tasks.spawn(async move {
            let result = match role {
                Role::Timestamp => {
                    crate::stages::run(Stage::Timestamp, &config, &topics, shutdown).await
                }
                Role::Tags => crate::stages::run(Stage::Tags, &config, &topics, shutdown).await,
                Role::Sink => {
                    let pool = pool.context("the sink needs a database pool")?;
                    sink::run(&config, &topics, pool, shutdown).await
                }
                Role::Scheduler => crate::scheduler::serve(&config, pool, shutdown).await,
            };
            result.with_context(|| format!("role {} failed", role.name()))
        });
        info!(message = "role started", role = role.name());
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("a role panicked").and_then(|r| r);
        if let Err(err) = result {
            error!(
                message = "role stopped with an error",
                error = format!("{err:#}")
            );
            shutdown.cancel();
            first_error.get_or_insert(err);
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
