//! Rows in PostgreSQL's binary `COPY` format (the "Binary Format" section of the `COPY` page): a
//! signature, then each row as its field count and each field as its length and its bytes, then a
//! trailer. [`COLUMNS`] says which columns and in which order; `ingested_at` is left to its default
//! (`clock_timestamp()`), as in the sink's insert. Pure.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::contract::UserRow;

/// The columns of `random_users` a row fills, in the order [`CopyRows::push`] writes them.
pub const COLUMNS: &str = "id, first_name, last_name, gender, address, post_code, email, username, \
    dob, registered_date, phone, picture, majors, hobbies, enriched_at, fetch_run_id";

/// How many fields [`COLUMNS`] names.
const FIELDS: i16 = 16;

/// The signature, flags (no OIDs) and header extension length (none) that open the binary format.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// PostgreSQL's epoch, 2000-01-01 00:00:00 UTC, in microseconds after the Unix epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `COPY ... FROM STDIN (FORMAT binary)` stream of rows being written. Each row's bytes can also be
/// taken alone ([`CopyRows::row`]), to send it in a stream of its own.
#[derive(Debug, Clone)]
pub struct CopyRows {
    bytes: Vec<u8>,
    /// Where each row starts in `bytes`; the header comes before the first.
    starts: Vec<usize>,
}

impl Default for CopyRows {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl CopyRows {
    /// An empty stream with room for about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        let mut bytes = Vec::with_capacity(HEADER.len() + rows * 400 + 2);
        bytes.extend_from_slice(HEADER);
        Self {
            bytes,
            starts: Vec::with_capacity(rows),
        }
    }

    /// Appends one row.
    pub fn push<S: AsRef<str>>(&mut self, row: &UserRow<S>) {
        self.starts.push(self.bytes.len());
        let out = &mut self.bytes;
        out.extend_from_slice(&FIELDS.to_be_bytes());
        uuid(out, row.id);
        for text in [
            &row.first_name,
            &row.last_name,
            &row.gender,
            &row.address,
            &row.post_code,
            &row.email,
            &row.username,
        ] {
            field(out, text.as_ref().as_bytes());
        }
        timestamptz(out, row.dob);
        timestamptz(out, row.registered_date);
        for text in [&row.phone, &row.picture, &row.majors, &row.hobbies] {
            field(out, text.as_ref().as_bytes());
        }
        timestamptz(out, row.enriched_at);
        match row.fetch_run_id {
            Some(run) => uuid(out, run),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// How many rows were pushed.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The whole stream: header, every row, trailer.
    pub fn finished(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.bytes.len() + 2);
        all.extend_from_slice(&self.bytes);
        all.extend_from_slice(&(-1i16).to_be_bytes());
        all
    }

    /// A stream of row `at` alone.
    pub fn row(&self, at: usize) -> Vec<u8> {
        let end = self.starts.get(at + 1).copied().unwrap_or(self.bytes.len());
        let mut one = Vec::with_capacity(HEADER.len() + end - self.starts[at] + 2);
        one.extend_from_slice(HEADER);
        one.extend_from_slice(&self.bytes[self.starts[at]..end]);
        one.extend_from_slice(&(-1i16).to_be_bytes());
        one
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    // A field longer than 2 GB cannot be in a payload within `stages.max_message_bytes`.
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn uuid(out: &mut Vec<u8>, id: Uuid) {
    field(out, id.as_bytes());
}

/// A `timestamptz` is microseconds after PostgreSQL's epoch. A time PostgreSQL cannot hold is refused
/// by the server as a data error, as the text form would be.
fn timestamptz(out: &mut Vec<u8>, at: DateTime<Utc>) {
    let micros = at.timestamp_micros().saturating_sub(PG_EPOCH_MICROS);
    field(out, &micros.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> UserRow {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        UserRow {
            id: Uuid::from_u128(1),
            first_name: "Ava".into(),
            last_name: "Smith".into(),
            gender: "female".into(),
            address: "1 Main St".into(),
            post_code: "LS1".into(),
            email: "a@x".into(),
            username: "ava".into(),
            dob: at("2000-01-01T00:00:01Z"),
            registered_date: at("1999-12-31T23:59:59.5Z"),
            phone: "0".into(),
            picture: "p".into(),
            majors: "Physics".into(),
            hobbies: "Yoga".into(),
            enriched_at: at("2000-01-01T00:00:00Z"),
            fetch_run_id: None,
        }
    }

    #[test]
    fn writes_the_binary_format() {
        let mut rows = CopyRows::default();
        rows.push(&row());
        let bytes = rows.finished();
        assert!(bytes.starts_with(b"PGCOPY\n\xff\r\n\0"));
        assert_eq!(&bytes[HEADER.len()..HEADER.len() + 2], &16i16.to_be_bytes());
        // The id: length 16, then its bytes.
        let id = &bytes[HEADER.len() + 2..HEADER.len() + 22];
        assert_eq!(&id[..4], &16i32.to_be_bytes());
        assert_eq!(&id[4..], Uuid::from_u128(1).as_bytes());
        // The first name: length 3, "Ava".
        assert_eq!(
            &bytes[HEADER.len() + 22..HEADER.len() + 29],
            b"\0\0\0\x03Ava"
        );
        // The last field is a NULL fetch_run_id, then the trailer.
        assert!(bytes.ends_with(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        assert_eq!(rows.row(0), bytes, "one row alone is the same stream");
    }

    #[test]
    fn timestamps_count_microseconds_from_2000() {
        let mut out = Vec::new();
        timestamptz(&mut out, row().dob);
        assert_eq!(out[4..], 1_000_000i64.to_be_bytes());
        out.clear();
        timestamptz(&mut out, row().registered_date);
        assert_eq!(out[4..], (-500_000i64).to_be_bytes());
    }

    #[test]
    fn rows_alone_and_together() {
        let mut rows = CopyRows::with_capacity(2);
        let mut second = row();
        second.fetch_run_id = Some(Uuid::from_u128(2));
        rows.push(&row());
        rows.push(&second);
        assert_eq!(rows.len(), 2);
        let all = rows.finished();
        let (first, last) = (rows.row(0), rows.row(1));
        let body = |s: &[u8]| s[HEADER.len()..s.len() - 2].to_vec();
        assert_eq!([body(&first), body(&last)].concat(), body(&all));
        assert!(last[..last.len() - 2].ends_with(Uuid::from_u128(2).as_bytes()));
    }
}
