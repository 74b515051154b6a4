//! The built-in offline source: randomuser.me-shaped results made locally, seedable for repeatable runs.

use chrono::{DateTime, Duration as Days, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

/// A nationality: its country, states, cities, and whether its post codes are numbers.
struct Nat {
    code: &'static str,
    country: &'static str,
    states: &'static [&'static str],
    cities: &'static [&'static str],
    post_code: fn(&mut StdRng) -> Value,
}

const NATS: [Nat; 6] = [
    Nat {
        code: "US",
        country: "United States",
        states: &["Oregon", "Texas", "Ohio", "Maine"],
        cities: &["Portland", "Austin", "Dayton", "Bangor"],
        post_code: |rng| json!(rng.random_range(10000..99999)),
    },
    Nat {
        code: "GB",
        country: "United Kingdom",
        states: &["West Yorkshire", "Kent", "Cumbria"],
        cities: &["Leeds", "Canterbury", "Carlisle"],
        post_code: |rng| {
            let letters = b"ABCDEFGHJKLMNPRSTUWXYZ";
            let l = |rng: &mut StdRng| *letters.choose(rng).unwrap_or(&b'A') as char;
            json!(format!(
                "{}{}{} {}{}{}",
                l(rng),
                l(rng),
                rng.random_range(1..30),
                rng.random_range(0..10),
                l(rng),
                l(rng)
            ))
        },
    },
    Nat {
        code: "CA",
        country: "Canada",
        states: &["Ontario", "Quebec", "Nunavut"],
        cities: &["Toronto", "Montreal", "Iqaluit"],
        post_code: |rng| {
            let l = |rng: &mut StdRng| (b'A' + rng.random_range(0..26)) as char;
            json!(format!(
                "{}{}{} {}{}{}",
                l(rng),
                rng.random_range(0..10),
                l(rng),
                rng.random_range(0..10),
                l(rng),
                rng.random_range(0..10)
            ))
        },
    },
    Nat {
        code: "NL",
        country: "Netherlands",
        states: &["Utrecht", "Zeeland", "Drenthe"],
        cities: &["Amersfoort", "Middelburg", "Assen"],
        post_code: |rng| {
            json!(format!(
                "{} {}{}",
                rng.random_range(1000..9999),
                (b'A' + rng.random_range(0..26)) as char,
                (b'A' + rng.random_range(0..26)) as char
            ))
        },
    },
    Nat {
        code: "DE",
        country: "Germany",
        states: &["Bayern", "Hessen", "Sachsen"],
        cities: &["Passau", "Kassel", "Leipzig"],
        post_code: |rng| json!(rng.random_range(10000..99999)),
    },
    Nat {
        code: "AU",
        country: "Australia",
        states: &["Victoria", "Tasmania", "Queensland"],
        cities: &["Ballarat", "Hobart", "Cairns"],
        post_code: |rng| json!(rng.random_range(1000..9999)),
    },
];

const FEMALE: [&str; 8] = [
    "Ava", "Mia", "Emma", "Sofia", "Lotte", "Hannah", "Chloe", "Zoe",
];
const MALE: [&str; 8] = [
    "Liam", "Noah", "Lucas", "Jack", "Daan", "Felix", "Owen", "Max",
];
const LAST: [&str; 10] = [
    "Smith", "Brown", "Tremblay", "de Vries", "Müller", "Wilson", "Jansen", "Roy", "Taylor",
    "Walker",
];
const STREETS: [&str; 6] = [
    "Main Street",
    "Church Road",
    "Station Road",
    "Kerkstraat",
    "Hauptstraße",
    "Park Lane",
];

/// Makes randomuser.me-shaped results.
pub struct Generator {
    rng: StdRng,
}

