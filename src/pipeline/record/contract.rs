//! The record contract (design.md section 2): a randomuser.me result becomes a `users_info` value; what
//! each stage adds; the row the sink writes; and every way a record can fail, named. Pure.

use std::sync::LazyLock;

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A JSON object as `fetch` builds it, field order kept.
pub type Object = Map<String, Value>;

/// The majors stage 2 picks from (the seed's list, in the seed's order).
pub const MAJORS: [&str; 15] = [
    "Computer Science",
    "Electrical Engineering",
    "Mechanical Engineering",
    "Civil Engineering",
    "Biology",
    "Chemistry",
    "Physics",
    "Mathematics",
    "Psychology",
    "Business Administration",
    "Economics",
    "Marketing",
    "Finance",
    "English Literature",
    "History",
];

/// The hobbies stage 2 picks from (the seed's list, in the seed's order).
pub const HOBBIES: [&str; 15] = [
    "Cooking",
    "Gardening",
    "Painting",
    "Hiking",
    "Running",
    "Singing",
    "Dancing",
    "Photography",
    "Fishing",
    "Yoga",
    "Reading",
    "Writing",
    "Cycling",
    "Knitting",
    "Woodworking",
];

/// The `timestamp` format stage 1 writes, as the old consumer did.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Plain text fields of a `users_info` value.
pub(super) const TEXT_FIELDS: [&str; 8] = [
    "first_name",
    "last_name",
    "gender",
    "address",
    "email",
    "username",
    "phone",
    "picture",
];

/// Every field a stage or the sink reads or writes. A record with one of them twice is poison on every
/// path ([`RecordError::Duplicate`]); any other field passes through as written, duplicates included.
pub const CONTRACT_FIELDS: [&str; 16] = [
    "id",
    "first_name",
    "last_name",
    "gender",
    "address",
    "post_code",
    "email",
    "username",
    "dob",
    "registered_date",
    "phone",
    "picture",
    "timestamp",
    "random_majors",
    "random_hobbies",
    "fetch_run_id",
];

