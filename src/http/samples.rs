//! The pipeline's last hour, for the status page's charts: every [`SAMPLE_EVERY`] the sampler reads this
//! process's stage counters and its consumer groups' lag (both from `metrics`) into a ring of [`SLOTS`]
//! slots of 32 bytes (7.5 KB in all), and the dead-letter topics' sizes from Kafka. Turning the ring into
//! rates ([`Ring::series`]) is pure and tested here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, dead_letter_topic};
use crate::kafka::Probe;
use crate::metrics::METRICS;

/// How often the sampler reads the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Slots kept: one hour of samples.
pub const SLOTS: usize = 3600 / SAMPLE_EVERY.as_secs() as usize;

/// The consuming stages, in the order of the flow; the ring keeps one column each.
pub const STAGES: [&str; 3] = ["timestamp", "tags", "sink"];

/// How long one read of a dead-letter topic's size may wait for Kafka.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(1);

/// Cumulative counts at one instant, as read from `metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Messages each stage took from its input topic.
    pub consumed: [u64; 3],
    /// Rows the sink newly wrote.
    pub written: u64,
    /// Each stage's consumer lag (`None`: unknown).
    pub lag: [Option<i64>; 3],
}

/// One interval: what came through during it, and the lag at its end (`u32::MAX`: unknown).
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Seconds since the ring's epoch, at the end of the interval.
    at: u32,
    consumed: [u32; 3],
    written: u32,
    lag: [u32; 3],
}

const UNKNOWN_LAG: u32 = u32::MAX;

/// The bounded history: the last [`SLOTS`] intervals.
#[derive(Debug)]
pub struct Ring {
    /// Unix seconds when the ring was made; slots count from it.
    epoch: i64,
    /// The previous reading and when it was taken (seconds since the epoch).
    last: Option<(u32, Reading)>,
    slots: VecDeque<Slot>,
}

/// One stage's columns, as `/api/pipeline` answers them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageSeries {
    pub stage: &'static str,
    /// Messages per second taken from the input topic, per interval.
    pub rate: Vec<f64>,
    /// Consumer lag at the end of each interval (`null`: unknown).
    pub lag: Vec<Option<u32>>,
    /// The sink only: rows newly written per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<f64>>,
}

/// The ring as columns: the end of each interval (Unix milliseconds), then each stage's values.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    pub at: Vec<i64>,
    pub stages: Vec<StageSeries>,
}

fn narrow(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Per second over `seconds`, to two decimals.
fn per_second(count: u32, seconds: u32) -> f64 {
    (f64::from(count) / f64::from(seconds.max(1)) * 100.0).round() / 100.0
}

impl Ring {
    pub fn new(epoch: i64) -> Self {
        Self {
            epoch,
            last: None,
            slots: VecDeque::with_capacity(SLOTS),
        }
    }

    /// Adds the interval from the previous reading to `reading`, taken at `at` (Unix seconds). The first
    /// reading only sets the baseline.
    pub fn record(&mut self, at: i64, reading: Reading) {
        let at = u32::try_from((at - self.epoch).max(0)).unwrap_or(u32::MAX);
        if let Some((before, previous)) = self.last
            && at > before
        {
            let delta = |now: u64, then: u64| narrow(now.saturating_sub(then));
            let slot = Slot {
                at,
                consumed: std::array::from_fn(|i| delta(reading.consumed[i], previous.consumed[i])),
                written: delta(reading.written, previous.written),
                lag: reading.lag.map(|l| {
                    l.map_or(UNKNOWN_LAG, |l| {
                        narrow(l.max(0) as u64).min(UNKNOWN_LAG - 1)
                    })
                }),
            };
            if self.slots.len() == SLOTS {
                self.slots.pop_front();
            }
            self.slots.push_back(slot);
        }
        if self.last.is_none_or(|(before, _)| at > before) {
            self.last = Some((at, reading));
        }
    }

    /// The ring as rates per interval, oldest first.
    pub fn series(&self) -> Series {
        let mut previous = self
            .slots
            .front()
            .map(|s| s.at.saturating_sub(SAMPLE_EVERY.as_secs() as u32))
            .unwrap_or(0);
        let mut seconds = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            seconds.push(slot.at - previous);
            previous = slot.at;
        }
        let stages = STAGES
            .iter()
            .enumerate()
            .map(|(i, &stage)| StageSeries {
                stage,
                rate: self
                    .slots
                    .iter()
                    .zip(&seconds)
                    .map(|(s, &secs)| per_second(s.consumed[i], secs))
                    .collect(),
                lag: self
                    .slots
                    .iter()
                    .map(|s| (s.lag[i] != UNKNOWN_LAG).then_some(s.lag[i]))
                    .collect(),
                rows: (stage == "sink").then(|| {
                    self.slots
                        .iter()
                        .zip(&seconds)
                        .map(|(s, &secs)| per_second(s.written, secs))
                        .collect()
                }),
            })
            .collect();
        Series {
            at: self
                .slots
                .iter()
                .map(|s| (self.epoch + i64::from(s.at)) * 1000)
                .collect(),
            stages,
        }
    }
}

/// A dead-letter topic and the messages it holds now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetters {
    pub topic: String,
    /// Messages in the topic (`None`: Kafka did not say, see `error`).
    pub messages: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the sampler keeps, shared with the handlers.
