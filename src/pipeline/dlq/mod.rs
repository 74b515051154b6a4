//! The dead-letter tools: what was set aside, why, and sending it back once the cause is fixed.
//!
//! - [`letter`]: a dead letter read from its headers; reasons, the `--reason` filter, summaries. Pure.
//! - [`inspect`]: reading a dead-letter topic whole; `dlq list` and `dlq show`.
//! - [`record`]: the replay record (`dlq_replays`) and the replay lock, in PostgreSQL.
//! - [`replay`]: `dlq replay`: letters back to their origin topic, each recorded once acknowledged.

pub mod inspect;
pub mod letter;
pub mod record;
pub mod replay;

pub use inspect::{Shown, list, show};
pub use letter::{EXCERPT_BYTES, Group, Letter, Position, TopicSummary, excerpt};
pub use replay::{ReplayReport, replay};