impl Generator {
    /// A generator that repeats its output for the same seed; `None` seeds from the OS.
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Self { rng }
    }

    /// The body of `GET /api/?results=n`: `{"results": [...], "info": {...}}`.
    pub fn page(&mut self, n: usize) -> Value {
        let results: Vec<Value> = (0..n).map(|_| self.result()).collect();
        json!({
            "results": results,
            "info": {"seed": "userpipe-generator", "results": n, "page": 1, "version": "1.4"}
        })
    }

    /// One result, shaped as randomuser.me's.
    pub fn result(&mut self) -> Value {
        let rng = &mut self.rng;
        let nat = NATS.choose(rng).unwrap_or(&NATS[0]);
        let female = rng.random_bool(0.5);
        let first = *if female { &FEMALE } else { &MALE }
            .choose(rng)
            .unwrap_or(&"Sam");
        let last = *LAST.choose(rng).unwrap_or(&"Smith");
        let username = format!(
            "{}{}{}",
            ["happy", "blue", "silver", "quick", "lazy"]
                .choose(rng)
                .unwrap_or(&"blue"),
            ["cat", "fish", "owl", "bear", "duck"]
                .choose(rng)
                .unwrap_or(&"cat"),
            rng.random_range(100..999)
        );
        let email = format!(
            "{}.{}@example.com",
            first.to_lowercase(),
            last.to_lowercase().replace(' ', "")
        );
        let dob = random_time(rng, 1950, 2005);
        let registered = random_time(rng, 2002, 2022);
        let age = |t: DateTime<Utc>| (Utc::now() - t).num_days() / 365;
        let picture = format!(
            "https://randomuser.me/api/portraits/med/{}/{}.jpg",
            if female { "women" } else { "men" },
            rng.random_range(0..100)
        );
        json!({
            "gender": if female { "female" } else { "male" },
            "name": {"title": if female { "Ms" } else { "Mr" }, "first": first, "last": last},
            "location": {
                "street": {"number": rng.random_range(1..9999), "name": *STREETS.choose(rng).unwrap_or(&STREETS[0])},
                "city": *nat.cities.choose(rng).unwrap_or(&"City"),
                "state": *nat.states.choose(rng).unwrap_or(&"State"),
                "country": nat.country,
                "postcode": (nat.post_code)(rng),
                "coordinates": {"latitude": "-69.8246", "longitude": "134.8719"},
                "timezone": {"offset": "+9:30", "description": "Adelaide, Darwin"}
            },
            "email": email,
            "login": {
                "uuid": Uuid::from_u128(rng.random()).to_string(),
                "username": username,
                "password": "hunter2",
                "salt": "m4b9X0Qb",
                "md5": "c6a7c5a7a0a5d6e0c2f3b1a0e6d5c4b3",
                "sha1": "0d2a4f5d8b1c9e7f6a3b2c1d0e9f8a7b6c5d4e3f",
                "sha256": "a3f5d8e1b2c4a6f8e0d2c4b6a8f0e2d4c6b8a0f2e4d6c8b0a2f4e6d8c0b2a4f6"
            },
            "dob": {"date": iso(dob), "age": age(dob)},
            "registered": {"date": iso(registered), "age": age(registered)},
            "phone": format!("({:03}) {:03}-{:04}", rng.random_range(100..999), rng.random_range(100..999), rng.random_range(0..9999)),
            "cell": format!("({:03}) {:03}-{:04}", rng.random_range(100..999), rng.random_range(100..999), rng.random_range(0..9999)),
            "id": {"name": "SSN", "value": format!("{:03}-{:02}-{:04}", rng.random_range(100..999), rng.random_range(10..99), rng.random_range(0..9999))},
            "picture": {
                "large": picture.replace("/med/", "/"),
                "medium": picture,
                "thumbnail": picture.replace("/med/", "/thumb/")
            },
            "nat": nat.code
        })
    }
}

fn random_time(rng: &mut StdRng, from_year: i32, to_year: i32) -> DateTime<Utc> {
    let start = Utc
        .with_ymd_and_hms(from_year, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let days = i64::from(to_year - from_year) * 365;
    start
        + Days::days(rng.random_range(0..days))
        + Days::milliseconds(rng.random_range(0..86_400_000))
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::record::user_from_randomuser;

    #[test]
    fn the_same_seed_gives_the_same_users() {
        assert_eq!(
            Generator::new(Some(7)).page(20),
            Generator::new(Some(7)).page(20)
        );
        assert_ne!(
            Generator::new(Some(7)).page(20),
            Generator::new(Some(8)).page(20)
        );
    }

    #[test]
    fn results_map_to_users_with_both_kinds_of_post_code() {
        let page = Generator::new(Some(1)).page(300);
        let (mut numbers, mut strings) = (0, 0);
        let mut nats = std::collections::BTreeSet::new();
        for result in page["results"].as_array().unwrap() {
            let user = user_from_randomuser(result, Uuid::new_v4(), None).unwrap();
            let payload = serde_json::to_vec(&user).unwrap();
            let record = crate::pipeline::record::Record::parse(Some(&payload), 1 << 16).unwrap();
            crate::pipeline::record::check_user(&record).unwrap();
            match user["post_code"] {
                Value::Number(_) => numbers += 1,
                Value::String(_) => strings += 1,
                _ => unreachable!("post_code is a number or a string"),
            }
            nats.insert(result["nat"].as_str().unwrap().to_owned());
        }
        assert!(
            numbers > 50 && strings > 50,
            "{numbers} numeric, {strings} string post codes"
        );
        assert_eq!(nats.len(), NATS.len());
    }
}
