//! The process's Prometheus metrics: one registry, filled by the stages, the sink, the Kafka consumers'
//! statistics, the scheduler (runs, freshness, notifications) and, at scrape time, the archiver's
//! statistics; rendered by `GET /metrics` in the OpenMetrics text format. Names follow Prometheus's
//! conventions: base units (`_seconds`, `_timestamp_seconds`), counters end in `_total`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

/// The prefix of every metric name.
const PREFIX: &str = "userpipe";

/// A gauge holding a float (times, ages).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Labels of a per-stage metric (`timestamp`, `tags`, `sink`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

/// Labels of a consumer's lag on one partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// Labels of a job-run metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub schedule: String,
    pub status: String,
}

/// Labels of a per-schedule metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub schedule: String,
}

/// Labels of the notifications counter: `result` is `sent` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub schedule: String,
    pub result: String,
}

/// Labels of `userpipe_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The archiver's statistics (`pg_stat_archiver` and the segments waiting), as read at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchiverReading {
    pub archived: u64,
    pub failed: u64,
    /// Unix time of the last archived segment; 0 when none was.
    pub last_archived: f64,
    /// Unix time of the last failed attempt; 0 when none failed.
    pub last_failed: f64,
    /// Finished segments waiting for the archive.
    pub pending_segments: i64,
    /// Seconds the oldest of them has waited; 0 when none waits.
    pub oldest_pending_seconds: f64,
}

/// Every metric userpipe exports.
pub struct Metrics {
    registry: Registry,
    /// Messages taken from the stage's input topic.
    pub consumed: Family<StageLabels, Counter>,
    /// Records produced (stages) or rows newly written (sink).
    pub produced: Family<StageLabels, Counter>,
    /// Messages set aside in the dead-letter topic.
    pub dead_lettered: Family<StageLabels, Counter>,
    /// Transient failures that were retried (a delivery or a database write).
    pub failed: Family<StageLabels, Counter>,
    /// Messages behind the end of each partition, per consumer group.
    pub consumer_lag: Family<LagLabels, Gauge>,
    /// Rows per sink transaction.
    pub sink_batch_rows: Histogram,
    /// Seconds per sink transaction, retries included.
    pub sink_batch_seconds: Histogram,
    /// Finished job-run attempts by schedule and status.
    pub job_runs: Family<RunLabels, Counter>,
    /// Seconds per job-run attempt.
    pub job_seconds: Family<ScheduleLabels, Histogram>,
    /// Unix time of the newest verified base backup (0: none), read at scrape time.
    pub last_verified_backup: FloatGauge,
    /// Unix time each schedule last finished a run that succeeded (0: none known).
    pub job_last_success: Family<ScheduleLabels, FloatGauge>,
    /// Unix time each schedule last finished a run, whatever its status (skipped ones aside; 0: none).
    pub job_last_run: Family<ScheduleLabels, FloatGauge>,
    /// Runs of each schedule going now in this process.
    pub job_running: Family<ScheduleLabels, Gauge>,
    /// Unix time of each enabled schedule's next firing.
    pub job_next_fire: Family<ScheduleLabels, FloatGauge>,
    /// Firings skipped by the overlap guard (the previous run was still going).
    pub job_skipped: Family<ScheduleLabels, Counter>,
    /// Notifications posted (`result="sent"`) or given up on (`result="failed"`).
    pub notifications: Family<NotifyLabels, Counter>,
    /// The archiver's statistics, set by `/metrics` before it renders (none: unknown, nothing exported).
    archiver: Arc<ArchiverCollector>,
    /// The sample names the registry exports, as Prometheus sees them.
    names: Vec<String>,
    /// Each consumer group's lag summed over the partitions its member here owns, from the latest
    /// statistics (`None`: it owns none). Not exported: the status page's charts read it.
    group_lag: Mutex<HashMap<String, Option<i64>>>,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn job_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

impl Metrics {
    fn new() -> Self {
        let metrics = Self {
            consumed: Family::default(),
            produced: Family::default(),
            dead_lettered: Family::default(),
            failed: Family::default(),
            consumer_lag: Family::default(),
            sink_batch_rows: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            sink_batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            job_runs: Family::default(),
            job_seconds: Family::new_with_constructor(job_histogram),
            last_verified_backup: Gauge::default(),
            job_last_success: Family::default(),
            job_last_run: Family::default(),
            job_running: Family::default(),
            job_next_fire: Family::default(),
            job_skipped: Family::default(),
            notifications: Family::default(),
            archiver: Arc::default(),
            names: Vec::new(),
            group_lag: Mutex::default(),
            registry: Registry::default(),
        };
        let mut registry = Names {
            registry: Registry::with_prefix(PREFIX),
            names: Vec::new(),
        };
        let m = &metrics;
        registry.add(
            "consumed",
            "Messages taken from the stage's input topic",
            &m.consumed,
        );
        registry.add(
            "produced",
            "Records produced by a stage, or rows newly written by the sink",
            &m.produced,
        );
        registry.add(
            "dead_lettered",
            "Messages set aside in a dead-letter topic",
            &m.dead_lettered,
        );
        registry.add("failed", "Transient failures that were retried", &m.failed);
        registry.add(
            "consumer_lag",
            "Messages behind the end of the partition",
            &m.consumer_lag,
        );
        registry.add(
            "sink_batch_rows",
            "Rows per sink transaction",
            &m.sink_batch_rows,
        );
        registry.add(
            "sink_batch_seconds",
            "Seconds per sink transaction, retries included",
            &m.sink_batch_seconds,
        );
        registry.add("job_runs", "Finished job-run attempts", &m.job_runs);
        registry.add(
            "job_duration_seconds",
            "Seconds per job-run attempt",
            &m.job_seconds,
        );
        registry.add(
            "last_verified_backup_timestamp_seconds",
            "Unix time of the newest verified base backup, 0 when there is none",
            &m.last_verified_backup,
        );
        registry.add(
            "job_last_success_timestamp_seconds",
            "Unix time the schedule last finished a successful run, 0 when none is known",
            &m.job_last_success,
        );
        registry.add(
            "job_last_run_timestamp_seconds",
            "Unix time the schedule last finished a run (skipped ones aside), 0 when none is known",
            &m.job_last_run,
        );
        registry.add(
            "job_running",
            "Runs of the schedule going now",
            &m.job_running,
        );
        registry.add(
            "job_next_fire_timestamp_seconds",
            "Unix time of the schedule's next firing",
            &m.job_next_fire,
        );
        registry.add(
            "job_skipped",
            "Firings skipped because the previous run was still going",
            &m.job_skipped,
        );
        registry.add(
            "notifications",
            "Notifications of job runs, by result (sent or failed)",
            &m.notifications,
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.add(
            "build_info",
            "The userpipe version running, as its label",
            &build,
        );
        for (name, kind) in ARCHIVER_METRICS {
            registry.names.extend(sample_names(name, kind));
        }
        registry
            .registry
            .register_collector(Box::new(metrics.archiver.clone()));
        Self {
            registry: registry.registry,
            names: registry.names,
            ..metrics
        }
    }

    /// Sets what the archiver metrics export; `None` when the statistics could not be read.
    pub fn set_archiver(&self, reading: Option<ArchiverReading>) {
        *self
            .archiver
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = reading;
    }

    /// Every sample name `/metrics` can export (`userpipe_consumed_total`, `userpipe_job_duration_seconds_bucket`,
    /// ...), whether or not it has a sample yet.
    pub fn sample_names(&self) -> &[String] {
        &self.names
    }

    /// Counts for one stage.
    pub fn stage(&self, stage: &str) -> StageCounters {
        let labels = StageLabels {
            stage: stage.to_owned(),
        };
        StageCounters {
            consumed: self.consumed.get_or_create(&labels).clone(),
            produced: self.produced.get_or_create(&labels).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&labels).clone(),
            failed: self.failed.get_or_create(&labels).clone(),
        }
    }

