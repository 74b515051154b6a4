//! The fast path over the record contract: checks a payload by deserializing it into borrowed fields (no
//! JSON tree, no copies) and enriches it by appending fields to the original bytes. It only ever says yes:
//! whatever it does not plainly accept goes the slow path in `record`, which names the fault. Pure.

use std::fmt;

use chrono::DateTime;
use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::contract::{UserRow, parse_stage_text};

/// The contract's fields of a user, borrowed from its payload.
#[derive(Debug, Deserialize)]
pub struct FastUser<'a> {
    id: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    gender: &'a str,
    address: &'a str,
    #[serde(deserialize_with = "post_code")]
    post_code: PostCode<'a>,
    email: &'a str,
    username: &'a str,
    dob: &'a str,
    registered_date: &'a str,
    phone: &'a str,
    picture: &'a str,
    #[serde(default)]
    timestamp: Present<&'a str>,
    #[serde(default)]
    random_majors: Present<&'a str>,
    #[serde(default)]
    random_hobbies: Present<&'a str>,
    #[serde(default)]
    fetch_run_id: Option<&'a str>,
}

/// A post code as sent: text, or the digits of a number.
#[derive(Debug)]
enum PostCode<'a> {
    Text(&'a str),
    Number(String),
}

/// A field that may be absent, may be there but not as `T` (then `Other`), or is there as `T`.
#[derive(Debug, Default)]
enum Present<T> {
    #[default]
    Absent,
    Other,
    Is(T),
}

impl<'de: 'a, 'a> Deserialize<'de> for Present<&'a str> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Present<&'de str>;
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
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Present::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Present::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

fn post_code<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<PostCode<'a>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = PostCode<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(PostCode::Text(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(PostCode::Number(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(PostCode::Number(v.to_string()))
        }
    }
    deserializer.deserialize_any(V)
}

impl<'a> FastUser<'a> {
    /// The user in `payload` when it plainly keeps the `users_info` contract (every check of
    /// `record::check_user` passes); `None` sends the caller the slow way.
    pub fn parse(payload: &'a [u8]) -> Option<(Self, Uuid)> {
        // A derived struct also accepts a JSON array of its fields in order; the contract wants an object.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let user: FastUser<'a> = serde_json::from_slice(payload).ok()?;
        let id = Uuid::parse_str(user.id).ok()?;
        DateTime::parse_from_rfc3339(user.dob).ok()?;
        DateTime::parse_from_rfc3339(user.registered_date).ok()?;
        Some((user, id))
    }

    /// Whether stage 1 would only add a field (no `timestamp` to replace).
    pub fn lacks_timestamp(&self) -> bool {
        matches!(self.timestamp, Present::Absent)
    }

    /// Whether stage 2 would only add fields (no tags to replace).
    pub fn lacks_tags(&self) -> bool {
        matches!(self.random_majors, Present::Absent)
            && matches!(self.random_hobbies, Present::Absent)
    }

    /// The row of an enriched user, or `None` for the slow way.
    pub fn row(&self, id: Uuid) -> Option<UserRow> {
        let text = |v: &str| (!v.contains('\0')).then(|| v.to_owned());
        let (Present::Is(timestamp), Present::Is(majors), Present::Is(hobbies)) =
            (&self.timestamp, &self.random_majors, &self.random_hobbies)
        else {
            return None;
        };
        let fetch_run_id = match self.fetch_run_id {
            None => None,
            Some(run) => Some(Uuid::parse_str(run).ok()?),
        };
        Some(UserRow {
            id,
            first_name: text(self.first_name)?,
            last_name: text(self.last_name)?,
            gender: text(self.gender)?,
            address: text(self.address)?,
            post_code: match &self.post_code {
                PostCode::Text(t) => text(t)?,
                PostCode::Number(n) => n.clone(),
            },
            email: text(self.email)?,
            username: text(self.username)?,
            dob: DateTime::parse_from_rfc3339(self.dob).ok()?.to_utc(),
            registered_date: DateTime::parse_from_rfc3339(self.registered_date)
                .ok()?
                .to_utc(),
            phone: text(self.phone)?,
            picture: text(self.picture)?,
            majors: text(majors)?,
            hobbies: text(hobbies)?,
            enriched_at: parse_stage_text(timestamp).ok()?,
            fetch_run_id,
        })
    }
}

