//! `userpipe bench`: publishes generated users into fresh topics, runs the stages and the sink in-process
//! into a fresh database, and measures throughput, publish-to-row latency and peak memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::{self, Role};
use crate::config::Config;
use crate::db;
use crate::http::Roles;
use crate::kafka::{self, Outbound};
use crate::pipeline::fetch::generator::Generator;
use crate::pipeline::{record, topics};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Users to push through.
    pub users: usize,
    /// Steady publish rate in users per second; `None` publishes as fast as Kafka takes them.
    pub rate: Option<u64>,
    /// Publish every user before the pipeline starts, then time only the pipeline draining them, from the
    /// first row to the last: its capacity without the publisher competing for the cores (no latency
    /// figures then).
    pub preload: bool,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub users: usize,
    pub seconds: f64,
    pub users_per_second: f64,
    /// Publish-to-row latency; `None` for a preloaded run.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub peak_rss_mb: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let latency = match (self.p50_ms, self.p99_ms) {
            (Some(p50), Some(p99)) => format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
            _ => "not measured (users were preloaded)".to_owned(),
        };
        writeln!(f, "users: {}", self.users)?;
        writeln!(f, "elapsed: {:.2} s", self.seconds)?;
        writeln!(
            f,
            "throughput: {:.0} users/s end to end",
            self.users_per_second
        )?;
        writeln!(f, "latency publish->row: {latency}")?;
        write!(f, "peak rss: {:.1} MB", self.peak_rss_mb)
    }
}

/// Runs the benchmark against the configured stack; everything it creates is removed afterwards.
pub async fn run(config: &Config, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let tag = Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut config = config.clone();
    config.kafka.group_prefix = format!("bench-{tag}");
    config.topics = config.topics.prefixed(&format!("bench-{tag}."));
    let topics = config.topics.clone();
    let database = format!("userpipe_bench_{tag}");

    let admin = db::connect_options(config.database.url.expose())?;
    execute_admin(&admin, &format!(r#"CREATE DATABASE "{database}""#)).await?;
    let outcome = async {
        let pool = db::connect_with(
            admin.clone().database(&database),
            config.database.max_connections,
        )
        .await?;
        db::migrate(&pool).await?;
        topics::ensure(&config, &topics).await?;
        let progress = ProgressBar::new(options.users as u64);
        progress.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} rows {per_sec} {wide_bar} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut published_at = HashMap::with_capacity(options.users);
        if options.preload {
            publish(&config, &topics.users, options, &mut published_at, None).await?;
            published_at.clear();
        }
        let shutdown = CancellationToken::new();
        let started_at = Utc::now();
        let pipeline = {
            let (config, pool, shutdown) = (config.clone(), pool.clone(), shutdown.clone());
            let health = Arc::new(Roles::default());
            tokio::spawn(async move {
                app::run_roles(&config, &Role::PIPELINE, Some(pool), &health, shutdown).await
            })
        };
        if !options.preload {
            let watch = Some((&pool, &progress));
            publish(&config, &topics.users, options, &mut published_at, watch).await?;
        }
        let report = report(&pool, options, started_at, &published_at, &progress).await;
        shutdown.cancel();
        pipeline.await.context("the pipeline panicked")??;
        pool.close().await;
        let names: Vec<String> = topics::specs(&config, &topics)
            .into_iter()
            .map(|s| s.name)
            .collect();
        kafka::delete_topics(&config.kafka.brokers, &names).await?;
        report
    }
    .await;
    execute_admin(
        &admin,
        &format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#),
    )
    .await?;
    outcome
}

/// Publishes `options.users` generated users to `topic`, noting when each was published; with `watch`,
/// the progress bar follows the rows meanwhile.
async fn publish(
    config: &Config,
    topic: &str,
    options: &BenchOptions,
    published_at: &mut HashMap<Uuid, DateTime<Utc>>,
    watch: Option<(&sqlx::PgPool, &ProgressBar)>,
) -> anyhow::Result<()> {
    let producer = kafka::producer(&config.kafka)?;
    let never = CancellationToken::new();
    let mut generator = Generator::new(Some(42));
    // Chunks of 10 ms at a steady rate, else large chunks as fast as acknowledgements come back.
    let chunk = match options.rate {
        Some(rate) => ((rate / 100).max(1)) as usize,
        None => 5000,
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0;
    while sent < options.users {
        if options.rate.is_some() {
            ticker.tick().await;
        }
        let n = chunk.min(options.users - sent);
        let now = Utc::now();
        let records: Vec<Outbound> = (0..n)
            .map(|_| {
                let id = Uuid::new_v4();
                published_at.insert(id, now);
                let user = record::user_from_randomuser(&generator.result(), id, None)
                    .expect("the generator makes valid results");
                Outbound {
                    topic: topic.to_owned(),
                    key: Some(id.to_string().into_bytes()),
                    payload: serde_json::to_vec(&Value::Object(user)).unwrap_or_default(),
                    headers: Vec::new(),
                }
            })
            .collect();
        if options.rate.is_some() {
            // Do not wait for the acknowledgements: the next tick must come on time.
            let producer = producer.clone();
            let never = never.clone();
            tokio::spawn(async move { kafka::deliver_all(&producer, &records, &never).await });
        } else {
            kafka::deliver_all(&producer, &records, &never).await.ok();
        }
        sent += n;
        if let Some((pool, progress)) = watch {
            progress.set_position(row_count(pool).await?);
        }
    }
    Ok(())
}

/// Waits until every row exists, then works out the figures.
async fn report(
    pool: &sqlx::PgPool,
    options: &BenchOptions,
    started_at: DateTime<Utc>,
    published_at: &HashMap<Uuid, DateTime<Utc>>,
    progress: &ProgressBar,
) -> anyhow::Result<BenchReport> {
    loop {
        let rows = row_count(pool).await?;
        progress.set_position(rows);
        if rows >= options.users as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish_and_clear();
    let rows: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, ingested_at FROM random_users")
            .fetch_all(pool)
            .await?;
    let last = rows.iter().map(|(_, t)| *t).max().unwrap_or(started_at);
    // A preloaded run times the drain from its first row: the consumers' start (joining their groups) is
    // not the pipeline's capacity.
    let started_at = if options.preload {
        rows.iter().map(|(_, t)| *t).min().unwrap_or(started_at)
    } else {
        started_at
    };
    let mut latencies: Vec<f64> = rows
        .iter()
        .filter_map(|(id, t)| {
            published_at
                .get(id)
                .map(|p| (*t - *p).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let measured = !latencies.is_empty();
    let seconds = ((last - started_at).num_milliseconds() as f64 / 1000.0).max(0.001);
    Ok(BenchReport {
        users: options.users,
        seconds,
        users_per_second: options.users as f64 / seconds,
        p50_ms: measured.then(|| percentile(&latencies, 0.50)),
        p99_ms: measured.then(|| percentile(&latencies, 0.99)),
        peak_rss_mb: peak_rss_kb().unwrap_or(0) as f64 / 1024.0,
    })
}

async fn row_count(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM random_users")
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

/// `sql` on the admin database. Only for CREATE/DROP DATABASE, whose names cannot be bound parameters;
/// the names are made here from hex digits.
async fn execute_admin(admin: &PgConnectOptions, sql: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(admin)
        .await
        .context("cannot connect to postgresql")?;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(())
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak resident memory of this process (`VmHWM`), in KiB.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn reads_peak_rss() {
        assert!(peak_rss_kb().unwrap() > 0);
    }
}
