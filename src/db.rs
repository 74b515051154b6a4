//! PostgreSQL: the connection pool, the schema migrations, and which errors are the data's fault.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Opens a pool to `url`. The URL may hold a password, so it never appears in an error.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .context("the database url is not a valid postgres url")?;
    connect_with(options, max_connections).await
}

/// A pool that connects when first used, so a process can start, and serve what does not need the
/// database, while PostgreSQL is down.
pub fn lazy_pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .context("the database url is not a valid postgres url")?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Applies the schema migrations, retrying while PostgreSQL is unreachable, until done or `shutdown`.
/// Returns `Ok(false)` when shut down first.
pub async fn migrate_when_reachable(
    pool: &PgPool,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut delay = Duration::from_millis(500);
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(true),
            // Unreachable, or reachable but not writable (a read-only standby after a failover): wait.
            Err(sqlx::migrate::MigrateError::Execute(e)) if !is_data_error(&e) => {
                warn!(message = "cannot apply migrations, retrying", error = %e, retry_in_ms = delay.as_millis() as u64);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("cannot apply the database migrations"));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies the schema migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("cannot apply the database migrations")
}

/// Opens a pool with already parsed options.
pub async fn connect_with(
    options: PgConnectOptions,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let host = options.get_host().to_owned();
    let port = options.get_port();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to postgresql at {host}:{port}"))
}

/// A failure caused by the data itself: the database will refuse the same rows again, whatever else
/// changes. Class 22 (data exception: bad encoding, out-of-range value), class 23 (integrity constraint)
/// and 54000 (program limit exceeded: a value too large).
pub fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("22") || code.starts_with("23") || code == "54000"
        }
        _ => false,
    }
}
