//! The HTTP endpoints of `userpipe run`: `/healthz` (alive), `/readyz` (Kafka and PostgreSQL reachable and
//! every role running), `/metrics` (Prometheus), `/api/jobs` (recent job runs as JSON, one run with its
//! attempts, a run's log).
//!
//! [`server`] has the routes; one file per endpoint family; [`state`] is what the handlers share.

pub mod health;
pub mod jobs;
pub mod metrics;
pub mod server;
pub mod state;

pub use health::Readiness;
pub use server::{Limits, serve};
pub use state::{HttpState, RoleState, Roles};