/// Why a record can never be processed. Every variant is poison: retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("message has no payload")]
    Empty,
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    #[error("payload is not json: {0}")]
    NotJson(String),
    #[error("payload is a json {0}, not an object")]
    NotObject(&'static str),
    #[error("missing field `{0}`")]
    Missing(String),
    #[error("duplicate field `{0}`")]
    Duplicate(&'static str),
    #[error("field `{field}` is {found}, expected {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

/// One row of `random_users`, checked and typed. `S` holds a text: owned, borrowed from the payload (the
/// fast path's), or where the text lies in a batch's buffer (the sink's).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow<S = String> {
    pub id: Uuid,
    pub first_name: S,
    pub last_name: S,
    pub gender: S,
    pub address: S,
    pub post_code: S,
    pub email: S,
    pub username: S,
    pub dob: DateTime<Utc>,
    pub registered_date: DateTime<Utc>,
    pub phone: S,
    pub picture: S,
    pub majors: S,
    pub hobbies: S,
    /// Stage 1's `timestamp`, read as UTC.
    pub enriched_at: DateTime<Utc>,
    /// The fetch run that published the user; absent in messages of the old scripts.
    pub fetch_run_id: Option<Uuid>,
}

impl<S> UserRow<S> {
    /// The same row with each text turned by `f`, in the table's column order.
    pub fn map<T>(&self, mut f: impl FnMut(&S) -> T) -> UserRow<T> {
        UserRow {
            id: self.id,
            first_name: f(&self.first_name),
            last_name: f(&self.last_name),
            gender: f(&self.gender),
            address: f(&self.address),
            post_code: f(&self.post_code),
            email: f(&self.email),
            username: f(&self.username),
            dob: self.dob,
            registered_date: self.registered_date,
            phone: f(&self.phone),
            picture: f(&self.picture),
            majors: f(&self.majors),
            hobbies: f(&self.hobbies),
            enriched_at: self.enriched_at,
            fetch_run_id: self.fetch_run_id,
        }
    }
}

/// Builds the `users_info` value from one randomuser.me result, with a fresh `id`.
pub fn user_from_randomuser(
    result: &Value,
    id: Uuid,
    fetch_run_id: Option<Uuid>,
) -> Result<Object, RecordError> {
    let text = |path: &str| -> Result<Value, RecordError> {
        let value = lookup(result, path)?;
        expect_str(path, value)?;
        Ok(value.clone())
    };
    let street_number = lookup(result, "location.street.number")?;
    let street_number = match street_number {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(wrong_type("location.street.number", "a number", other)),
    };
    let location = |field: &str| -> Result<String, RecordError> {
        let path = format!("location.{field}");
        let value = lookup(result, &path)?;
        Ok(expect_str(&path, value)?.to_owned())
    };
    let address = format!(
        "{street_number} {}, {}, {}, {}",
        location("street.name")?,
        location("city")?,
        location("state")?,
        location("country")?
    );
    let post_code = lookup(result, "location.postcode")?;
    expect_post_code("location.postcode", post_code)?;

    let mut user = Object::new();
    user.insert("id".into(), Value::String(id.to_string()));
    user.insert("first_name".into(), text("name.first")?);
    user.insert("last_name".into(), text("name.last")?);
    user.insert("gender".into(), text("gender")?);
    user.insert("address".into(), Value::String(address));
    user.insert("post_code".into(), post_code.clone());
    user.insert("email".into(), text("email")?);
    user.insert("username".into(), text("login.username")?);
    user.insert("dob".into(), text("dob.date")?);
    user.insert("registered_date".into(), text("registered.date")?);
    user.insert("phone".into(), text("phone")?);
    user.insert("picture".into(), text("picture.medium")?);
    if let Ok(Value::String(login_uuid)) = lookup(result, "login.uuid") {
        user.insert("login_uuid".into(), Value::String(login_uuid.clone()));
    }
    if let Some(run) = fetch_run_id {
        user.insert("fetch_run_id".into(), Value::String(run.to_string()));
    }
    Ok(user)
}

/// The payload's bytes, refusing an empty or oversized payload.
pub fn bytes_within(payload: Option<&[u8]>, limit: usize) -> Result<&[u8], RecordError> {
    let bytes = payload.ok_or(RecordError::Empty)?;
    if bytes.len() > limit {
        return Err(RecordError::Oversized {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Stage 1's `timestamp` text for `now`. Made once per batch: formatting is not free.
pub fn timestamp_text(now: DateTime<Utc>) -> String {
    now.format(TIMESTAMP_FORMAT).to_string()
}

/// The major and hobby of a user: uniform over the lists, and a function of the id alone, so a replay
/// gives the same tags.
pub fn tags_for(id: Uuid) -> (&'static str, &'static str) {
    let bits = id.as_u128();
    let major = (bits % MAJORS.len() as u128) as usize;
    let hobby = ((bits / MAJORS.len() as u128) % HOBBIES.len() as u128) as usize;
    (MAJORS[major], HOBBIES[hobby])
}

/// What a stage sets on a user record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrichment<'s> {
    /// Stage 1: `timestamp`, this text (the batch's [`timestamp_text`]), replacing one already there as
    /// the old consumer did.
    Timestamp(&'s str),
    /// Stage 2: `random_majors` and `random_hobbies`, from the user's id ([`tags_for`]).
    Tags,
}

impl<'s> Enrichment<'s> {
    /// The fields set on the user `id`, in the order they are appended when missing.
    pub fn fields(self, id: Uuid) -> Vec<(&'static str, &'s str)> {
        match self {
            Enrichment::Timestamp(stamp) => vec![("timestamp", stamp)],
            Enrichment::Tags => {
                let (major, hobby) = tags_for(id);
                vec![("random_majors", major), ("random_hobbies", hobby)]
            }
        }
    }
}

fn lookup<'a>(value: &'a Value, path: &str) -> Result<&'a Value, RecordError> {
    let mut at = value;
    for key in path.split('.') {
        at = match at.get(key) {
            Some(Value::Null) | None => return Err(RecordError::Missing(path.to_owned())),
            Some(next) => next,
        };
    }
    Ok(at)
}

pub(super) fn expect_str<'a>(name: &str, value: &'a Value) -> Result<&'a str, RecordError> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(name, "a string", value))
}

pub(super) fn expect_post_code(name: &str, value: &Value) -> Result<(), RecordError> {
    match value {
        Value::String(_) | Value::Number(_) => Ok(()),
        other => Err(wrong_type(name, "a string or a number", other)),
    }
}

pub(super) fn parse_uuid(name: &str, value: &Value) -> Result<Uuid, RecordError> {
    let text = expect_str(name, value)?;
    Uuid::parse_str(text).map_err(|error| RecordError::Invalid {
        field: name.to_owned(),
        reason: format!("{text:?} is not a uuid ({error})"),
    })
}

pub(super) fn parse_time(name: &str, value: &Value) -> Result<DateTime<Utc>, RecordError> {
    let text = expect_str(name, value)?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|error| RecordError::Invalid {
            field: name.to_owned(),
            reason: format!("{text:?} is not an iso 8601 time ({error})"),
        })
}

pub(super) fn parse_stage_time(name: &str, value: &Value) -> Result<DateTime<Utc>, RecordError> {
    let text = expect_str(name, value)?;
    parse_stage_text(text).map_err(|error| RecordError::Invalid {
        field: name.to_owned(),
        reason: format!("{text:?} is not a \"YYYY-MM-DD HH:MM:SS\" time ({error})"),
    })
}

/// Stage 1's `timestamp` text as a time, read as UTC. The format is read once, not once per record.
pub(super) fn parse_stage_text(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    static ITEMS: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
        StrftimeItems::new("%Y-%m-%d %H:%M:%S%.f")
            .parse_to_owned()
            .expect("a valid format")
    });
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text, ITEMS.iter())?;
    Ok(parsed.to_naive_datetime_with_offset(0)?.and_utc())
}

