//! The slow path over the record contract: a JSON tree, fields replaced in place, and an error that names
//! every fault; the row the sink writes. Pure.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A JSON object as carried on the topics. Field order is kept, unknown fields pass through untouched.
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
const TEXT_FIELDS: [&str; 8] = [
    "first_name",
    "last_name",
    "gender",
    "address",
    "email",
    "username",
    "phone",
    "picture",
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
    #[error("field `{field}` is {found}, expected {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

/// One row of `random_users`, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub gender: String,
    pub address: String,
    pub post_code: String,
    pub email: String,
    pub username: String,
    pub dob: DateTime<Utc>,
    pub registered_date: DateTime<Utc>,
    pub phone: String,
    pub picture: String,
    pub majors: String,
    pub hobbies: String,
    /// Stage 1's `timestamp`, read as UTC.
    pub enriched_at: DateTime<Utc>,
    /// The fetch run that published the user; absent in messages of the old scripts.
    pub fetch_run_id: Option<Uuid>,
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

/// Parses a message payload into a JSON object, refusing empty, oversized and non-object payloads.
pub fn parse_object(payload: Option<&[u8]>, limit: usize) -> Result<Object, RecordError> {
    let bytes = bytes_within(payload, limit)?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(RecordError::NotObject(kind(&other))),
        Err(error) => Err(RecordError::NotJson(error.to_string())),
    }
}

/// Checks that `user` keeps the `users_info` contract and returns its `id`.
pub fn check_user(user: &Object) -> Result<Uuid, RecordError> {
    let id = parse_uuid("id", field(user, "id")?)?;
    for name in TEXT_FIELDS {
        expect_str(name, field(user, name)?)?;
    }
    expect_post_code("post_code", field(user, "post_code")?)?;
    parse_time("dob", field(user, "dob")?)?;
    parse_time("registered_date", field(user, "registered_date")?)?;
    Ok(id)
}

/// Stage 1's `timestamp` text for `now`. Made once per batch: formatting is not free.
pub fn timestamp_text(now: DateTime<Utc>) -> String {
    now.format(TIMESTAMP_FORMAT).to_string()
}

/// Stage 1: adds `timestamp` (replacing one already there, as the old consumer did).
pub fn add_timestamp(user: &mut Object, stamp: &str) {
    user.insert("timestamp".into(), Value::String(stamp.to_owned()));
}

/// The major and hobby of a user: uniform over the lists, and a function of the id alone, so a replay
/// gives the same tags.
pub fn tags_for(id: Uuid) -> (&'static str, &'static str) {
    let bits = id.as_u128();
    let major = (bits % MAJORS.len() as u128) as usize;
    let hobby = ((bits / MAJORS.len() as u128) % HOBBIES.len() as u128) as usize;
    (MAJORS[major], HOBBIES[hobby])
}

/// Stage 2: adds `random_majors` and `random_hobbies`.
pub fn add_tags(user: &mut Object, id: Uuid) {
    let (major, hobby) = tags_for(id);
    user.insert("random_majors".into(), Value::String(major.into()));
    user.insert("random_hobbies".into(), Value::String(hobby.into()));
}

/// The sink's view: a fully enriched record as a typed row.
pub fn row_from(user: &Object) -> Result<UserRow, RecordError> {
    let id = check_user(user)?;
    let text = |name: &str| -> Result<String, RecordError> {
        let value = expect_str(name, field(user, name)?)?;
        if value.contains('\0') {
            return Err(RecordError::Invalid {
                field: name.to_owned(),
                reason: "contains a NUL character, which postgresql text cannot hold".into(),
            });
        }
        Ok(value.to_owned())
    };
    let post_code = match field(user, "post_code")? {
        Value::String(_) => text("post_code")?,
        other => other.to_string(),
    };
    let fetch_run_id = match user.get("fetch_run_id") {
        None | Some(Value::Null) => None,
        Some(value) => Some(parse_uuid("fetch_run_id", value)?),
    };
    Ok(UserRow {
        id,
        first_name: text("first_name")?,
        last_name: text("last_name")?,
        gender: text("gender")?,
        address: text("address")?,
        post_code,
        email: text("email")?,
        username: text("username")?,
        dob: parse_time("dob", field(user, "dob")?)?,
        registered_date: parse_time("registered_date", field(user, "registered_date")?)?,
        phone: text("phone")?,
        picture: text("picture")?,
        majors: text("random_majors")?,
        hobbies: text("random_hobbies")?,
        enriched_at: parse_stage_time("timestamp", field(user, "timestamp")?)?,
        fetch_run_id,
    })
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

fn field<'a>(user: &'a Object, name: &str) -> Result<&'a Value, RecordError> {
    match user.get(name) {
        Some(Value::Null) | None => Err(RecordError::Missing(name.to_owned())),
        Some(value) => Ok(value),
    }
}

fn expect_str<'a>(name: &str, value: &'a Value) -> Result<&'a str, RecordError> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(name, "a string", value))
}

fn expect_post_code(name: &str, value: &Value) -> Result<(), RecordError> {
    match value {
        Value::String(_) | Value::Number(_) => Ok(()),
        other => Err(wrong_type(name, "a string or a number", other)),
    }
}

fn parse_uuid(name: &str, value: &Value) -> Result<Uuid, RecordError> {
    let text = expect_str(name, value)?;
    Uuid::parse_str(text).map_err(|error| RecordError::Invalid {
        field: name.to_owned(),
        reason: format!("{text:?} is not a uuid ({error})"),
    })
}

