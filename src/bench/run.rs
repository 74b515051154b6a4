//! One benchmark run: a fresh database and fresh topics, the ceiling's `COPY`, the pipeline's processes,
//! the publisher, watching the rows arrive, the figures; everything it made is removed afterwards.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::time::Instant;
use uuid::Uuid;

use super::ceiling::{self, Ceiling};
use super::figures::{Figures, Published, percentile, window_length, windows};
use super::publish::{Publication, publish};
use super::replicas::Replicas;
use crate::config::Config;
use crate::db;
use crate::kafka;
use crate::pipeline::topics;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Users to push through.
    pub users: usize,
    /// Steady publish rate in users per second; `None` publishes as fast as Kafka takes them.
    pub rate: Option<u64>,
    /// Publish every user before the pipeline starts, then time only the pipeline draining them, from
    /// the first row to the last: how fast it catches up after an outage (no latency figures then).
    pub preload: bool,
    /// Pipeline processes sharing the consumer groups.
    pub replicas: usize,
    /// Kill one replica (SIGKILL) once a third of the users have landed.
    pub kill_one: bool,
    /// Rows of the ceiling's `COPY`.
    pub ceiling_rows: usize,
}

/// How often the run is watched: the replicas' usage, the rows' progress.
const TICK: Duration = Duration::from_millis(200);
/// The exact row count is asked at most this often, and only near the end.
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// PostgreSQL's statistics reach the view within a second of a busy connection's work, and within ten
/// of an idle one's: when they have not moved for longer, the rows are counted.
const STATISTICS_LAG: Duration = Duration::from_secs(11);
/// A run whose rows stop growing for this long has failed.
const STALL: Duration = Duration::from_secs(120);

