//! The process's Prometheus metrics: one registry, filled by the stages, the sink, the Kafka consumers'
//! statistics and the journal, and rendered by `GET /metrics` in the OpenMetrics text format.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Labels of a job-duration metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub schedule: String,
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
    pub last_verified_backup: Gauge<f64, AtomicU64>,
    /// `pg_stat_archiver.failed_count`, read at scrape time (-1: unknown).
    pub archiver_failed: Gauge,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn job_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("userpipe");
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
            archiver_failed: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "consumed",
            "Messages taken from the stage's input topic",
            metrics.consumed.clone(),
        );
        registry.register(
            "produced",
            "Records produced by a stage, or rows newly written by the sink",
            metrics.produced.clone(),
        );
        registry.register(
            "dead_lettered",
            "Messages set aside in a dead-letter topic",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "failed",
            "Transient failures that were retried",
            metrics.failed.clone(),
        );
        registry.register(
            "consumer_lag",
            "Messages behind the end of the partition",
            metrics.consumer_lag.clone(),
        );
        registry.register(
            "sink_batch_rows",
            "Rows per sink transaction",
            metrics.sink_batch_rows.clone(),
        );
        registry.register(
            "sink_batch_seconds",
            "Seconds per sink transaction, retries included",
            metrics.sink_batch_seconds.clone(),
        );
        registry.register(
            "job_runs",
            "Finished job-run attempts",
            metrics.job_runs.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Seconds per job-run attempt",
            metrics.job_seconds.clone(),
        );
        registry.register(
            "last_verified_backup_timestamp_seconds",
            "Unix time of the newest verified base backup, 0 when there is none",
            metrics.last_verified_backup.clone(),
        );
        registry.register(
            "pg_archiver_failed",
            "Failed WAL archiving attempts (pg_stat_archiver.failed_count), -1 when unknown",
            metrics.archiver_failed.clone(),
        );
        Self {
            registry,
            ..metrics
        }
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

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One stage's counters, fetched once so the hot path does no label lookup.
#[derive(Clone, Debug)]
pub struct StageCounters {
    pub consumed: Counter,
    pub produced: Counter,
    pub dead_lettered: Counter,
    pub failed: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_labels() {
        let counters = METRICS.stage("unit-test");
        counters.consumed.inc_by(3);
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
}
