//! The user record as it travels the topics: built from a randomuser.me result, enriched by the two
//! stages, and checked before it becomes a row. Pure code, no I/O; the contract is design.md section 2.
//!
//! [`slow`] decides every payload and names every fault; [`fast`] only ever says yes to a payload it can
//! plainly accept, and leaves the rest to the slow path. Both read JSON as [`raw`] says, and write only
//! the fields a stage owns into the original bytes: every other byte passes through as it came.

pub mod contract;
pub mod copy;
pub mod fast;
pub mod raw;
pub mod slow;

#[cfg(test)]
mod agree;

use std::borrow::Cow;

pub use contract::*;
pub use slow::{Record, check_user, row_from};

/// A stage's view of a payload: the user's id and the payload with the stage's fields set; the fast path
/// when it plainly passes, else the slow path and its error.
pub fn enrich_payload(
    payload: Option<&[u8]>,
    limit: usize,
    enrichment: Enrichment,
) -> Result<(uuid::Uuid, Vec<u8>), RecordError> {
    let bytes = bytes_within(payload, limit)?;
    if let Some(done) = fast::enrich(bytes, enrichment) {
        return Ok(done);
    }
    slow::enrich(bytes, limit, enrichment)
}

/// The sink's view of a payload: the fast path when it plainly passes (its texts borrowed from the
/// payload), else the slow path and its error.
pub fn row_from_payload(
    payload: Option<&[u8]>,
    limit: usize,
) -> Result<UserRow<Cow<'_, str>>, RecordError> {
    let bytes = bytes_within(payload, limit)?;
    if let Some(row) = fast::row(bytes) {
        return Ok(row.map(|text| Cow::Borrowed(*text)));
    }
    let row = row_from(&Record::parse(Some(bytes), limit)?)?;
    Ok(row.map(|text| Cow::Owned(text.clone())))
}