#[derive(Debug)]
pub struct Samples {
    pub ring: Mutex<Ring>,
    pub dead_letters: Mutex<Vec<DeadLetters>>,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            ring: Mutex::new(Ring::new(Utc::now().timestamp())),
            dead_letters: Mutex::default(),
        }
    }
}

/// The consumer group of each stage in [`STAGES`].
pub fn groups(config: &Config) -> [String; 3] {
    STAGES.map(|stage| config.kafka.group(stage))
}

/// The input topic of each stage in [`STAGES`].
pub fn inputs(config: &Config) -> [String; 3] {
    let t = &config.topics;
    [t.users.clone(), t.timestamped.clone(), t.enriched.clone()]
}

/// This process's counts now.
fn read(groups: &[String; 3]) -> Reading {
    let totals = STAGES.map(|stage| METRICS.stage_totals(stage));
    Reading {
        consumed: totals.map(|t| t.consumed),
        written: totals[2].produced,
        lag: std::array::from_fn(|i| METRICS.group_lag(&groups[i])),
    }
}

/// Fills `samples` every [`SAMPLE_EVERY`] until `shutdown`.
pub async fn sample(
    samples: Arc<Samples>,
    config: Arc<Config>,
    kafka: Arc<Probe>,
    shutdown: CancellationToken,
) {
    let groups = groups(&config);
    let topics: Vec<String> = inputs(&config)
        .iter()
        .map(|t| dead_letter_topic(t))
        .collect();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let reading = read(&groups);
        samples
            .ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(Utc::now().timestamp(), reading);
        let (kafka, topics) = (kafka.clone(), topics.clone());
        let sizes = tokio::task::spawn_blocking(move || dead_letter_sizes(&kafka, &topics)).await;
        if let Ok(sizes) = sizes {
            *samples
                .dead_letters
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = sizes;
        }
    }
}

/// The size of each dead-letter topic; once Kafka fails to answer, the rest are not asked.
fn dead_letter_sizes(kafka: &Probe, topics: &[String]) -> Vec<DeadLetters> {
    let mut failed: Option<String> = None;
    topics
        .iter()
        .map(|topic| {
            let result = match &failed {
                Some(error) => Err(error.clone()),
                None => kafka.messages_in(topic, TOPIC_TIMEOUT),
            };
            if let Err(e) = &result {
                failed.get_or_insert_with(|| e.clone());
            }
            DeadLetters {
                topic: topic.clone(),
                messages: result.as_ref().ok().copied(),
                error: result.err(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(consumed: [u64; 3], written: u64, lag: [Option<i64>; 3]) -> Reading {
        Reading {
            consumed,
            written,
            lag,
        }
    }

    #[test]
    fn intervals_become_rates_per_second() {
        let mut ring = Ring::new(1_000);
        ring.record(1_000, reading([100, 50, 0], 0, [None; 3]));
        assert!(
            ring.series().at.is_empty(),
            "the first reading is the baseline"
        );
        ring.record(1_015, reading([400, 50, 30], 30, [Some(12), Some(0), None]));
        ring.record(1_030, reading([400, 50, 30], 30, [Some(0), Some(0), None]));
        let series = ring.series();
        assert_eq!(series.at, [1_015_000, 1_030_000]);
        let timestamp = &series.stages[0];
        assert_eq!(timestamp.stage, "timestamp");
        assert_eq!(timestamp.rate, [20.0, 0.0], "300 in 15 s, then none");
        assert_eq!(timestamp.lag, [Some(12), Some(0)]);
        assert_eq!(timestamp.rows, None);
        let sink = &series.stages[2];
        assert_eq!(sink.rate, [2.0, 0.0]);
        assert_eq!(sink.rows.as_deref(), Some(&[2.0, 0.0][..]));
        assert_eq!(sink.lag, [None, None], "unknown lag stays unknown");
    }

    #[test]
    fn the_ring_keeps_one_hour_and_no_more() {
        let mut ring = Ring::new(0);
        let step = SAMPLE_EVERY.as_secs() as i64;
        for i in 0..(SLOTS as i64 + 50) {
            ring.record(i * step, reading([i as u64 * 3; 3], 0, [Some(1); 3]));
        }
        let series = ring.series();
        assert_eq!(series.at.len(), SLOTS);
        assert_eq!(
            *series.at.last().unwrap(),
            (SLOTS as i64 + 49) * step * 1000
        );
        assert!(
            series.stages[0].rate.iter().all(|r| *r == 0.2),
            "3 per 15 s"
        );
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert!(SLOTS * std::mem::size_of::<Slot>() <= 8 * 1024);
    }

    #[test]
    fn a_clock_going_back_or_a_repeated_second_adds_no_interval() {
        let mut ring = Ring::new(100);
        ring.record(100, reading([0; 3], 0, [None; 3]));
        ring.record(115, reading([15; 3], 0, [None; 3]));
        ring.record(110, reading([30; 3], 0, [None; 3]));
        ring.record(115, reading([30; 3], 0, [None; 3]));
        assert_eq!(ring.series().at.len(), 1);
        ring.record(130, reading([45; 3], 0, [Some(-3), Some(i64::MAX), None]));
        let series = ring.series();
        assert_eq!(series.stages[0].rate, [1.0, 2.0]);
        assert_eq!(
            series.stages[0].lag[1],
            Some(0),
            "a negative lag reads as none"
        );
        assert_eq!(
            series.stages[1].lag[1],
            Some(u32::MAX - 1),
            "a huge lag saturates"
        );
    }
}
