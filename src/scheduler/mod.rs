//! The in-process scheduler: schedule files that operators edit (hot reloaded), firings timed by
//! tokio-cron-scheduler, runs with overlap control, timeouts and retries, the guards that make a firing run
//! once across replicas, and the journal of every run.
//!
//! - [`schedule`], [`cron`]: a schedule file, checked; its fire times. Pure.
//! - [`files`]: the schedule folder.
//! - [`firing`]: the scheduler role of `userpipe run`: hot reload and the firing loop.
//! - [`runner`]: one run: guards, jitter, attempts with a timeout and retries, journal records.
//! - [`jobs`]: the job kinds and their params; the one place that maps a kind to the code that runs it.
//! - [`guards`]: the cross-replica guards in PostgreSQL (firing claims, schedule locks).
//! - [`journal`]: run records in the log and in `job_runs`; the writer of both tables.
//! - [`owners`]: which process owns a run, and when a run is provably abandoned.
//! - [`capture`], [`runlog`]: each run's own log: the `tracing` layer that keeps it, `job_run_logs`.
//! - [`history`]: retention of the run history (the built-in `prune-history` schedule).
//! - [`notify`]: webhook messages about failed and recovered runs.
//! - [`freshness`]: per-schedule metrics for alerting (last success, last run, next firing, ...).
//! - [`timeline`]: the schedules and runs the status page's timeline shows.
//!
//! The scheduler runs jobs of `pipeline` and `pg`; they never call back into it. It owns what a job's
//! failure is: jobs return typed reports, [`jobs`] decides.

pub mod capture;
pub mod cron;
pub mod files;
pub mod firing;
pub mod freshness;
pub mod guards;
pub mod history;
pub mod jobs;
pub mod journal;
pub mod notify;
pub mod owners;
pub mod runlog;
pub mod runner;
pub mod schedule;
pub mod timeline;

pub use capture::CaptureLayer;
pub use files::{Loaded, find, load_dir};
pub use firing::{run, serve, serve_with};
pub use runner::{Runner, Service};
pub use schedule::{Schedule, ScheduleError};
