//! Base backups: [`run`] takes one (`pg_basebackup` into `<dir>/<id>.partial`, checked with
//! `pg_verifybackup`, then renamed in one step to `<dir>/<id>` holding its `backup.json`); [`catalog`]
//! lists, verifies again and prunes them (expiring the archived WAL no kept backup needs);
//! [`retention`] chooses what goes.
//!
//! A folder without the `.partial` suffix is always a complete, verified-when-made backup with its
//! metadata: the rename is the commit. A failed or cancelled run removes its partial folder (and kills
//! pg_basebackup's whole process group: its WAL streamer is a forked child that outlives its parent).

pub mod catalog;
pub mod retention;
pub mod run;

pub use catalog::{
    Listed, METADATA_FILE, Metadata, PARTIAL_SUFFIX, Pruned, Verification, check_archive,
    is_backup_id, list, prune, read_metadata, verify,
};
pub use run::{BackupReport, run};
