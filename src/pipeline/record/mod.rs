//! The user record as it travels the topics: built from a randomuser.me result, enriched by the two
//! stages, and checked before it becomes a row. Pure code, no I/O; the contract is design.md section 2.
//!
//! [`contract`] is the slow path that decides and names every fault; [`fast`] only ever says yes to a
//! payload it can plainly accept, and leaves the rest to the slow path.

pub mod contract;
pub mod fast;

pub use contract::*;
pub use fast::{FastUser, append_fields};

/// The sink's view of a payload: the fast path when it plainly passes, else the slow path and its error.
pub fn row_from_payload(payload: Option<&[u8]>, limit: usize) -> Result<UserRow, RecordError> {
    let bytes = bytes_within(payload, limit)?;
    if let Some(row) = FastUser::parse(bytes).and_then(|(user, id)| user.row(id)) {
        return Ok(row);
    }
    row_from(&parse_object(Some(bytes), limit)?)
}
