//! The fast path over the record contract: one pass over a payload reads the contract's fields borrowed
//! (no JSON tree, no copies) and checks every other value as the slow path does ([`Checked`]); a stage
//! then appends its fields to the original bytes. It only ever says yes: whatever it does not plainly
//! accept (an escaped string, a field already set, anything wrong) goes the slow path in `slow`, which
//! decides and names the fault. `agree` checks both paths give the same answer on any bytes. Pure.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::contract::{Enrichment, UserRow, parse_stage_text};
use super::raw::{self, Checked, Key};

/// The fields `id`, `dob`, `registered_date` and [`TEXT_FIELDS`], in this order in [`FastUser`].
const STRINGS: [&str; 11] = [
    "id",
    "dob",
    "registered_date",
    "first_name",
    "last_name",
    "gender",
    "address",
    "email",
    "username",
    "phone",
    "picture",
];

/// The contract's fields of a user, borrowed from its payload.
#[derive(Debug)]
pub struct FastUser<'a> {
    /// The values of [`STRINGS`].
    strings: [&'a str; 11],
    /// `dob` and `registered_date`, read once by [`FastUser::parse`] (filled there).
    times: [DateTime<Utc>; 2],
    post_code: PostCode<'a>,
    timestamp: Present<'a>,
    random_majors: Present<'a>,
    random_hobbies: Present<'a>,
    fetch_run_id: Option<&'a str>,
}

