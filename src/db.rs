//! PostgreSQL connection pool.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Opens a pool to `url`. The URL may hold a password, so it never appears in an error.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .context("the database url is not a valid postgres url")?;
    connect_with(options, max_connections).await
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
