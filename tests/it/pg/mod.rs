//! PostgreSQL operations on private throwaway clusters: the archive script, `pgconf` check and apply, the
//! pgconf-enforce job, verified base backups and retention, failed backups, and the restore drill.

mod archive_script;
mod backup;
mod conf;
mod drill;
mod helpers;
