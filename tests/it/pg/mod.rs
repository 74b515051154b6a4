//! PostgreSQL operations on private throwaway clusters: the archive script, `pgconf` check and apply, the
//! pgconf-enforce job, verified base backups and retention, failed backups, the restore drill, and what
//! their programs printed in the runs' logs.

mod archive_script;
mod backup;
mod conf;
mod drill;
pub mod helpers;
mod logs;
