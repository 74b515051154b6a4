//! The benchmark's publisher: generated users into the users topic, as fast as the broker takes them
//! or at a steady rate kept against the clock (so a slow tick is made up by the next), noting when
//! each user's publish started. It never reads the database: progress is watched elsewhere, cheaply.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::kafka::{self, Outbound, Producer};
use crate::pipeline::fetch::generator::Generator;
use crate::pipeline::record;

/// Users per produce call when publishing as fast as possible, and how many such calls are in flight.
const CHUNK: usize = 5000;
const IN_FLIGHT: usize = 4;

/// When each user's publish started, and when the last one was acknowledged.
pub struct Publication {
    pub published_at: HashMap<Uuid, DateTime<Utc>>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl Publication {
    pub fn seconds(&self) -> f64 {
        (self.last - self.first).num_microseconds().unwrap_or(0) as f64 / 1e6
    }
}

/// `n` generated users as `users_info` records for `topic`.
pub fn records(generator: &mut Generator, topic: &str, n: usize) -> Vec<(Uuid, Outbound)> {
    let topic: std::sync::Arc<str> = topic.into();
    (0..n)
        .map(|_| {
            let id = Uuid::new_v4();
            let user = record::user_from_randomuser(&generator.result(), id, None)
                .expect("the generator makes valid results");
            let record = Outbound {
                topic: topic.clone(),
                key: Some(id.to_string().into_bytes()),
                payload: serde_json::to_vec(&user).expect("a json object serializes"),
                headers: Vec::new(),
            };
            (id, record)
        })
        .collect()
}

/// Publishes `users` generated users to `topic`: at `rate` users per second, else as fast as the broker
/// takes them (generated beforehand, so the publisher only produces). Returns once every one is
/// acknowledged.
pub async fn publish(
    producer: Producer,
    topic: String,
    users: usize,
    rate: Option<u64>,
) -> Publication {
    let mut generator = Generator::new(Some(42));
    let mut published_at = HashMap::with_capacity(users);
    let mut in_flight = JoinSet::new();
    let mut first = Utc::now();
    match rate {
        None => {
            let all = records(&mut generator, &topic, users);
            first = Utc::now();
            for chunk in all.chunks(CHUNK) {
                while in_flight.len() >= IN_FLIGHT {
                    in_flight.join_next().await;
                }
                let now = Utc::now();
                published_at.extend(chunk.iter().map(|(id, _)| (*id, now)));
                let records: Vec<Outbound> = chunk.iter().map(|(_, r)| r.clone()).collect();
                in_flight.spawn(deliver(producer.clone(), records));
            }
        }
        Some(rate) => {
            let started = Instant::now();
            let mut ticker = tokio::time::interval(Duration::from_millis(10));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut sent = 0;
            while sent < users {
                ticker.tick().await;
                let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(users);
                let n = due.saturating_sub(sent);
                if n == 0 {
                    continue;
                }
                let now = Utc::now();
                let chunk = records(&mut generator, &topic, n);
                published_at.extend(chunk.iter().map(|(id, _)| (*id, now)));
                // Not waiting for the acknowledgements: the next tick must come on time.
                in_flight.spawn(deliver(
                    producer.clone(),
                    chunk.into_iter().map(|(_, r)| r).collect(),
                ));
                sent += n;
                // Reap what is done, so the set does not grow over a long run.
                while in_flight.try_join_next().is_some() {}
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
    Publication {
        published_at,
        first,
        last: Utc::now(),
    }
}

async fn deliver(producer: Producer, records: Vec<Outbound>) {
    // Never abandoned: delivery retries until the broker takes every record.
    let never = CancellationToken::new();
    let _ = kafka::deliver_all(&producer, &records, &never).await;
}