/// Runs the benchmark against the configured stack.
pub async fn run(config: &Config, options: &BenchOptions) -> anyhow::Result<Figures> {
    if options.kill_one && options.replicas < 2 {
        bail!("--kill-one needs --replicas 2 or more: the others must take over");
    }
    let tag = Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut config = config.clone();
    config.kafka.group_prefix = format!("bench-{tag}");
    config.topics = config.topics.prefixed(&format!("bench-{tag}."));
    let database = format!("userpipe_bench_{tag}");

    let admin = db::connect_options(config.database.url.expose())?;
    execute_admin(&admin, &format!(r#"CREATE DATABASE "{database}""#)).await?;
    let outcome = measure(&config, options, &admin, &database).await;
    let names: Vec<String> = topics::specs(&config, &config.topics)
        .into_iter()
        .map(|s| s.name)
        .collect();
    let deleted = kafka::delete_topics(&config.kafka.brokers, &names).await;
    execute_admin(
        &admin,
        &format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#),
    )
    .await?;
    let figures = outcome?;
    deleted?;
    Ok(figures)
}

async fn measure(
    config: &Config,
    options: &BenchOptions,
    admin: &PgConnectOptions,
    database: &str,
) -> anyhow::Result<Figures> {
    let pool = db::connect_with(admin.clone().database(database), 2).await?;
    db::migrate(&pool).await?;
    topics::ensure(config, &config.topics).await?;
    let ceiling = ceiling::measure(&pool, options.ceiling_rows).await?;
    let database_url = database_url(config.database.url.expose(), database)?;
    let producer = kafka::producer(&config.kafka)?;
    let topic = config.topics.users.clone();

    let publication = if options.preload {
        Some(publish(producer.clone(), topic.clone(), options.users, None).await)
    } else {
        None
    };
    let mut replicas = Replicas::start(config, &database_url, options.replicas)?;
    wait_for_groups(config, options.replicas, &mut replicas).await?;
    let publisher = match publication {
        Some(done) => tokio::spawn(async move { done }),
        None => tokio::spawn(publish(producer, topic, options.users, options.rate)),
    };
    let watched = watch(&pool, options, &mut replicas).await;
    let stopped = replicas.stop().await;
    let watched = watched?;
    stopped?;
    let publication = publisher.await.context("the publisher panicked")?;
    let figures = figures(&pool, options, ceiling, &publication, &watched).await;
    pool.close().await;
    figures
}

/// The URL of the benchmark's database, for the replicas.
fn database_url(url: &str, database: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(url)
        .map_err(|_| anyhow::anyhow!("database.url must be a postgres:// url for the benchmark"))?;
    url.set_path(database);
    Ok(url.to_string())
}

/// Waits until every replica is a member of each of the three consumer groups.
async fn wait_for_groups(
    config: &Config,
    replicas: usize,
    processes: &mut Replicas,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for role in ["timestamp", "tags", "sink"] {
        let group = config.kafka.group(role);
        while kafka::stable_members(&config.kafka.brokers, &group).await? < replicas {
            processes.sample()?;
            if Instant::now() > deadline {
                bail!(
                    "the pipeline's processes did not all join consumer group {group} within 60 s"
                );
            }
            tokio::time::sleep(TICK).await;
        }
    }
    Ok(())
}

/// What was seen while the rows arrived.
struct Watched {
    /// (when, CPU seconds of the replicas (user, system)).
    cpu: Vec<(DateTime<Utc>, (f64, f64))>,
    /// (when, the largest replica's resident memory in MB).
    rss: Vec<(DateTime<Utc>, f64)>,
    peak_rss_kb: u64,
    killed_after: Option<u64>,
}

/// Watches until every row is in. Progress comes from PostgreSQL's statistics (no scan of the table),
/// which lag by up to a second, ten when idle: the exact count is asked only when they say the end is
/// reached or have stopped moving for longer than that, at most once a second. Watching never loads
/// the system being measured.
async fn watch(
    pool: &PgPool,
    options: &BenchOptions,
    replicas: &mut Replicas,
) -> anyhow::Result<Watched> {
    let target = options.users as u64;
    let progress = ProgressBar::new(target);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} rows {per_sec} {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut watched = Watched {
        cpu: Vec::new(),
        rss: Vec::new(),
        peak_rss_kb: 0,
        killed_after: None,
    };
    let mut ticker = tokio::time::interval(TICK);
    let (mut hint, mut moved, mut counted) = (0, Instant::now(), Instant::now() - COUNT_EVERY);
    let mut rows = 0;
    loop {
        ticker.tick().await;
        replicas.sample()?;
        let now = Utc::now();
        watched.cpu.push((now, replicas.cpu()));
        let (rss_kb, peak_kb) = replicas.rss_kb();
        watched.rss.push((now, rss_kb as f64 / 1024.0));
        watched.peak_rss_kb = watched.peak_rss_kb.max(peak_kb);

        let inserted = inserted_hint(pool).await?;
        if inserted > hint {
            (hint, moved) = (inserted, Instant::now());
        }
        progress.set_position(hint.max(rows).min(target));
        // The statistics lag by seconds under load: the moment to kill is found by counting (a small
        // table then, and only in this mode, which checks delivery rather than speed).
        if options.kill_one && watched.killed_after.is_none() {
            let landed = row_count(pool).await?;
            if landed >= target / 3 {
                replicas.kill(options.replicas - 1).await?;
                watched.killed_after = Some(landed);
            }
        }
        let near_end = hint >= target || moved.elapsed() >= STATISTICS_LAG;
        if near_end && counted.elapsed() >= COUNT_EVERY {
            counted = Instant::now();
            let exact = row_count(pool).await?;
            if exact > rows {
                (rows, moved) = (exact, Instant::now());
            }
            if rows >= target {
                break;
            }
        }
        if moved.elapsed() >= STALL {
            bail!(
                "rows stopped at {rows} of {target} for {} s",
                STALL.as_secs()
            );
        }
    }
    progress.finish_and_clear();
    Ok(watched)
}

/// Works out the figures once every row is in, checking each user landed exactly once.
async fn figures(
    pool: &PgPool,
    options: &BenchOptions,
    ceiling: Ceiling,
    publication: &Publication,
    watched: &Watched,
) -> anyhow::Result<Figures> {
    let rows: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, ingested_at FROM random_users")
            .fetch_all(pool)
            .await?;
    let published = &publication.published_at;
    let strangers = rows.iter().filter(|(id, _)| !published.contains_key(id));
    if rows.len() != options.users || strangers.count() > 0 {
        bail!(
            "{} rows for {} published users: each should land exactly once",
            rows.len(),
            options.users
        );
    }
    let first_row = rows
        .iter()
        .map(|(_, t)| *t)
        .min()
        .unwrap_or(publication.first);
    let last_row = rows
        .iter()
        .map(|(_, t)| *t)
        .max()
        .unwrap_or(publication.first);
    let started = if options.preload {
        first_row
    } else {
        publication.first
    };
    let seconds = micros(last_row - started) / 1e6;
    // The replicas' CPU time at the first reading after the last row.
    let cpu = watched
        .cpu
        .iter()
        .find(|(at, _)| *at >= last_row)
        .or(watched.cpu.last())
        .map_or((0.0, 0.0), |(_, cpu)| *cpu);

    let mut by_publish: Vec<(f64, f64)> = Vec::new();
    if !options.preload {
        by_publish = rows
            .iter()
            .map(|(id, row)| {
                let at = published[id];
                (
                    micros(at - publication.first) / 1e6,
                    micros(*row - at) / 1e3,
                )
            })
            .collect();
    }
    let mut latencies: Vec<f64> = by_publish.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let measured = !latencies.is_empty();
    let over_time = match options.rate {
        Some(_) => {
            let rss: Vec<(f64, f64)> = watched
                .rss
                .iter()
                .map(|(at, mb)| (micros(*at - publication.first) / 1e6, *mb))
                .collect();
            windows(&by_publish, &rss, window_length(publication.seconds()))
        }
        None => Vec::new(),
    };
    Ok(Figures {
        users: options.users,
        replicas: options.replicas,
        killed_after: watched.killed_after,
        ceiling,
        published: Published {
            users: options.users,
            seconds: publication.seconds(),
            asked: options.rate,
            preloaded: options.preload,
        },
        seconds,
        cpu,
        p50_ms: measured.then(|| percentile(&latencies, 0.50)),
        p99_ms: measured.then(|| percentile(&latencies, 0.99)),
        peak_rss_mb: watched.peak_rss_kb as f64 / 1024.0,
        windows: over_time,
    })
}

fn micros(span: chrono::TimeDelta) -> f64 {
    span.num_microseconds().unwrap_or(0) as f64
}

/// Rows inserted into `random_users` as PostgreSQL's statistics have them: no scan, but behind.
async fn inserted_hint(pool: &PgPool) -> anyhow::Result<u64> {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'random_users'",
    )
    .fetch_optional(pool)
    .await?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

async fn row_count(pool: &PgPool) -> anyhow::Result<u64> {
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
