//! The slow path: decides every payload and names the fault. A payload is read once as a whole
//! ([`Checked`]: is it JSON at all), then as its top-level fields with their text as written. Only the
//! contract's fields are decoded; a stage writes its own fields into the original bytes, so everything
//! else passes through byte for byte. Pure.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::contract::{
    CONTRACT_FIELDS, Enrichment, RecordError, TEXT_FIELDS, UserRow, bytes_within, expect_post_code,
    expect_str, parse_stage_time, parse_time, parse_uuid,
};
use super::raw::{self, Checked, OBJECT, RawFields};

/// A payload checked to be a JSON object with no field of the contract twice, and its top-level fields
/// as written.
pub struct Record<'a> {
    payload: &'a [u8],
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Record<'a> {
    /// Reads `payload`, refusing an empty or oversized one, one that is not a JSON object (as
    /// `serde_json::Value` reads JSON), and one with a field of the contract twice.
    pub fn parse(payload: Option<&'a [u8]>, limit: usize) -> Result<Self, RecordError> {
        let payload = bytes_within(payload, limit)?;
        let not_json = |error: serde_json::Error| RecordError::NotJson(error.to_string());
        let Checked { kind } = serde_json::from_slice(payload).map_err(not_json)?;
        if kind != OBJECT {
            return Err(RecordError::NotObject(kind));
        }
        let RawFields(fields) = serde_json::from_slice(payload).map_err(not_json)?;
        for name in CONTRACT_FIELDS {
            if fields.iter().filter(|(key, _)| key == name).count() > 1 {
                return Err(RecordError::Duplicate(name));
            }
        }
        Ok(Self { payload, fields })
    }

    /// The field's text as written, if it is there.
    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }

    /// A field of the contract, decoded; missing when absent or null.
    fn field(&self, name: &str) -> Result<Value, RecordError> {
        let raw = self
            .raw(name)
            .ok_or_else(|| RecordError::Missing(name.to_owned()))?;
        // The whole payload was read as JSON already: this cannot fail.
        match serde_json::from_str(raw.get()) {
            Ok(Value::Null) => Err(RecordError::Missing(name.to_owned())),
            Ok(value) => Ok(value),
            Err(error) => Err(RecordError::NotJson(error.to_string())),
        }
    }

    /// The payload with `fields` set as strings: replaced where they stand, else appended.
    pub fn with(&self, fields: &[(&str, &str)]) -> Vec<u8> {
        raw::set_fields(self.payload, &self.fields, fields)
    }
}

/// Checks that `user` keeps the `users_info` contract and returns its `id`.
pub fn check_user(user: &Record) -> Result<Uuid, RecordError> {
    let id = parse_uuid("id", &user.field("id")?)?;
    for name in TEXT_FIELDS {
        expect_str(name, &user.field(name)?)?;
    }
    expect_post_code("post_code", &user.field("post_code")?)?;
    parse_time("dob", &user.field("dob")?)?;
    parse_time("registered_date", &user.field("registered_date")?)?;
    Ok(id)
}

/// A stage's work on one payload: the user's id and the payload with the stage's fields set.
pub fn enrich(
    payload: &[u8],
    limit: usize,
    enrichment: Enrichment,
) -> Result<(Uuid, Vec<u8>), RecordError> {
    let user = Record::parse(Some(payload), limit)?;
    let id = check_user(&user)?;
    Ok((id, user.with(&enrichment.fields(id))))
}

