//! The restore drill: a base backup (the newest verified one, or a chosen one) copied into a scratch
//! folder and recovered from the WAL archive by a throwaway PostgreSQL that runs as a non-root user on a
//! private socket (no TCP); then asked how many `random_users` it has.
//!
//! - [`run`]: the drill and its report, and [`recover`], the throwaway recovery it shares with
//!   `backup restore --verify`. [`scratch`]: the scratch folder and the throwaway server.
//! - [`recovery`]: the recovery configuration, the copy, and judging where replay ended.

pub mod recovery;
pub mod run;
pub mod scratch;

pub use run::{DrillReport, Recovered, Source, recover, run, sweep_leftovers};
pub use scratch::cleanups_finished;
