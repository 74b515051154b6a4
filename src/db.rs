//! PostgreSQL plumbing: the one step from a URL to connection options, pools and single connections, the
//! schema migrations, userpipe's advisory locks, and which errors are the data's fault.

use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::retry::{Attempt, Backoff, until_done};

/// The query parameters of a `postgres://` URL that userpipe's own connections read (sqlx's
/// `PgConnectOptions`, plus `options[NAME]`). libpq's others (`connect_timeout`, `target_session_attrs`,
/// ...) are left to the pg_* programs: sqlx would log an unknown one with its value.
const CLIENT_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

fn is_client_parameter(name: &str) -> bool {
    CLIENT_PARAMETERS.contains(&name) || (name.starts_with("options[") && name.ends_with(']'))
}

/// Connection options from a `postgres://` URL: the one place a URL becomes options. The URL may hold
/// secrets, so it never appears in the error; parameters userpipe's connections do not read are left
/// aside unread ([`parameters_left_aside`]); `sslpassword` is refused: no client here can use it.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let invalid = || anyhow::anyhow!("the database url is not a valid postgres url");
    let mut parsed = url::Url::parse(url).map_err(|_| invalid())?;
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if pairs.iter().any(|(name, _)| name == "sslpassword") {
        bail!(
            "the database url's sslpassword is not supported: neither userpipe's postgresql client nor \
             the pg_* programs (which read secrets only from the environment, and libpq has no variable \
             for it) can be given it safely; use an unencrypted client key (sslkey) readable only by userpipe"
        );
    }
    let used: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(n, _)| is_client_parameter(n))
        .collect();
    if used.len() < pairs.len() {
        parsed.query_pairs_mut().clear().extend_pairs(used);
        if parsed.query() == Some("") {
            parsed.set_query(None);
        }
    }
    parsed.as_str().parse().map_err(|_| invalid())
}

/// The query parameters of `url` (by name) that userpipe's own connections leave aside; the pg_* programs
/// still get them.
pub fn parameters_left_aside(url: &str) -> Vec<String> {
    url::Url::parse(url)
        .map(|parsed| {
            parsed
                .query_pairs()
                .map(|(name, _)| name.into_owned())
                .filter(|name| !is_client_parameter(name))
                .collect()
        })
        .unwrap_or_default()
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
/// sqlx logs none of its statements (at DEBUG, or at WARN when slow): `ALTER SYSTEM` carries a setting's
/// value, and an `archive_command` may carry credentials.
pub async fn connect_one(url: &str) -> anyhow::Result<PgConnection> {
    let options = connect_options(url)?.disable_statement_logging();
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

/// What PostgreSQL said of a statement it refused, for an operator: the message and the SQLSTATE, without
/// the server's own source line that sqlx's `Display` appends (" at line 2074" reads as a line of the data).
pub fn refusal(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
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
    /// A process that journals runs (`'upow'`, its owner key), held for its lifetime: free means it is gone.
    Owner(i32),
    /// Replays of one dead-letter topic (`'updl'`, `hashtext(topic)`): one at a time, so no letter is sent
    /// twice by two replays at once.
    DlqReplay(&'a str),
}

impl<'a> AdvisoryLock<'a> {
    const SCHEDULE_CLASS: i32 = 0x7570_6970;
    const BACKUP_CLASS: i32 = 0x7570_626b;
    const OWNER_CLASS: i32 = 0x7570_6f77;
    const DLQ_REPLAY_CLASS: i32 = 0x7570_646c;

    /// The class, and the key or the name whose `hashtext` is the key.
    fn keys(self) -> (i32, Option<&'a str>, i32) {
        match self {
            AdvisoryLock::Schedule(name) => (Self::SCHEDULE_CLASS, Some(name), 0),
            AdvisoryLock::Backup => (Self::BACKUP_CLASS, None, 0),
            AdvisoryLock::Owner(key) => (Self::OWNER_CLASS, None, key),
            AdvisoryLock::DlqReplay(topic) => (Self::DLQ_REPLAY_CLASS, Some(topic), 0),
        }
    }

    /// Takes the lock on `session` without waiting: exclusive, or shared with other shared holders.
    /// `false` when someone else holds it.
    pub async fn try_take(
        self,
        session: &mut PgConnection,
        exclusive: bool,
    ) -> Result<bool, sqlx::Error> {
        let (class, name, key) = self.keys();
        let query = if exclusive {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, coalesce(hashtext($2), $3))")
        } else {
            sqlx::query_scalar("SELECT pg_try_advisory_lock_shared($1, coalesce(hashtext($2), $3))")
        };
        query
            .bind(class)
            .bind(name)
            .bind(key)
            .fetch_one(session)
            .await
    }

    /// Lets go of the lock that `session` holds, exclusively or shared, at once (a closed session's locks
    /// go only once its server process has noticed and ended).
    pub async fn release(
        self,
        session: &mut PgConnection,
        exclusive: bool,
    ) -> Result<(), sqlx::Error> {
        let (class, name, key) = self.keys();
        let query = if exclusive {
            sqlx::query_scalar::<_, bool>(
                "SELECT pg_advisory_unlock($1, coalesce(hashtext($2), $3))",
            )
        } else {
            sqlx::query_scalar::<_, bool>(
                "SELECT pg_advisory_unlock_shared($1, coalesce(hashtext($2), $3))",
            )
        };
        query
            .bind(class)
            .bind(name)
            .bind(key)
            .fetch_one(session)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_sqlx_does_not_read_are_left_aside_and_sslpassword_is_refused() {
        let url = "postgres://u:pw@db:5433/x?sslmode=disable&connect_timeout=5&token=s3cret&application_name=up";
        let options = connect_options(url).unwrap();
        assert_eq!((options.get_host(), options.get_port()), ("db", 5433));
        assert_eq!(options.get_application_name(), Some("up"));
        assert_eq!(parameters_left_aside(url), ["connect_timeout", "token"]);
        assert!(
            parameters_left_aside("postgres://u@db/x?sslmode=require&options[search_path]=a")
                .is_empty()
        );

        let error = connect_options("postgres://u@db/x?sslkey=/k.pem&sslpassword=s3cret")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("the database url's sslpassword is not supported"),
            "{error}"
        );
        assert!(
            !error.contains("s3cret") && !error.contains("db/x"),
            "{error}"
        );
        let error = connect_options("postgres://u:s3cret@db:x/y")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "the database url is not a valid postgres url");
    }
}