    /// Records a consumer group's total lag from its latest statistics.
    pub fn set_group_lag(&self, group: &str, lag: Option<i64>) {
        self.group_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.to_owned(), lag);
    }

    /// A consumer group's total lag over the partitions its member in this process owns; `None` before
    /// its first statistics or while it owns no partition.
    pub fn group_lag(&self, group: &str) -> Option<i64> {
        self.group_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .copied()
            .flatten()
    }

    /// A stage's counts so far in this process (zeros before it counted anything).
    pub fn stage_totals(&self, stage: &str) -> StageTotals {
        let labels = StageLabels {
            stage: stage.to_owned(),
        };
        let read =
            |family: &Family<StageLabels, Counter>| family.get(&labels).map_or(0, |c| c.get());
        StageTotals {
            consumed: read(&self.consumed),
            produced: read(&self.produced),
            dead_lettered: read(&self.dead_lettered),
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A stage's counts so far, as read by the status page's sampler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTotals {
    pub consumed: u64,
    pub produced: u64,
    pub dead_lettered: u64,
}

/// One stage's counters, fetched once so the hot path does no label lookup.
#[derive(Clone, Debug)]
pub struct StageCounters {
    pub consumed: Counter,
    pub produced: Counter,
    pub dead_lettered: Counter,
    pub failed: Counter,
}

/// The registry while it is filled, with the sample names of what it holds.
struct Names {
    registry: Registry,
    names: Vec<String>,
}

impl Names {
    fn add<M: Metric + TypedMetric + Clone>(&mut self, name: &str, help: &str, metric: &M) {
        self.names.extend(sample_names(name, M::TYPE));
        self.registry.register(name, help, metric.clone());
    }
}

/// The sample names a metric of `kind` registered as `name` exports.
fn sample_names(name: &str, kind: MetricType) -> Vec<String> {
    let name = format!("{PREFIX}_{name}");
    match kind {
        MetricType::Counter => vec![format!("{name}_total")],
        MetricType::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect(),
        MetricType::Info => vec![format!("{name}_info")],
        _ => vec![name],
    }
}

/// The archiver's metrics, read by `/metrics` just before it renders.
const ARCHIVER_METRICS: [(&str, MetricType); 6] = [
    ("pg_archiver_archived", MetricType::Counter),
    ("pg_archiver_failed", MetricType::Counter),
    (
        "pg_archiver_last_archived_timestamp_seconds",
        MetricType::Gauge,
    ),
    (
        "pg_archiver_last_failed_timestamp_seconds",
        MetricType::Gauge,
    ),
    ("pg_archiver_pending_segments", MetricType::Gauge),
    ("pg_archiver_oldest_pending_seconds", MetricType::Gauge),
];

/// Exports the last archiver reading: counters as counters (`_total`), nothing at all when unknown.
#[derive(Debug, Default)]
struct ArchiverCollector {
    reading: Mutex<Option<ArchiverReading>>,
}

impl Collector for ArchiverCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = self
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let helps = [
            "WAL segments archived (pg_stat_archiver.archived_count)",
            "Failed WAL archiving attempts (pg_stat_archiver.failed_count)",
            "Unix time the last WAL segment was archived, 0 when none was",
            "Unix time of the last failed archiving attempt, 0 when none failed",
            "Finished WAL segments waiting for the archive",
            "Seconds the oldest waiting WAL segment has waited, 0 when none waits",
        ];
        let counters = [r.archived, r.failed];
        let gauges = [
            r.last_archived,
            r.last_failed,
            r.pending_segments as f64,
            r.oldest_pending_seconds,
        ];
        for (i, ((name, kind), help)) in ARCHIVER_METRICS.iter().zip(helps).enumerate() {
            let metric = encoder.encode_descriptor(name, help, None, *kind)?;
            match counters.get(i) {
                Some(value) => ConstCounter::new(*value).encode(metric)?,
                None => ConstGauge::new(gauges[i - counters.len()]).encode(metric)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_labels() {
        let counters = METRICS.stage("unit-test");
        counters.consumed.inc_by(3);
        assert_eq!(METRICS.stage_totals("unit-test").consumed, 3);
        assert_eq!(
            METRICS.stage_totals("no-such-stage"),
            StageTotals::default()
        );
        METRICS.set_group_lag("unit-test-group", Some(7));
        assert_eq!(METRICS.group_lag("unit-test-group"), Some(7));
        assert_eq!(METRICS.group_lag("no-such-group"), None);
        let text = METRICS.render();
        assert!(
            text.contains("userpipe_consumed_total{stage=\"unit-test\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE userpipe_sink_batch_rows histogram"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_archiver_is_exported_as_counters_and_not_at_all_when_unknown() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("pg_archiver"));
        metrics.set_archiver(Some(ArchiverReading {
            archived: 12,
            failed: 3,
            last_archived: 1_700_000_000.5,
            last_failed: 0.0,
            pending_segments: 2,
            oldest_pending_seconds: 4.25,
        }));
        let text = metrics.render();
        for line in [
            "# TYPE userpipe_pg_archiver_failed counter",
            "userpipe_pg_archiver_failed_total 3",
            "userpipe_pg_archiver_archived_total 12",
            "userpipe_pg_archiver_last_archived_timestamp_seconds 1700000000.5",
            "userpipe_pg_archiver_last_failed_timestamp_seconds 0",
            "userpipe_pg_archiver_pending_segments 2",
            "userpipe_pg_archiver_oldest_pending_seconds 4.25",
            "userpipe_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(!text.contains("-1"), "{text}");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for name in METRICS.sample_names() {
            assert!(name.starts_with("userpipe_"), "{name}");
            assert!(
                !["_ms", "_millis", "_minutes", "_hours", "_kb", "_mb"]
                    .iter()
                    .any(|unit| name.contains(unit)),
                "{name} is not in base units"
            );
            assert!(name.matches("_total").count() <= 1, "{name}");
            assert!(
                !name.contains("_total") || name.ends_with("_total"),
                "{name}: only counters end in _total"
            );
        }
    }

    #[test]
    fn every_rendered_sample_has_its_name_listed() {
        let metrics = Metrics::new();
        metrics.stage("s").consumed.inc();
        metrics.sink_batch_rows.observe(3.0);
        metrics.set_archiver(Some(ArchiverReading::default()));
        let names = metrics.sample_names();
        for line in metrics.render().lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(names.iter().any(|n| n == name), "{name} is not listed");
        }
        assert!(names.contains(&"userpipe_job_skipped_total".to_owned()));
        assert!(names.contains(&"userpipe_job_duration_seconds_count".to_owned()));
    }
}
