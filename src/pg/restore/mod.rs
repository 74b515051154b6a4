//! Point-in-time recovery (`userpipe backup restore`): [`target`] chooses the backup a target needs and
//! writes the settings that reach it (pure); [`run`] copies the backup into an empty folder ready to start,
//! and with `--verify` recovers a throwaway copy as the drill does.

pub mod run;
pub mod target;

pub use run::{RestoreReport, restore};
pub use target::Target;
