//! userpipe: an event-driven user-data pipeline on Apache Kafka and PostgreSQL, and the operations around it.
//!
//! # Layout
//!
//! Three parts over shared plumbing (ARCHITECTURE.md has the map and the layering rule):
//!
//! - [`pipeline`]: fetch users into `users_info`, the `timestamp` and `tags` stages, the PostgreSQL sink.
//! - [`scheduler`]: schedule files (hot reloaded), firings, runs with overlap control, timeouts and
//!   retries, the cross-replica guards, the journal of every run, and the job dispatch.
//! - [`pg`]: PostgreSQL operations: WAL-archiving settings kept in force, verified base backups with
//!   retention, the restore drill.
//!
//! The shared plumbing, used by all three:
//!
//! - [`config`]: `userpipe.toml` and environment overrides, parsed once into checked types.
//! - [`kafka`]: client settings, topics, batched at-least-once consumption, delivery, dead letters.
//! - [`db`]: PostgreSQL connections and pools, migrations, advisory locks.
//! - [`retry`]: the backoff and the retry loop every component waits out failures with.
//! - [`metrics`]: the Prometheus metrics every component feeds.
//!
//! And on top, what wires the parts together:
//!
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`, `/api/jobs`.
//! - [`app`]: `userpipe run`: starts the roles and stops them on one shutdown signal.
//! - [`bench`]: `userpipe bench`: end-to-end throughput and latency against the running stack.
//! - [`cli`]: the command line; `src/main.rs` only calls [`cli::main`].

use std::time::Duration;

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod pg;
pub mod pipeline;
pub mod retry;
pub mod scheduler;

/// After a shutdown signal, how long in-flight batches may still complete before they are abandoned.
/// Together with the final commit this keeps a stop well inside 10 seconds.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