/// `payload` (a JSON object) with `fields` added at its end, as JSON strings.
pub fn append_fields(payload: &[u8], fields: &[(&str, &str)]) -> Option<Vec<u8>> {
    let end = payload.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if payload[end] != b'}' {
        return None;
    }
    let mut out = Vec::with_capacity(payload.len() + 64 * fields.len());
    out.extend_from_slice(&payload[..end]);
    for (key, value) in fields {
        out.push(b',');
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        serde_json::to_writer(&mut out, value).ok()?;
    }
    out.push(b'}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::pipeline::fetch::generator::Generator;
    use crate::pipeline::record::{
        Object, add_tags, add_timestamp, check_user, parse_object, row_from, user_from_randomuser,
    };

    fn users(n: usize) -> Vec<Object> {
        let mut generator = Generator::new(Some(5));
        (0..n)
            .map(|_| {
                user_from_randomuser(&generator.result(), Uuid::new_v4(), Some(Uuid::new_v4()))
                    .unwrap()
            })
            .collect()
    }

    fn bytes(user: &Object) -> Vec<u8> {
        serde_json::to_vec(user).unwrap()
    }

    #[test]
    fn appending_gives_what_the_slow_path_gives() {
        for user in users(300) {
            let payload = bytes(&user);
            let (fast, id) = FastUser::parse(&payload).expect("a generated user passes");
            assert_eq!(id, check_user(&user).unwrap());
            assert!(fast.lacks_timestamp() && fast.lacks_tags());

            let stamped =
                append_fields(&bytes(&user), &[("timestamp", "2024-01-02 03:04:05")]).unwrap();
            let mut slow = user.clone();
            add_timestamp(&mut slow, "2024-01-02 03:04:05");
            assert_eq!(
                serde_json::from_slice::<Value>(&stamped).unwrap(),
                Value::Object(slow.clone())
            );

            let (major, hobby) = crate::pipeline::record::tags_for(id);
            let tagged = append_fields(
                &stamped,
                &[("random_majors", major), ("random_hobbies", hobby)],
            )
            .unwrap();
            add_tags(&mut slow, id);
            assert_eq!(
                serde_json::from_slice::<Value>(&tagged).unwrap(),
                Value::Object(slow.clone())
            );

            let (fast, id) = FastUser::parse(&tagged).unwrap();
            assert_eq!(fast.row(id), Some(row_from(&slow).unwrap()));
        }
    }

    #[test]
    fn declines_whatever_is_not_plainly_valid() {
        let base = users(1).remove(0);
        let declines = |edit: &dyn Fn(&mut Object)| {
            let mut user = base.clone();
            edit(&mut user);
            FastUser::parse(&bytes(&user)).is_none()
        };
        assert!(declines(&|u| drop(u.remove("email"))));
        assert!(declines(&|u| drop(u.insert("id".into(), json!(7)))));
        assert!(declines(&|u| drop(
            u.insert("id".into(), json!("not-a-uuid"))
        )));
        assert!(declines(&|u| drop(
            u.insert("dob".into(), json!("yesterday"))
        )));
        assert!(declines(&|u| drop(u.insert("phone".into(), json!(null)))));
        // Escaped text cannot be borrowed: the slow path takes it (and accepts it).
        assert!(declines(&|u| drop(
            u.insert("last_name".into(), json!("O\"Brien"))
        )));
        let mut escaped = base.clone();
        escaped.insert("last_name".into(), json!("O\"Brien"));
        assert!(check_user(&escaped).is_ok());
        assert!(!declines(&|u| drop(
            u.insert("post_code".into(), json!(-5))
        )));
        assert!(declines(&|u| drop(
            u.insert("post_code".into(), json!(5.5))
        )));
        // The same fields as a JSON array are not a user object.
        let array: Vec<Value> = base.values().cloned().collect();
        assert!(FastUser::parse(&serde_json::to_vec(&array).unwrap()).is_none());
        assert_eq!(append_fields(b"[1, \"}\"]", &[("a", "b")]), None);
        assert!(check_user(&parse_object(Some(&bytes(&base)), 1 << 20).unwrap()).is_ok());
    }

    #[test]
    fn fields_already_there_are_left_to_the_slow_path() {
        let mut user = users(1).remove(0);
        user.insert("timestamp".into(), json!(null));
        let payload = bytes(&user);
        let (fast, _) = FastUser::parse(&payload).unwrap();
        assert!(
            !fast.lacks_timestamp(),
            "a null timestamp is still a key to replace"
        );
        user.insert("random_hobbies".into(), json!("Yoga"));
        let payload = bytes(&user);
        let (fast, id) = FastUser::parse(&payload).unwrap();
        assert!(!fast.lacks_tags());
        assert_eq!(fast.row(id), None, "no stage-1 timestamp, no fast row");
    }

    #[test]
    fn a_nul_character_sends_the_row_the_slow_way() {
        let mut user = users(1).remove(0);
        add_timestamp(&mut user, "2024-01-02 03:04:05");
        let id = check_user(&user).unwrap();
        add_tags(&mut user, id);
        user.insert("gender".into(), json!("x\u{0}y"));
        // serde_json escapes NUL, so the fast path cannot borrow it and the slow path reports it.
        let payload = bytes(&user);
        assert!(FastUser::parse(&payload).is_none());
        let error = crate::pipeline::record::row_from_payload(Some(&payload), 1 << 20)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "field `gender` is invalid: contains a NUL character, which postgresql text cannot hold"
        );
    }
}
