//! The fast and the slow path agree on every input: property tests that feed the same bytes to both.
//! When the fast path says yes, the slow path says yes with the same output; the slow path calls
//! JSON what `serde_json::Value` calls JSON; what a stage writes is valid JSON in which every field the
//! stage does not own is, byte for byte, what came in. Inputs: generated users (as fetched, stamped and
//! tagged) mutated with hostile values (lone surrogates, invalid UTF-8, numbers beyond a double, big
//! integers, deep nesting, duplicate and escaped keys), byte edits, and arbitrary bytes.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::Value;
use uuid::Uuid;

use super::contract::{CONTRACT_FIELDS, Enrichment, RecordError, user_from_randomuser};
use super::raw::RawFields;
use super::{enrich_payload, fast, row_from_payload, slow};
use crate::pipeline::fetch::generator::Generator;

const LIMIT: usize = 1 << 20;
const STAMP: &str = "2024-01-02 03:04:05";

/// JSON values (and near-JSON) that have split the two paths, or could.
const HOSTILE: &[&[u8]] = &[
    br#""\ud800""#,
    br#""\udc00""#,
    br#""x\ud800y""#,
    br#""\ud800\udc00""#,
    br#""\\ud800""#,
    br#""\u0000""#,
    b"\"\xff\"",
    b"\"\xc3\"",
    b"\"\xed\xa0\x80\"",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"12345678901234567890123",
    b"-12345678901234567890123",
    b"18446744073709551616",
    b"1.0",
    b"1E2",
    b"-0",
    b"0.1e1",
    b"true",
    b"null",
    b"[]",
    b"{}",
    br#"{"a":["\udfff"]}"#,
    b"[1e400]",
    br#""S\u00e9bastien""#,
    br#""say \"hi\"""#,
    b"01",
    b"1.",
    b"NaN",
    b"[1,]",
    b"\"open",
];

/// A user as fetch publishes it, optionally through stage 1 and stage 2 (`stage` 0, 1 or 2).
fn user(seed: u64, stage: u8) -> Vec<u8> {
    let result = Generator::new(Some(seed)).result();
    let id = Uuid::from_u64_pair(seed, !seed);
    let user = user_from_randomuser(&result, id, Some(Uuid::from_u64_pair(!seed, seed))).unwrap();
    let mut bytes = serde_json::to_vec(&user).unwrap();
    for enrichment in [Enrichment::Timestamp(STAMP), Enrichment::Tags]
        .into_iter()
        .take(stage.into())
    {
        bytes = slow::enrich(&bytes, LIMIT, enrichment).unwrap().1;
    }
    bytes
}

/// A value for a field: hostile, a string of any text, raw bytes in quotes, deep nesting, or a value the
/// contract expects.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(HOSTILE).prop_map(<[u8]>::to_vec),
        2 => any::<String>().prop_map(|s| serde_json::to_vec(&s).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..6).prop_map(|b| [&b"\""[..], &b, b"\""].concat()),
        1 => (120usize..135).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        1 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<f64>().prop_map(|n| serde_json::to_vec(&n).unwrap()),
        1 => Just(br#""5b1e3c2a-9f0d-4e6b-8a7c-1d2e3f405162""#.to_vec()),
        1 => Just(br#""1993-07-20T09:44:18.674Z""#.to_vec()),
        1 => Just(format!("{STAMP:?}").into_bytes()),
    ]
}

/// A key as written: unknown, one of the contract's, or one of the contract's spelled with an escape.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(&["nat", "x", "login_uuid", "Id", ""][..]).prop_map(|k| format!("{k:?}")),
        1 => prop::sample::select(&CONTRACT_FIELDS[..]).prop_map(|k| format!("{k:?}")),
        1 => prop::sample::select(&CONTRACT_FIELDS[..])
            .prop_map(|k| format!("\"\\u{:04x}{}\"", k.as_bytes()[0], &k[1..])),
    ]
}

/// A change to a record's fields.
#[derive(Debug, Clone)]
enum Mutation {
    Insert {
        key: String,
        value: Vec<u8>,
        first: bool,
    },
    Replace {
        at: Index,
        value: Vec<u8>,
    },
    Duplicate(Index),
    Remove(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (key(), value(), any::<bool>()).prop_map(|(key, value, first)| Mutation::Insert { key, value, first }),
        2 => (any::<Index>(), value()).prop_map(|(at, value)| Mutation::Replace { at, value }),
        1 => any::<Index>().prop_map(Mutation::Duplicate),
        1 => any::<Index>().prop_map(Mutation::Remove),
    ]
}

