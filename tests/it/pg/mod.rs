//! PostgreSQL operations on private throwaway clusters: the archive script, `pgconf` check and apply, the
//! pgconf-enforce job, the archive check, verified base backups (plain and compressed) and retention, WAL
//! expiry and the gap check, failed backups, backups cut off part way, the restore drill, and what their
//! programs printed in the runs' logs.

mod archive_check;
mod archive_script;
mod backup;
mod compress;
mod conf;
mod drill;
mod expiry;
mod faults;
pub mod helpers;
mod interrupted;
mod lists;
mod logs;
mod restore;
mod stack;
