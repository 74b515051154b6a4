//! The user pipeline: fetch users from randomuser.me (or the built-in generator) into `users_info`, enrich
//! them in two stages, and write them into PostgreSQL `random_users`.
//!
//! - [`record`]: the record contract (design.md section 2), from a randomuser.me result to a row. Pure.
//! - [`fetch`]: one fetch run: the source -> `users_info`.
//! - [`stages`]: the `timestamp` and `tags` enrichment stages.
//! - [`sink`]: enriched users -> `random_users`, batched and idempotent.
//! - [`topics`]: the topics the pipeline needs, and creating them.
//! - [`dlq`]: the dead-letter tools: list, show, and replay once the cause is fixed.
//!
//! May use the shared plumbing (config, kafka, db, retry, metrics); never `scheduler` or `pg`. A fetch run
//! returns its report; whoever runs it (the scheduler, the command line) decides what it means.

pub mod dlq;
pub mod fetch;
pub mod record;
pub mod sink;
pub mod stages;
pub mod topics;