pub(super) fn wrong_type(name: &str, expected: &'static str, found: &Value) -> RecordError {
    RecordError::WrongType {
        field: name.to_owned(),
        expected,
        found: kind(found),
    }
}

pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn randomuser_result(postcode: Value) -> Value {
        json!({
            "gender": "female",
            "name": {"title": "Ms", "first": "Ava", "last": "Smith"},
            "location": {
                "street": {"number": 4171, "name": "Main Street"},
                "city": "Leeds", "state": "West Yorkshire", "country": "United Kingdom",
                "postcode": postcode
            },
            "email": "ava.smith@example.com",
            "login": {"uuid": "1f0e6c9e-3d36-4a0e-9c36-2d2c8f1b7a11", "username": "bluecat123"},
            "dob": {"date": "1993-07-20T09:44:18.674Z", "age": 31},
            "registered": {"date": "2015-03-01T12:00:00.000Z", "age": 9},
            "phone": "017684 12345",
            "picture": {"medium": "https://randomuser.me/api/portraits/med/women/1.jpg"},
            "nat": "GB"
        })
    }

    #[test]
    fn maps_a_randomuser_result_as_the_seed_did() {
        let id = Uuid::new_v4();
        let run = Uuid::new_v4();
        let user =
            user_from_randomuser(&randomuser_result(json!("LS1 4AB")), id, Some(run)).unwrap();
        let expected = json!({
            "id": id.to_string(),
            "first_name": "Ava",
            "last_name": "Smith",
            "gender": "female",
            "address": "4171 Main Street, Leeds, West Yorkshire, United Kingdom",
            "post_code": "LS1 4AB",
            "email": "ava.smith@example.com",
            "username": "bluecat123",
            "dob": "1993-07-20T09:44:18.674Z",
            "registered_date": "2015-03-01T12:00:00.000Z",
            "phone": "017684 12345",
            "picture": "https://randomuser.me/api/portraits/med/women/1.jpg",
            "login_uuid": "1f0e6c9e-3d36-4a0e-9c36-2d2c8f1b7a11",
            "fetch_run_id": run.to_string(),
        });
        assert_eq!(Value::Object(user), expected);
    }

    #[test]
    fn names_the_missing_or_mistyped_randomuser_field() {
        let check = |edit: fn(&mut Value), expected: RecordError| {
            let mut result = randomuser_result(json!("X"));
            edit(&mut result);
            assert_eq!(
                user_from_randomuser(&result, Uuid::new_v4(), None),
                Err(expected)
            );
        };
        check(
            |r| {
                r["login"].as_object_mut().unwrap().remove("username");
            },
            RecordError::Missing("login.username".into()),
        );
        check(
            |r| r["location"]["postcode"] = json!(null),
            RecordError::Missing("location.postcode".into()),
        );
        check(
            |r| r["email"] = json!(12),
            RecordError::WrongType {
                field: "email".into(),
                expected: "a string",
                found: "a number",
            },
        );
        check(
            |r| r["location"]["postcode"] = json!([1]),
            RecordError::WrongType {
                field: "location.postcode".into(),
                expected: "a string or a number",
                found: "an array",
            },
        );
    }

    #[test]
    fn tags_are_a_function_of_the_id_and_spread_evenly() {
        let id = Uuid::new_v4();
        assert_eq!(tags_for(id), tags_for(id));
        let mut majors = [0u32; 15];
        let mut hobbies = [0u32; 15];
        for _ in 0..30_000 {
            let (major, hobby) = tags_for(Uuid::new_v4());
            majors[MAJORS.iter().position(|m| *m == major).unwrap()] += 1;
            hobbies[HOBBIES.iter().position(|h| *h == hobby).unwrap()] += 1;
        }
        // 2,000 expected in each bucket; 1,700..2,300 is over six standard deviations wide.
        for count in majors.iter().chain(&hobbies) {
            assert!(
                (1_700..2_300).contains(count),
                "uneven spread: {majors:?} {hobbies:?}"
            );
        }
    }

    #[test]
    fn keeps_a_numeric_post_code_a_number() {
        let user =
            user_from_randomuser(&randomuser_result(json!(90210)), Uuid::new_v4(), None).unwrap();
        assert_eq!(user["post_code"], json!(90210));
    }

    #[test]
    fn timestamp_has_the_old_consumers_format() {
        let stamp = timestamp_text("2024-05-06T07:08:09.999Z".parse().unwrap());
        assert_eq!(stamp, "2024-05-06 07:08:09");
        assert_eq!(
            parse_stage_text(&stamp).unwrap(),
            "2024-05-06T07:08:09Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn each_stage_sets_its_own_fields() {
        let id = Uuid::new_v4();
        assert_eq!(
            Enrichment::Timestamp("2024-01-02 03:04:05").fields(id),
            [("timestamp", "2024-01-02 03:04:05")]
        );
        let (major, hobby) = tags_for(id);
        assert_eq!(
            Enrichment::Tags.fields(id),
            [("random_majors", major), ("random_hobbies", hobby)]
        );
        for field in TEXT_FIELDS {
            assert!(CONTRACT_FIELDS.contains(&field), "{field}");
        }
    }
}
