//! userpipe: an event-driven user-data pipeline on Apache Kafka and PostgreSQL, and the operations around it.
//!
//! # Layout
//!
//! - [`config`]: `userpipe.toml` and environment overrides, parsed once into checked types.
//! - [`record`]: the user record's contract: randomuser.me result -> `users_info` value -> enriched -> row.
//!   Pure.
//! - [`kafka`]: client settings, topics, batched at-least-once consumption, delivery, dead letters; the
//!   only module that names librdkafka settings.
//! - [`fetch`]: one fetch run: randomuser.me (or the built-in generator) -> `users_info`.
//! - [`stages`]: the `timestamp` and `tags` enrichment stages.
//! - [`sink`]: enriched users -> PostgreSQL `random_users`, batched, idempotent.
//! - [`metrics`]: the Prometheus metrics every component feeds, rendered by `GET /metrics`.
//! - [`db`]: the PostgreSQL connection pool.
//! - [`scheduler`]: schedule files (hot reloaded), firings, runs with overlap control, timeouts, retries.
//! - [`journal`]: every job run's record, in the log and in PostgreSQL `job_runs`.
//! - [`pgconf`]: the WAL-archiving settings kept in force (ALTER SYSTEM), the archiver's health.
//! - [`backup`]: verified base backups (pg_basebackup, pg_verifybackup), retention, the restore drill.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`, `/api/jobs`.
//! - [`app`]: `userpipe run`: starts the roles and stops them on one shutdown signal.
//! - [`bench`]: `userpipe bench`: end-to-end throughput and latency against the running stack.
//! - [`table`]: plain-text tables for the command line.
//! - [`cli`]: the command line; `src/main.rs` only calls [`cli::main`].

use std::time::Duration;

pub mod app;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod fetch;
pub mod http;
pub mod journal;
pub mod kafka;
pub mod metrics;
pub mod pgconf;
pub mod record;
pub mod scheduler;
pub mod sink;
pub mod stages;
pub mod table;

/// After a shutdown signal, how long in-flight batches may still complete before they are abandoned.
/// Together with the final commit this keeps a stop well inside 10 seconds.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