/// A post code as sent: text, or a number's text as written.
#[derive(Debug)]
enum PostCode<'a> {
    Text(&'a str),
    Number(&'a str),
}

/// A field that may be absent, may be there but not as a plain string (then `Other`), or is one.
#[derive(Debug, Default)]
enum Present<'a> {
    #[default]
    Absent,
    Other,
    Is(&'a str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Present<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Present::Is(v))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Present::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Present::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Present::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Present::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Present::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Present::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Present::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Present::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Sets `slot` once; a second value is an error, as for the slow path.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}

impl<'de: 'a, 'a> Deserialize<'de> for FastUser<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FastUser<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut strings: [Option<&'de str>; 11] = [None; 11];
                let (mut post_code, mut fetch_run_id) = (None, None);
                let mut present: [Option<Present<'de>>; 3] = [None, None, None];
                while let Some(Key(key)) = map.next_key::<Key>()? {
                    if let Some(at) = STRINGS.iter().position(|name| *name == key) {
                        once(&mut strings[at], map.next_value()?, STRINGS[at])?;
                        continue;
                    }
                    match &*key {
                        "post_code" => {
                            once(&mut post_code, map.next_value::<&RawValue>()?, "post_code")?
                        }
                        "timestamp" => once(&mut present[0], map.next_value()?, "timestamp")?,
                        "random_majors" => {
                            once(&mut present[1], map.next_value()?, "random_majors")?
                        }
                        "random_hobbies" => {
                            once(&mut present[2], map.next_value()?, "random_hobbies")?
                        }
                        "fetch_run_id" => once(
                            &mut fetch_run_id,
                            map.next_value::<Option<&str>>()?,
                            "fetch_run_id",
                        )?,
                        _ => drop(map.next_value::<Checked>()?),
                    }
                }
                let mut values = [""; 11];
                for (at, value) in strings.into_iter().enumerate() {
                    values[at] = value.ok_or_else(|| de::Error::missing_field(STRINGS[at]))?;
                }
                let post_code = post_code.ok_or_else(|| de::Error::missing_field("post_code"))?;
                let post_code = post_code_of(post_code)
                    .ok_or_else(|| de::Error::custom("post_code is not plainly valid"))?;
                let [timestamp, random_majors, random_hobbies] =
                    present.map(Option::unwrap_or_default);
                Ok(FastUser {
                    strings: values,
                    times: [DateTime::UNIX_EPOCH; 2],
                    post_code,
                    timestamp,
                    random_majors,
                    random_hobbies,
                    fetch_run_id: fetch_run_id.flatten(),
                })
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A post code that is an unescaped string, or an integer (kept as written).
fn post_code_of(raw: &RawValue) -> Option<PostCode<'_>> {
    let text = raw.get();
    if text.starts_with('"') {
        return serde_json::from_str(text).ok().map(PostCode::Text);
    }
    let integer = text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok();
    integer.then_some(PostCode::Number(text))
}

impl<'a> FastUser<'a> {
    /// The user in `payload` when it plainly keeps the `users_info` contract (every check of
    /// `slow::check_user` passes); `None` sends the caller the slow way.
    pub fn parse(payload: &'a [u8]) -> Option<(Self, Uuid)> {
        // UTF-8 checked once for the whole payload, not once per string as `from_slice` does.
        let text = std::str::from_utf8(payload).ok()?;
        let mut user: FastUser<'a> = serde_json::from_str(text).ok()?;
        let id = Uuid::parse_str(user.strings[0]).ok()?;
        for (at, time) in user.times.iter_mut().enumerate() {
            *time = DateTime::parse_from_rfc3339(user.strings[1 + at])
                .ok()?
                .to_utc();
        }
        Some((user, id))
    }

    /// Whether `enrichment` would only add fields (none of its fields to replace).
    fn lacks(&self, enrichment: Enrichment) -> bool {
        let absent = |field: &Present| matches!(field, Present::Absent);
        match enrichment {
            Enrichment::Timestamp(_) => absent(&self.timestamp),
            Enrichment::Tags => absent(&self.random_majors) && absent(&self.random_hobbies),
        }
    }

    /// The row of an enriched user, or `None` for the slow way.
    pub fn row(&self, id: Uuid) -> Option<UserRow<&'a str>> {
        let text = |v: &'a str| (!v.contains('\0')).then_some(v);
        let (Present::Is(timestamp), Present::Is(majors), Present::Is(hobbies)) =
            (&self.timestamp, &self.random_majors, &self.random_hobbies)
        else {
            return None;
        };
        let fetch_run_id = match self.fetch_run_id {
            None => None,
            Some(run) => Some(Uuid::parse_str(run).ok()?),
        };
        let [
            _,
            _,
            _,
            first_name,
            last_name,
            gender,
            address,
            email,
            username,
            phone,
            picture,
        ] = self.strings;
        Some(UserRow {
            id,
            first_name: text(first_name)?,
            last_name: text(last_name)?,
            gender: text(gender)?,
            address: text(address)?,
            post_code: match self.post_code {
                PostCode::Text(t) => text(t)?,
                PostCode::Number(n) => n,
            },
            email: text(email)?,
            username: text(username)?,
            dob: self.times[0],
            registered_date: self.times[1],
            phone: text(phone)?,
            picture: text(picture)?,
            majors: text(majors)?,
            hobbies: text(hobbies)?,
            enriched_at: parse_stage_text(timestamp).ok()?,
            fetch_run_id,
        })
    }
}

/// A stage's work on one payload when it plainly passes and the stage's fields are not there yet: the
/// user's id and the payload with the fields appended. `None` sends the caller the slow way.
pub fn enrich(payload: &[u8], enrichment: Enrichment) -> Option<(Uuid, Vec<u8>)> {
    let (user, id) = FastUser::parse(payload)?;
    if !user.lacks(enrichment) {
        return None;
    }
    Some((id, raw::set_fields(payload, &[], &enrichment.fields(id))))
}

/// The sink's row of a payload when it plainly passes.
pub fn row(payload: &[u8]) -> Option<UserRow<&str>> {
    FastUser::parse(payload).and_then(|(user, id)| user.row(id))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::pipeline::fetch::generator::Generator;
    use crate::pipeline::record::{TEXT_FIELDS, slow, user_from_randomuser};

    const STAMP: &str = "2024-01-02 03:04:05";

    fn users(n: usize) -> Vec<Vec<u8>> {
        let mut generator = Generator::new(Some(5));
        (0..n)
            .map(|_| {
                let user =
                    user_from_randomuser(&generator.result(), Uuid::new_v4(), Some(Uuid::new_v4()));
                serde_json::to_vec(&user.unwrap()).unwrap()
            })
            .collect()
    }

    #[test]
    fn reads_the_same_fields_as_the_slow_path() {
        assert_eq!(&STRINGS[3..], &TEXT_FIELDS[..]);
    }

    #[test]
    fn takes_generated_users_through_both_stages_as_the_slow_path_does() {
        for user in users(300) {
            let stamped =
                enrich(&user, Enrichment::Timestamp(STAMP)).expect("a generated user passes");
            assert_eq!(
                Ok(stamped.clone()),
                slow::enrich(&user, 1 << 20, Enrichment::Timestamp(STAMP))
            );
            let tagged = enrich(&stamped.1, Enrichment::Tags).expect("a stamped user passes");
            assert_eq!(
                Ok(tagged.clone()),
                slow::enrich(&stamped.1, 1 << 20, Enrichment::Tags)
            );
            let record = slow::Record::parse(Some(&tagged.1), 1 << 20).unwrap();
            let fast = row(&tagged.1).map(|r| r.map(|text| text.to_string()));
            assert_eq!(fast, Some(slow::row_from(&record).unwrap()));
        }
    }

    #[test]
    fn declines_whatever_is_not_plainly_valid() {
        let base: Value = serde_json::from_slice(&users(1)[0]).unwrap();
        let declines = |field: &str, value: Value| {
            let mut user = base.clone();
            user[field] = value;
            FastUser::parse(&serde_json::to_vec(&user).unwrap()).is_none()
        };
        assert!(declines("email", json!(null)));
        assert!(declines("id", json!(7)));
        assert!(declines("id", json!("not-a-uuid")));
        assert!(declines("dob", json!("yesterday")));
        // Escaped text cannot be borrowed: the slow path takes it (and accepts it).
        assert!(declines("last_name", json!("O\"Brien")));
        assert!(declines("post_code", json!(5.5)));
        assert!(!declines("post_code", json!(-5)));
        assert!(!declines("extra", json!({"deep": [1, "x", null]})));
        // The same fields as a JSON array are not a user object.
        let array: Vec<Value> = base.as_object().unwrap().values().cloned().collect();
        assert!(FastUser::parse(&serde_json::to_vec(&array).unwrap()).is_none());
        // What serde_json skips unread, the fast path checks.
        let text = serde_json::to_string(&base).unwrap();
        for extra in [r#""\ud800""#, "1e400", r#"["\udfff"]"#] {
            let payload = text.replacen('{', &format!("{{\"x\":{extra},"), 1);
            assert!(FastUser::parse(payload.as_bytes()).is_none(), "{extra}");
        }
        let twice = text.replacen(
            '{',
            &format!("{{\"id\":{:?},", base["id"].as_str().unwrap()),
            1,
        );
        assert!(FastUser::parse(twice.as_bytes()).is_none());
    }

    #[test]
    fn fields_already_there_are_left_to_the_slow_path() {
        let user: Value = serde_json::from_slice(&users(1)[0]).unwrap();
        let with = |field: &str, value: Value| {
            let mut user = user.clone();
            user[field] = value;
            serde_json::to_vec(&user).unwrap()
        };
        let payload = with("timestamp", json!(null));
        assert_eq!(
            enrich(&payload, Enrichment::Timestamp(STAMP)),
            None,
            "a null timestamp is still a key to replace"
        );
        let payload = with("random_hobbies", json!("Yoga"));
        assert_eq!(enrich(&payload, Enrichment::Tags), None);
        assert_eq!(row(&payload), None, "no stage-1 timestamp, no fast row");
    }
}