fn parse_time(name: &str, value: &Value) -> Result<DateTime<Utc>, RecordError> {
    let text = expect_str(name, value)?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|error| RecordError::Invalid {
            field: name.to_owned(),
            reason: format!("{text:?} is not an iso 8601 time ({error})"),
        })
}

fn parse_stage_time(name: &str, value: &Value) -> Result<DateTime<Utc>, RecordError> {
    let text = expect_str(name, value)?;
    parse_stage_text(text).map_err(|error| RecordError::Invalid {
        field: name.to_owned(),
        reason: format!("{text:?} is not a \"YYYY-MM-DD HH:MM:SS\" time ({error})"),
    })
}

/// Stage 1's `timestamp` text as a time, read as UTC.
pub(super) fn parse_stage_text(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc())
}

fn wrong_type(name: &str, expected: &'static str, found: &Value) -> RecordError {
    RecordError::WrongType {
        field: name.to_owned(),
        expected,
        found: kind(found),
    }
}

fn kind(value: &Value) -> &'static str {
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

    fn enriched() -> Object {
        let id = Uuid::parse_str("5b1e3c2a-9f0d-4e6b-8a7c-1d2e3f405162").unwrap();
        let mut user =
            user_from_randomuser(&randomuser_result(json!("LS1 4AB")), id, None).unwrap();
        add_timestamp(
            &mut user,
            &timestamp_text("2024-05-06T07:08:09Z".parse().unwrap()),
        );
        add_tags(&mut user, id);
        user
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
    fn keeps_a_numeric_post_code_a_number() {
        let user =
            user_from_randomuser(&randomuser_result(json!(90210)), Uuid::new_v4(), None).unwrap();
        assert_eq!(user["post_code"], json!(90210));
        assert_eq!(check_user(&user).map(|_| ()), Ok(()));
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
    fn refuses_payloads_that_are_not_json_objects() {
        let check = |payload: Option<&[u8]>, expected: &str| {
            let error = parse_object(payload, 64).unwrap_err().to_string();
            assert!(
                error.starts_with(expected),
                "{error:?} should start with {expected:?}"
            );
        };
        check(None, "message has no payload");
        check(
            Some(b"{not json"),
            "payload is not json: key must be a string at line 1 column 2",
        );
        check(Some(b"[1,2]"), "payload is a json an array, not an object");
        check(
            Some(&[b' '; 65]),
            "payload of 65 bytes exceeds the limit of 64 bytes",
        );
        assert!(parse_object(Some(b"{\"a\":1}"), 64).is_ok());
    }

    #[test]
    fn check_user_names_the_bad_field() {
        let check = |edit: fn(&mut Object), expected: &str| {
            let mut user = enriched();
            edit(&mut user);
            assert_eq!(check_user(&user).unwrap_err().to_string(), expected);
        };
        check(|u| drop(u.remove("email")), "missing field `email`");
        check(
            |u| drop(u.insert("id".into(), json!("nope"))),
            "field `id` is invalid: \"nope\" is not a uuid (invalid character: found `n` at 0)",
        );
        check(
            |u| drop(u.insert("dob".into(), json!(1993))),
            "field `dob` is a number, expected a string",
        );
        check(
            |u| drop(u.insert("registered_date".into(), json!("yesterday"))),
            "field `registered_date` is invalid: \"yesterday\" is not an iso 8601 time (premature end of input)",
        );
    }

    #[test]
    fn timestamp_has_the_old_consumers_format() {
        let mut user = Object::new();
        add_timestamp(
            &mut user,
            &timestamp_text("2024-05-06T07:08:09.999Z".parse().unwrap()),
        );
        assert_eq!(user["timestamp"], json!("2024-05-06 07:08:09"));
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
    fn extra_fields_pass_through_the_stages() {
        let mut user = enriched();
        user.insert("nat".into(), json!("GB"));
        let id = check_user(&user).unwrap();
        add_tags(&mut user, id);
        assert_eq!(user["nat"], json!("GB"));
        let keys: Vec<&str> = user.keys().map(String::as_str).collect();
        assert_eq!(keys.last(), Some(&"nat"));
    }

    #[test]
    fn row_from_an_enriched_record() {
        let row = row_from(&enriched()).unwrap();
        assert_eq!(row.post_code, "LS1 4AB");
        assert_eq!(
            row.dob,
            "1993-07-20T09:44:18.674Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            row.enriched_at,
            "2024-05-06T07:08:09Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            (row.majors.as_str(), row.hobbies.as_str()),
            tags_for(row.id)
        );
        assert_eq!(row.fetch_run_id, None);

        let mut numeric = enriched();
        numeric.insert("post_code".into(), json!(90210));
        assert_eq!(row_from(&numeric).unwrap().post_code, "90210");

        let mut untagged = enriched();
        untagged.remove("random_hobbies");
        assert_eq!(
            row_from(&untagged).unwrap_err(),
            RecordError::Missing("random_hobbies".into())
        );
        let mut bad_time = enriched();
        bad_time.insert("timestamp".into(), json!("06/05/2024"));
        assert!(
            row_from(&bad_time)
                .unwrap_err()
                .to_string()
                .starts_with("field `timestamp` is invalid")
        );
    }
}
