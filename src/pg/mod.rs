//! PostgreSQL operations: the WAL-archiving settings kept in force ([`conf`]), verified base backups and
//! their retention ([`backup`]), the WAL archive's expiry and gap check ([`archive`]), the restore drill
//! that proves a backup and the archive restore ([`drill`]), point-in-time recovery ([`restore`]), and the
//! runner of the PostgreSQL programs that backups and the drill share ([`program`]).
//!
//! May use the shared plumbing (config, db, retry, metrics); never `scheduler` or `pipeline`. Each
//! operation returns a typed report; whoever runs it (the scheduler, the command line) decides what a
//! failure is.

pub mod archive;
pub mod backup;
pub mod conf;
pub mod drill;
pub mod program;
pub mod restore;
