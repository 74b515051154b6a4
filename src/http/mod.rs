//! The HTTP endpoints of `userpipe run`: the status page `/` (jobs, pipeline, PostgreSQL, readiness),
//! `/healthz` (alive), `/readyz` (Kafka and PostgreSQL reachable and every role running), `/metrics`
//! (Prometheus), and JSON under `/api/` (recent job runs, one run with its attempts, a run's log, and the
//! status page's data).
//!
//! [`server`] has the routes; one file per endpoint family; [`state`] is what the handlers share;
//! [`samples`] keeps the pipeline's last hour in memory; [`page`] is the page itself, built into the binary
//! from `page/`.

pub mod actions;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod page;
pub mod pipeline;
pub mod postgres;
pub mod samples;
pub mod server;
pub mod state;
pub mod timeline;

pub use health::Readiness;
pub use server::{Limits, serve};
pub use state::{HttpState, RoleState, Roles};