/// The sink's view: a fully enriched record as a typed row.
pub fn row_from(user: &Record) -> Result<UserRow, RecordError> {
    let id = check_user(user)?;
    let text = |name: &str| -> Result<String, RecordError> {
        let value = user.field(name)?;
        let value = expect_str(name, &value)?;
        if value.contains('\0') {
            return Err(RecordError::Invalid {
                field: name.to_owned(),
                reason: "contains a NUL character, which postgresql text cannot hold".into(),
            });
        }
        Ok(value.to_owned())
    };
    // A number is kept as written: 90210, -0 and 1e5 stay what the producer sent.
    let post_code = match (user.field("post_code")?, user.raw("post_code")) {
        (Value::Number(_), Some(raw)) => raw.get().to_owned(),
        _ => text("post_code")?,
    };
    let fetch_run_id = match user.field("fetch_run_id") {
        Err(RecordError::Missing(_)) => None,
        Err(error) => return Err(error),
        Ok(value) => Some(parse_uuid("fetch_run_id", &value)?),
    };
    let time =
        |name: &str| -> Result<DateTime<Utc>, RecordError> { parse_time(name, &user.field(name)?) };
    Ok(UserRow {
        id,
        first_name: text("first_name")?,
        last_name: text("last_name")?,
        gender: text("gender")?,
        address: text("address")?,
        post_code,
        email: text("email")?,
        username: text("username")?,
        dob: time("dob")?,
        registered_date: time("registered_date")?,
        phone: text("phone")?,
        picture: text("picture")?,
        majors: text("random_majors")?,
        hobbies: text("random_hobbies")?,
        enriched_at: parse_stage_time("timestamp", &user.field("timestamp")?)?,
        fetch_run_id,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pipeline::record::tags_for;

    const ID: &str = "5b1e3c2a-9f0d-4e6b-8a7c-1d2e3f405162";
    const STAMP: &str = "2024-05-06 07:08:09";

    /// A `users_info` value as fetch publishes it.
    fn user() -> Value {
        json!({
            "id": ID, "first_name": "Ava", "last_name": "Smith", "gender": "female",
            "address": "4171 Main Street, Leeds, West Yorkshire, United Kingdom", "post_code": "LS1 4AB",
            "email": "ava.smith@example.com", "username": "bluecat123",
            "dob": "1993-07-20T09:44:18.674Z", "registered_date": "2015-03-01T12:00:00.000Z",
            "phone": "017684 12345", "picture": "https://randomuser.me/api/portraits/med/women/1.jpg",
        })
    }

    fn enriched() -> Value {
        let mut user = user();
        let (major, hobby) = tags_for(ID.parse().unwrap());
        user["timestamp"] = json!(STAMP);
        user["random_majors"] = json!(major);
        user["random_hobbies"] = json!(hobby);
        user
    }

    fn bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    fn error_of(payload: &[u8]) -> String {
        Record::parse(Some(payload), 1 << 16)
            .and_then(|user| check_user(&user))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn refuses_payloads_that_are_not_json_objects() {
        let check = |payload: Option<&[u8]>, expected: &str| {
            let error = Record::parse(payload, 64).err().unwrap().to_string();
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
        check(
            Some(br#"{"x":"\ud800"}"#),
            "payload is not json: unexpected end of hex escape at line 1 column 13",
        );
        check(
            Some(br#"{"x":"\udc00"}"#),
            "payload is not json: lone leading surrogate in hex escape at line 1 column 12",
        );
        check(
            Some(b"{\"x\":\"\xff\"}"),
            "payload is not json: invalid unicode code point at line 1 column 7",
        );
        check(
            Some(br#"{"x":1e400}"#),
            "payload is not json: number out of range at line 1 column 10",
        );
        assert!(Record::parse(Some(br#"{"a":1}"#), 64).is_ok());
    }

    #[test]
    fn check_user_names_the_bad_field() {
        let check = |field: &str, value: Value, expected: &str| {
            let mut user = user();
            user[field] = value;
            assert_eq!(error_of(&bytes(&user)), expected);
        };
        check("email", json!(null), "missing field `email`");
        check(
            "id",
            json!("nope"),
            "field `id` is invalid: \"nope\" is not a uuid (invalid character: found `n` at 0)",
        );
        check(
            "dob",
            json!(1993),
            "field `dob` is a number, expected a string",
        );
        check(
            "registered_date",
            json!("yesterday"),
            "field `registered_date` is invalid: \"yesterday\" is not an iso 8601 time (premature end of input)",
        );
        check(
            "post_code",
            json!([1]),
            "field `post_code` is an array, expected a string or a number",
        );
    }

    #[test]
    fn a_contract_field_twice_is_poison_and_any_other_field_passes_twice() {
        let payload = bytes(&enriched());
        let twice = |field: &str| {
            let mut payload = payload.clone();
            payload.pop();
            payload.extend_from_slice(
                format!(",\"{field}\":\"5b1e3c2a-9f0d-4e6b-8a7c-1d2e3f405162\"}}").as_bytes(),
            );
            payload
        };
        assert_eq!(error_of(&twice("id")), "duplicate field `id`");
        assert_eq!(error_of(&twice("timestamp")), "duplicate field `timestamp`");
        // An escaped key is the same key.
        assert_eq!(error_of(&twice("\\u0069d")), "duplicate field `id`");
        let (_, out) = enrich(&twice("nat"), 1 << 16, Enrichment::Tags).unwrap();
        assert_eq!(
            out,
            twice("nat"),
            "the tags were there, the rest passes as it came"
        );
    }

    #[test]
    fn unknown_fields_pass_through_byte_for_byte() {
        // As Python's json.dumps writes it: spaces after separators, non-ASCII escaped.
        let user = bytes(&user());
        let extra = r#", "big": 12345678901234567890123, "float": 1.0, "exp": 1E2, "neg": -0, "tiny": 1e-400, "nat": "S\u00e9bastien", "nat": ["GB", {"x": null}]}"#;
        let payload = [&user[..user.len() - 1], extra.as_bytes()].concat();
        let (id, stamped) = enrich(&payload, 1 << 16, Enrichment::Timestamp(STAMP)).unwrap();
        assert_eq!(id.to_string(), ID);
        let expected = [
            &payload[..payload.len() - 1],
            br#","timestamp":"2024-05-06 07:08:09"}"#,
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&stamped),
            String::from_utf8_lossy(&expected)
        );

        // A stage's own field already there is replaced where it stands, whatever it was.
        let again = String::from_utf8(stamped.clone())
            .unwrap()
            .replace(STAMP, "old");
        let (_, restamped) =
            enrich(again.as_bytes(), 1 << 16, Enrichment::Timestamp(STAMP)).unwrap();
        assert_eq!(restamped, stamped);
        let nulled = again.replace(r#""old""#, "null");
        let (_, restamped) =
            enrich(nulled.as_bytes(), 1 << 16, Enrichment::Timestamp(STAMP)).unwrap();
        assert_eq!(restamped, stamped);
    }

    #[test]
    fn row_from_an_enriched_record() {
        let row_of = |value: &[u8]| row_from(&Record::parse(Some(value), 1 << 16)?);
        let row = row_of(&bytes(&enriched())).unwrap();
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

        let text = String::from_utf8(bytes(&enriched())).unwrap();
        for (number, expected) in [
            ("90210", "90210"),
            ("-0", "-0"),
            ("1E5", "1E5"),
            ("12345678901234567890123", "12345678901234567890123"),
        ] {
            let payload = text.replace(r#""LS1 4AB""#, number);
            assert_eq!(row_of(payload.as_bytes()).unwrap().post_code, expected);
        }

        let mut untagged = enriched();
        untagged.as_object_mut().unwrap().remove("random_hobbies");
        assert_eq!(
            row_of(&bytes(&untagged)),
            Err(RecordError::Missing("random_hobbies".into()))
        );
        let mut bad_time = enriched();
        bad_time["timestamp"] = json!("06/05/2024");
        let error = row_of(&bytes(&bad_time)).unwrap_err().to_string();
        assert!(error.starts_with("field `timestamp` is invalid"), "{error}");
        let mut nul = enriched();
        nul["gender"] = json!("x\u{0}y");
        assert_eq!(
            row_of(&bytes(&nul)).unwrap_err().to_string(),
            "field `gender` is invalid: contains a NUL character, which postgresql text cannot hold"
        );
    }
}
