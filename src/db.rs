//! PostgreSQL plumbing: the one step from a URL to connection options, pools and single connections, the
//! schema migrations, userpipe's advisory locks, and which errors are the data's fault.

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::retry::{Attempt, Backoff, until_done};

/// Connection options from a `postgres://` URL. The URL may hold a password, so it never appears in the
/// error.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    url.parse()
        .map_err(|_| anyhow::anyhow!("the database url is not a valid postgres url"))
}

/// Opens a pool to `url`, failing when PostgreSQL cannot be reached now.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_with(connect_options(url)?, max_connections).await
}

/// A pool that connects when first used, so a process can start, and serve what does not need the
/// database, while PostgreSQL is down.
pub fn lazy_pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect_options(url)?))
}

/// Opens a pool with already parsed options.
pub async fn connect_with(
    options: PgConnectOptions,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to postgresql at {host}:{port}"))
}

/// Opens one connection of its own to `url` (settings changes, backups, advisory locks held by a session).
pub async fn connect_one(url: &str) -> anyhow::Result<PgConnection> {
    let options = connect_options(url)?;
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot connect to postgresql at {host}:{port}"))
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

/// Applies the schema migrations, waiting while PostgreSQL is unreachable or read-only, until done or
/// `shutdown`. Returns `Ok(false)` when shut down first.
pub async fn migrate_when_reachable(
    pool: &PgPool,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let outcome = until_done(
        "cannot apply migrations, retrying",
        backoff,
        shutdown,
        || async {
            match MIGRATOR.run(pool).await {
                Ok(()) => Attempt::Done(Ok(())),
                // Unreachable (also when the server went away in the middle of a migration, which
                // then rolls back), or reachable but not writable (a read-only standby after a
                // failover): wait.
                Err(MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _))
                    if !is_data_error(&e) =>
                {
                    Attempt::Retry(e.to_string())
                }
                Err(e) => Attempt::Done(Err(e)),
            }
        },
    )
    .await;
    match outcome {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("cannot apply the database migrations")),
        Err(_abandoned) => Ok(false),
    }
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

/// userpipe's advisory locks. Each is a pair of keys: a class naming what is locked, and a key within it.
/// Held by a session: closing the session releases the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryLock<'a> {
    /// One schedule's runs (`'upip'`, `hashtext(name)`): `overlap = "skip"` across replicas.
    Schedule(&'a str),
    /// Base backups of the server (`'upbk'`, 0): one at a time, across replicas and the command line.
    Backup,
    /// Replays of one dead-letter topic (`'updl'`, `hashtext(topic)`): one at a time, so no letter is sent
    /// twice by two replays at once.
    DlqReplay(&'a str),
}

impl AdvisoryLock<'_> {
    const SCHEDULE_CLASS: i32 = 0x7570_6970;
    const BACKUP_CLASS: i32 = 0x7570_626b;
    const DLQ_REPLAY_CLASS: i32 = 0x7570_646c;

    /// Takes the lock on `session` without waiting: exclusive, or shared with other shared holders.
    /// `false` when someone else holds it.
    pub async fn try_take(
        self,
        session: &mut PgConnection,
        exclusive: bool,
    ) -> Result<bool, sqlx::Error> {
        let (class, name) = match self {
            AdvisoryLock::Schedule(name) => (Self::SCHEDULE_CLASS, Some(name)),
            AdvisoryLock::Backup => (Self::BACKUP_CLASS, None),
            AdvisoryLock::DlqReplay(topic) => (Self::DLQ_REPLAY_CLASS, Some(topic)),
        };
        let query = if exclusive {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, coalesce(hashtext($2), 0))")
        } else {
            sqlx::query_scalar("SELECT pg_try_advisory_lock_shared($1, coalesce(hashtext($2), 0))")
        };
        query.bind(class).bind(name).fetch_one(session).await
    }
}
