//! A payload's JSON as written. [`Checked`] is the check both paths share: a payload is JSON when
//! `serde_json::Value` would accept it (UTF-8, no lone surrogate, numbers within a double's range, nesting
//! to 128). [`RawFields`] are an object's top-level fields with each value's text borrowed from the
//! payload, and [`set_fields`] is the one edit userpipe makes: it writes only the fields it owns, so every
//! other byte passes through as it came (big numbers, their spelling, duplicate keys, spacing). Pure.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What [`Checked`] says of a JSON object.
pub const OBJECT: &str = "an object";

/// Any JSON value, checked as `serde_json::Value` checks it and not kept: only its kind ("a string",
/// [`OBJECT`], ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub kind: &'static str,
}

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl CheckedVisitor {
    fn kind<E>(kind: &'static str) -> Result<Checked, E> {
        Ok(Checked { kind })
    }
}

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Self::kind("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Self::kind("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Self::kind("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Self::kind("a number")
    }
    // serde_json hands over a string only once it is UTF-8 with every escape decoded.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Self::kind("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Self::kind("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Self::kind("an array")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Self::kind(OBJECT)
    }
}

/// An object's key: borrowed from the payload, or decoded when it has escapes (`"\u0069d"` is `id`).
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A JSON object's top-level fields in order, duplicates kept, each value's text as written. It checks
/// the syntax only (not what [`Checked`] checks): read a payload [`Checked`] first.
pub struct RawFields<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawFields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(key), value)) = map.next_entry::<Key, &RawValue>()? {
                    fields.push((key, value));
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// `payload`, a JSON object, with each of `set` as a string field: a field already in `fields` (the
/// payload's own, from [`RawFields`]) gets its value replaced where it stands, the others are appended
/// before the closing brace in the order given. Every other byte stays as it came.
pub fn set_fields(
    payload: &[u8],
    fields: &[(Cow<str>, &RawValue)],
    set: &[(&str, &str)],
) -> Vec<u8> {
    let close = payload
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .unwrap_or(payload.len());
    let mut replaced: Vec<(Range<usize>, &str)> = Vec::new();
    let mut appended: Vec<(&str, &str)> = Vec::new();
    for &(key, value) in set {
        match fields.iter().find(|(name, _)| name == key) {
            Some((_, raw)) => replaced.push((span(payload, raw), value)),
            None => appended.push((key, value)),
        }
    }
    replaced.sort_by_key(|(range, _)| range.start);

    let mut out = Vec::with_capacity(payload.len() + 48 * set.len());
    let mut at = 0;
    for (range, value) in replaced {
        out.extend_from_slice(&payload[at..range.start]);
        push_json_string(&mut out, value);
        at = range.end;
    }
    out.extend_from_slice(&payload[at..close]);
    let mut empty = payload[..close].trim_ascii_end().ends_with(b"{");
    for (key, value) in appended {
        if !empty {
            out.push(b',');
        }
        empty = false;
        push_json_string(&mut out, key);
        out.push(b':');
        push_json_string(&mut out, value);
    }
    out.extend_from_slice(&payload[close..]);
    out
}

/// Where `raw`, a value borrowed from `payload`, lies in it.
fn span(payload: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - payload.as_ptr() as usize;
    debug_assert!(
        start + raw.get().len() <= payload.len(),
        "a value of this payload"
    );
    start..start + raw.get().len()
}

fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, text);
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn checked(payload: &str) -> Result<&'static str, String> {
        serde_json::from_str::<Checked>(payload)
            .map(|c| c.kind)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn checks_what_serde_json_value_checks_and_nothing_else() {
        for payload in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":["x",{"b":"\udc00"}]}"#,
            r#"{"\ud800":1}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e400}"#,
            r#"{"a":1,}"#,
            r#"{"a":1}x"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":01}"#,
        ] {
            assert!(checked(payload).is_err(), "{payload}");
            assert!(serde_json::from_str::<Value>(payload).is_err(), "{payload}");
        }
        for (payload, kind) in [
            (
                r#"{"a":"\ud800\udc00","b":12345678901234567890123,"c":1e-400}"#,
                OBJECT,
            ),
            (r#" [1, -0, 1E2, "\\ud800"] "#, "an array"),
            ("null", "null"),
            (r#""x""#, "a string"),
        ] {
            assert_eq!(checked(payload), Ok(kind), "{payload}");
            assert!(serde_json::from_str::<Value>(payload).is_ok(), "{payload}");
        }
        // serde_json's nesting limit, the same for both.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(checked(&deep(127)).is_ok());
        assert!(checked(&deep(128)).is_err());
        assert!(serde_json::from_str::<Value>(&deep(127)).is_ok());
        assert!(serde_json::from_str::<Value>(&deep(128)).is_err());
        assert!(serde_json::from_slice::<Checked>(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn set_fields_replaces_in_place_and_appends_the_rest() {
        let check = |payload: &str, set: &[(&str, &str)], expected: &str| {
            let fields = serde_json::from_str::<RawFields>(payload).unwrap().0;
            let out = set_fields(payload.as_bytes(), &fields, set);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{payload}");
        };
        check(
            r#"{"a": 1.0E2, "t" : null, "a": [ 1 ]}"#,
            &[("t", "now"), ("m", "x\"y")],
            r#"{"a": 1.0E2, "t" : "now", "a": [ 1 ],"m":"x\"y"}"#,
        );
        check("{ }\n", &[("k", "v")], "{ \"k\":\"v\"}\n");
        check(
            "{\"b\":12345678901234567890123,\"t\":{\"x\":[]} }",
            &[("t", "1"), ("u", "2")],
            "{\"b\":12345678901234567890123,\"t\":\"1\" ,\"u\":\"2\"}",
        );
        check(r#"{"\u0074":0}"#, &[("t", "1")], r#"{"\u0074":"1"}"#);
    }
}
