//! Kafka plumbing: client settings ([`client`]), topics ([`admin`]), batched at-least-once consumption
//! ([`consume`]), delivery with retries and dead letters ([`deliver`]), and reading a topic whole
//! ([`read`]).
//!
//! The consumption contract: a consumed offset is stored (and later auto-committed) only after the batch it
//! belongs to was completed by its [`BatchHandler`]; a batch that is abandoned stores nothing. Only
//! `client.rs` names librdkafka settings.

pub mod admin;
pub mod client;
pub mod consume;
pub mod deliver;
pub mod read;

pub use admin::{
    DEAD_LETTER_MAX_BYTES, TopicSpec, TopicsError, delete_topics, ensure_topics, stable_members,
};
pub use client::{LagContext, Probe, base_config, consumer, producer, reader};
pub use consume::{BatchHandler, BatchSettings, Offsets, consume_batches};
pub use deliver::{Acks, Outbound, Producer, deliver_all, header, header_text};
pub use read::read_to_end;