/// A change to the bytes once written.
#[derive(Debug, Clone)]
enum Edit {
    None,
    Flip(Index, u8),
    Insert(Index, u8),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        15 => Just(Edit::None),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// A generated user, its fields changed by `mutations`, written compactly or spaced, then `edit`ed.
fn mutated_user() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u64>(),
        0u8..3,
        prop::collection::vec(mutation(), 0..3),
        any::<bool>(),
        edit(),
    )
        .prop_map(|(seed, stage, mutations, spaced, edit)| {
            let base = user(seed, stage);
            let RawFields(fields) = serde_json::from_slice(&base).unwrap();
            let mut fields: Vec<(String, Vec<u8>)> = fields
                .iter()
                .map(|(key, value)| (format!("{key:?}"), value.get().as_bytes().to_vec()))
                .collect();
            for mutation in mutations {
                match mutation {
                    Mutation::Insert { key, value, first } => {
                        fields.insert(if first { 0 } else { fields.len() }, (key, value))
                    }
                    Mutation::Replace { at, value } if !fields.is_empty() => {
                        let at = at.index(fields.len());
                        fields[at].1 = value;
                    }
                    Mutation::Duplicate(at) if !fields.is_empty() => {
                        let field = fields[at.index(fields.len())].clone();
                        fields.push(field);
                    }
                    Mutation::Remove(at) if !fields.is_empty() => {
                        fields.remove(at.index(fields.len()));
                    }
                    _ => {}
                }
            }
            let (colon, comma) = if spaced {
                (&b" : "[..], &b" ,\n "[..])
            } else {
                (&b":"[..], &b","[..])
            };
            let mut bytes = b"{".to_vec();
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    bytes.extend_from_slice(comma);
                }
                bytes.extend_from_slice(key.as_bytes());
                bytes.extend_from_slice(colon);
                bytes.extend_from_slice(value);
            }
            bytes.extend_from_slice(if spaced { b" }\n" } else { b"}" });
            match edit {
                Edit::None => {}
                Edit::Flip(at, b) => {
                    let at = at.index(bytes.len());
                    bytes[at] = b;
                }
                Edit::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), b),
                Edit::Truncate(at) => bytes.truncate(at.index(bytes.len())),
            }
            bytes
        })
}

/// The top-level fields of `payload` other than `owned`, as written.
fn others(payload: &[u8], owned: &[(&str, &str)]) -> Vec<(String, String)> {
    let RawFields(fields) = serde_json::from_slice(payload).expect("an object");
    fields
        .iter()
        .filter(|(key, _)| !owned.iter().any(|(name, _)| key == name))
        .map(|(key, value)| (key.to_string(), value.get().to_owned()))
        .collect()
}

/// Everything both paths must agree on for one payload.
fn paths_agree(payload: &[u8]) -> Result<(), TestCaseError> {
    let record = slow::Record::parse(Some(payload), LIMIT);
    let not_json = matches!(record, Err(RecordError::NotJson(_)));
    prop_assert_eq!(
        not_json,
        serde_json::from_slice::<Value>(payload).is_err(),
        "json verdict"
    );

    for enrichment in [Enrichment::Timestamp(STAMP), Enrichment::Tags] {
        let slow = slow::enrich(payload, LIMIT, enrichment);
        if let Some(fast) = fast::enrich(payload, enrichment) {
            prop_assert_eq!(Ok(fast), slow.clone(), "fast and slow {:?}", enrichment);
        }
        prop_assert_eq!(
            enrich_payload(Some(payload), LIMIT, enrichment),
            slow.clone()
        );
        if let Ok((id, out)) = &slow {
            let written: Value =
                serde_json::from_slice(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let owned = enrichment.fields(*id);
            for (name, text) in &owned {
                prop_assert_eq!(&written[*name], &Value::from(*text));
            }
            prop_assert_eq!(
                others(out, &owned),
                others(payload, &owned),
                "passed through as written"
            );
        }
    }

    let slow_row = record.and_then(|user| slow::row_from(&user));
    if let Some(row) = fast::row(payload) {
        prop_assert_eq!(
            Ok(row.map(|text| text.to_string())),
            slow_row.clone(),
            "fast and slow rows"
        );
    }
    let row = row_from_payload(Some(payload), LIMIT).map(|row| row.map(|text| text.to_string()));
    prop_assert_eq!(row, slow_row);
    Ok(())
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn on_mutated_users(payload in mutated_user()) {
        paths_agree(&payload)?;
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn on_arbitrary_bytes(payload in prop::collection::vec(any::<u8>(), 0..300)) {
        paths_agree(&payload)?;
    }

    #[test]
    fn on_arbitrary_objects(body in "\\PC{0,120}") {
        paths_agree(format!("{{{body}}}").as_bytes())?;
    }
}

#[test]
fn the_cases_named_in_the_issue() {
    let base = String::from_utf8(user(7, 1)).unwrap();
    let with = |extra: &str| {
        base.replacen('{', &format!("{{\"extra\":{extra},"), 1)
            .into_bytes()
    };
    for extra in [
        r#""\ud800""#,
        "1e400",
        "12345678901234567890123",
        r#""\\ud800""#,
    ] {
        paths_agree(&with(extra)).unwrap();
    }
    let mut invalid = with("\"x\"");
    let at = invalid.iter().position(|b| *b == b'x').unwrap();
    invalid[at] = 0xff;
    paths_agree(&invalid).unwrap();
    for (extra, accepted) in [
        (r#""\ud800""#, false),
        ("1e400", false),
        ("12345678901234567890123", true),
        (r#""\\ud800""#, true),
    ] {
        let payload = with(extra);
        assert_eq!(
            fast::enrich(&payload, Enrichment::Tags).is_some(),
            accepted,
            "{extra}"
        );
        assert_eq!(
            slow::enrich(&payload, LIMIT, Enrichment::Tags).is_ok(),
            accepted,
            "{extra}"
        );
    }
    assert!(slow::enrich(&invalid, LIMIT, Enrichment::Tags).is_err());
}
