//! WAL-archiving settings kept in force: the desired file (`pgconf/archiving.conf`, postgresql.conf
//! syntax) compared with the running server, applied with ALTER SYSTEM and `pg_reload_conf()`, and the
//! archiver's health from `pg_stat_archiver`. Parsing, value normalisation, comparison, rendering and the
//! health judgement are pure and tested here; the rest talks to the server.
//!
//! - [`file`]: the desired file, parsed. [`value`]: values normalised. [`compare`]: desired next to live.
//!   [`render`]: what the commands print. [`archiver`]: the archiver's health. All pure but the reads.
//! - [`server`]: reading the server's settings and applying the desired ones.
//! - [`archive_check`]: a forced WAL switch followed until the segment is in the archive.
//! - [`enforce`]: the `pgconf-enforce` job's work and report.

pub mod archive_check;
pub mod archiver;
pub mod compare;
pub mod enforce;
pub mod file;
pub mod render;
pub mod server;
pub mod value;

pub use archive_check::{ArchiveCheck, await_archived, check_archive};
pub use archiver::{ArchiverStats, archiver, archiving_problem};
pub use compare::{Comparison, Live, Outcome, State, compare};
pub use enforce::{EnforceReport, enforce};
pub use file::{Desired, DesiredFile, LineError, parse};
pub use render::{render_applied, render_check, render_diff};
pub use server::{Applied, alter_system_sql, apply, check, read_live};
