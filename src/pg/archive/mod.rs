//! The WAL archive as userpipe sees it (`backup.wal_archive`): its file names ([`names`]), expiring what
//! no kept backup needs ([`expire`]), and checking it has no gap ([`gaps`]). The choices are pure and
//! tested beside them; the rest reads and removes files.

pub mod expire;
pub mod gaps;
pub mod names;

pub use expire::{Expiry, KeptBackup, expire};
pub use gaps::{Coverage, check};
pub use names::{Lsn, SegmentSize, WalFile, is_segment};
