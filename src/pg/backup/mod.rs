//! Base backups: [`run`] takes one (`pg_basebackup` into `<dir>/<id>.partial`, checked with
//! `pg_verifybackup`, then renamed in one step to `<dir>/<id>` holding its `backup.json`); [`catalog`]
//! lists and prunes them (expiring the archived WAL no kept backup needs); [`verify`] checks one again;
//! [`retention`] chooses what goes; [`compress`] packs a verified backup into one `base.tar.zst`
//! (`backup.compress`) and unpacks it for the drill, `backup verify` and `backup restore`.
//!
//! A folder without the `.partial` suffix is always a complete, verified-when-made backup with its
//! metadata: the rename is the commit. A failed or cancelled run removes its partial folder (and kills
//! pg_basebackup's whole process group: its WAL streamer is a forked child that outlives its parent).

pub mod catalog;
pub mod compress;
pub mod retention;
pub mod run;
pub mod verify;

pub use catalog::Compressed;
pub use catalog::{
    Listed, METADATA_FILE, Metadata, PARTIAL_SUFFIX, Pruned, Verification, check_archive,
    is_backup_id, list, prune, read_metadata, scratch_parent,
};
pub use compress::{ARCHIVE_FILE, is_compressed, major_version, unpack};
pub use run::{BackupReport, run};
pub use verify::verify;
