//! Configuration: `userpipe.toml`, then environment overrides, parsed once at start into checked types.
//! Every key and its environment variable is listed in README.md; keep the two in step.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The configuration file read when neither `--config` nor `USERPIPE_CONFIG` names one.
pub const DEFAULT_FILE: &str = "userpipe.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub database: DatabaseConfig,
    pub fetch: FetchConfig,
    pub stages: StagesConfig,
    pub sink: SinkConfig,
    pub scheduler: SchedulerConfig,
    pub http: HttpConfig,
    pub backup: BackupConfig,
    pub pgconf: PgconfConfig,
}

/// Base backups, the WAL archive they are recovered from, and the restore drill.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The folder of base backups, one `<id>` folder each with its `backup.json` (`USERPIPE_BACKUP_DIR`).
    pub dir: PathBuf,
    /// The WAL archive: the folder `archive-wal.sh` writes segments to, as this process sees it; the
    /// restore drill's `restore_command` reads it (`USERPIPE_WAL_ARCHIVE`).
    pub wal_archive: PathBuf,
    /// Verified backups kept by retention, newest first (1 or more; the newest verified one is never
    /// deleted).
    pub keep: usize,
    /// The folder of the PostgreSQL programs (`pg_basebackup`, `pg_verifybackup`, `pg_ctl`, `postgres`);
    /// empty: found on the PATH with `which`, then in `/usr/lib/postgresql/<newest>/bin`
    /// (`USERPIPE_PG_BIN`).
    pub pg_bin: PathBuf,
    /// The folder the restore drill makes its scratch folder in; empty: the system's temporary folder.
    /// The drill's server user must be able to reach it.
    pub scratch: PathBuf,
    /// The operating-system user the restore drill's throwaway server runs as when userpipe runs as root
    /// (PostgreSQL refuses root); otherwise the server runs as userpipe's own user.
    pub drill_user: String,
    /// Longest one step may take: `pg_basebackup`, `pg_verifybackup`, or the drill's recovery.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The most pg_basebackup reads from the server per second (its `--max-rate`: kB/s, or with a `k` or
    /// `M` suffix; 32k to 1024M), to spare the server's disk; empty: no limit.
    pub max_rate: String,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("backups"),
            wal_archive: PathBuf::from("wal-archive"),
            keep: 4,
            pg_bin: PathBuf::new(),
            scratch: PathBuf::new(),
            drill_user: "postgres".into(),
            timeout: Duration::from_secs(2 * 3600),
            max_rate: String::new(),
        }
    }
}

/// The PostgreSQL settings userpipe keeps in force.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgconfConfig {
    /// The desired WAL-archiving settings, in postgresql.conf syntax (`USERPIPE_PGCONF`).
    pub file: PathBuf,
}

impl Default for PgconfConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("pgconf/archiving.conf"),
        }
    }
}

/// The HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/api/jobs`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (`USERPIPE_HTTP_ADDR`); empty turns the endpoints off. Loopback by default;
    /// the container listens on all interfaces.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

/// The in-process scheduler.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// The folder of schedule files, one `<name>.toml` each (`USERPIPE_SCHEDULES`).
    pub dir: PathBuf,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("schedules"),
        }
    }
}

/// Where the broker is and how userpipe's topics and consumer groups are made.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`USERPIPE_KAFKA_BROKERS`).
    pub brokers: String,
    /// Consumer groups are `<group_prefix>-<role>`, e.g. `userpipe-sink`.
    pub group_prefix: String,
    /// Partitions of each topic userpipe creates.
    pub partitions: i32,
    /// Replication factor of each topic userpipe creates.
    pub replication_factor: i32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:19092".into(),
            group_prefix: "userpipe".into(),
            partitions: 3,
            replication_factor: 1,
        }
    }
}

/// Topic names; the defaults are the old scripts' names.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Fetched users (`get_data.py`'s topic).
    pub users: String,
    /// Users with stage 1's `timestamp`.
    pub timestamped: String,
    /// Users with stage 2's major and hobby; the sink reads it.
    pub enriched: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            users: "users_info".into(),
            timestamped: "enriched_users_info_timestamp".into(),
            enriched: "enriched_users_info_randomtopics".into(),
        }
    }
}

impl TopicsConfig {
    /// Every topic with the given prefix put in front (benchmarks and tests use private topics).
    pub fn prefixed(&self, prefix: &str) -> Self {
        Self {
            users: format!("{prefix}{}", self.users),
            timestamped: format!("{prefix}{}", self.timestamped),
            enriched: format!("{prefix}{}", self.enriched),
        }
    }
}

/// The dead-letter topic of an input topic.
pub fn dead_letter_topic(input: &str) -> String {
    format!("{input}.dlq")
}

/// The PostgreSQL database the sink writes into.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db` (`DATABASE_URL`); the password is never printed.
    pub url: Secret,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret("postgres://postgres@127.0.0.1:55432/postgres".into()),
            max_connections: 8,
        }
    }
}

/// How `fetch` gets users.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// `https://randomuser.me/api/`, another URL speaking its JSON, or `generator` for the built-in
    /// offline generator (`USERPIPE_SOURCE`).
    pub source: String,
    /// Seed of the generator, for repeatable runs; none means a fresh seed each run.
    pub seed: Option<u64>,
    /// Timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts at one page before the run fails (HTTP 429, 5xx, timeouts and connection errors are retried).
    pub max_attempts: u32,
    /// First wait between attempts; doubled each time, capped by `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest wait between attempts, also the cap on a server's `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a fetch run waits for Kafka to acknowledge what it published before it fails.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            source: "https://randomuser.me/api/".into(),
            seed: None,
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            publish_timeout: Duration::from_secs(60),
        }
    }
}

/// The two enrichment stages.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagesConfig {
    /// Most messages handled as one batch (one wait for the produce acknowledgements).
    pub batch_size: usize,
    /// Longest wait for a batch to fill once its first message is in.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Larger payloads are dead-lettered as oversized.
    pub max_message_bytes: usize,
}

impl Default for StagesConfig {
    fn default() -> Self {
        Self {
            batch_size: 2000,
            linger: Duration::from_millis(20),
            max_message_bytes: 64 * 1024,
        }
    }
}

/// The PostgreSQL sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Most rows written in one transaction.
    pub batch_size: usize,
    /// Longest wait for a batch to fill once its first message is in.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            batch_size: 4000,
            linger: Duration::from_millis(20),
        }
    }
}

/// A value that never prints: `Debug` and `Display` show `[redacted]`; `expose` gives the text.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `url` without its password, and the password: from the user part (`postgres://u:pw@host/db`) or from a
/// `password` query parameter (`postgres://u@host/db?password=pw`), both of which PostgreSQL clients accept.
/// `None` when `url` is not a URL.
pub fn split_password(url: &str) -> Option<(url::Url, Option<String>)> {
    let mut parsed = url::Url::parse(url).ok()?;
    let mut password = parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    if password.is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = parsed.set_password(None);
    }
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if pairs.iter().any(|(key, _)| key == "password") {
        let mut kept = Vec::new();
        for (key, value) in pairs {
            if key == "password" {
                password = Some(value);
            } else {
                kept.push((key, value));
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    Some((parsed, password))
}

/// A URL with its password shown as `***`, for logs, errors and `config show`.
pub fn redact_url(url: &str) -> String {
    match split_password(url) {
        Some((mut parsed, Some(_))) => {
            // Cannot fail for a URL with a host; a URL without one cannot have carried a password.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Some((parsed, None)) => parsed.to_string(),
        None => "[unparseable url]".into(),
    }
}

/// Environment variables that override keys of the file, in the order they are applied.
pub const ENV_OVERRIDES: [(&str, &str); 10] = [
    ("USERPIPE_KAFKA_BROKERS", "kafka.brokers"),
    ("DATABASE_URL", "database.url"),
    ("USERPIPE_SOURCE", "fetch.source"),
    ("USERPIPE_GROUP_PREFIX", "kafka.group_prefix"),
    ("USERPIPE_SCHEDULES", "scheduler.dir"),
    ("USERPIPE_HTTP_ADDR", "http.listen"),
    ("USERPIPE_BACKUP_DIR", "backup.dir"),
    ("USERPIPE_WAL_ARCHIVE", "backup.wal_archive"),
    ("USERPIPE_PG_BIN", "backup.pg_bin"),
    ("USERPIPE_PGCONF", "pgconf.file"),
];

impl Config {
    /// Reads the configuration: the file named by `path`, else `USERPIPE_CONFIG`, else `userpipe.toml` when
    /// it exists, else the defaults; then the environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let explicit = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("USERPIPE_CONFIG").map(PathBuf::from));
        let mut config = match explicit {
            Some(path) => Self::from_file(&path)?,
            None if Path::new(DEFAULT_FILE).exists() => Self::from_file(Path::new(DEFAULT_FILE))?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses one file; an error names the file, the line and the key.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Applies the environment overrides, reading variables through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        for (name, key) in ENV_OVERRIDES {
            // An empty variable counts as unset, except where empty has a meaning (no HTTP endpoints).
            let Some(value) = var(name).filter(|v| !v.is_empty() || key == "http.listen") else {
                continue;
            };
            match key {
                "kafka.brokers" => self.kafka.brokers = value,
                "database.url" => self.database.url = Secret(value),
                "fetch.source" => self.fetch.source = value,
                "kafka.group_prefix" => self.kafka.group_prefix = value,
                "scheduler.dir" => self.scheduler.dir = PathBuf::from(value),
                "backup.dir" => self.backup.dir = PathBuf::from(value),
                "backup.wal_archive" => self.backup.wal_archive = PathBuf::from(value),
                "backup.pg_bin" => self.backup.pg_bin = PathBuf::from(value),
                "pgconf.file" => self.pgconf.file = PathBuf::from(value),
                "http.listen" => self.http.listen = value,
                other => bail!("no override for {other}"),
            }
        }
        Ok(())
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("kafka.partitions", self.kafka.partitions as i64),
            (
                "kafka.replication_factor",
                self.kafka.replication_factor as i64,
            ),
            (
                "database.max_connections",
                self.database.max_connections as i64,
            ),
            ("fetch.max_attempts", self.fetch.max_attempts as i64),
            ("stages.batch_size", self.stages.batch_size as i64),
            (
                "stages.max_message_bytes",
                self.stages.max_message_bytes as i64,
            ),
            ("sink.batch_size", self.sink.batch_size as i64),
            ("backup.keep", self.backup.keep as i64),
        ];
        for (key, value) in positive {
            if value < 1 {
                bail!("{key} must be 1 or more, not {value}");
            }
        }
        if self.backup.drill_user.trim().is_empty() {
            bail!("backup.drill_user is empty");
        }
        if self.backup.timeout.is_zero() {
            bail!("backup.timeout must be more than 0s");
        }
        let rate = self.backup.max_rate.trim_end_matches(['k', 'M']);
        if !self.backup.max_rate.is_empty()
            && (rate.is_empty()
                || !rate.chars().all(|c| c.is_ascii_digit())
                || self.backup.max_rate.len() - rate.len() > 1)
        {
            bail!(
                "backup.max_rate must be kB/s, or a number with k or M (e.g. \"50M\"), not {:?}",
                self.backup.max_rate
            );
        }
        if self.kafka.brokers.trim().is_empty() {
            bail!("kafka.brokers is empty");
        }
        if self.fetch.source != "generator" && url::Url::parse(&self.fetch.source).is_err() {
            bail!(
                "fetch.source must be `generator` or an http(s) url, not {:?}",
                self.fetch.source
            );
        }
        self.database
            .url
            .expose()
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(|_| {
                anyhow::anyhow!(
                    "database.url is not a valid postgres url: {}",
                    redact_url(self.database.url.expose())
                )
            })?;
        Ok(())
    }

    /// The configuration as TOML with secrets redacted, for `config show`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = Secret(redact_url(self.database.url.expose()));
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.kafka.brokers, "127.0.0.1:19092");
        assert_eq!(config.topics.users, "users_info");
        assert_eq!(config.topics.enriched, "enriched_users_info_randomtopics");
        assert_eq!(config.fetch.timeout, Duration::from_secs(10));
        config.validate().unwrap();
    }

    #[test]
    fn the_shipped_file_states_the_defaults() {
        let shipped = Config::parse(include_str!("../userpipe.toml")).unwrap();
        assert_eq!(
            shipped.to_redacted_toml(),
            Config::default().to_redacted_toml()
        );
    }

    #[test]
    fn reads_durations_and_nested_keys() {
        let config =
            Config::parse("[fetch]\ntimeout = \"2s 500ms\"\nsource = \"generator\"\nseed = 7\n")
                .unwrap();
        assert_eq!(config.fetch.timeout, Duration::from_millis(2500));
        assert_eq!(config.fetch.seed, Some(7));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let error = Config::parse("[kafka]\nbrokers = \"x:1\"\nbrokerz = \"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("unknown field `brokerz`"), "{error}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = Config::parse("[kafka]\nbrokers = \"file:1\"\n").unwrap();
        config
            .apply_env(|name| match name {
                "USERPIPE_KAFKA_BROKERS" => Some("env:2".into()),
                "DATABASE_URL" => Some("postgres://u:hunter2@db:5432/x".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.kafka.brokers, "env:2");
        config
            .apply_env(|name| {
                (name == "USERPIPE_HTTP_ADDR" || name == "USERPIPE_SOURCE").then(String::new)
            })
            .unwrap();
        assert_eq!(
            config.http.listen, "",
            "an empty USERPIPE_HTTP_ADDR turns the endpoints off"
        );
        assert_eq!(
            config.fetch.source, "https://randomuser.me/api/",
            "an empty variable is otherwise unset"
        );
        assert_eq!(
            config.database.url.expose(),
            "postgres://u:hunter2@db:5432/x"
        );
    }

    #[test]
    fn environment_overrides_the_backup_and_pgconf_paths() {
        let mut config = Config::default();
        config
            .apply_env(|name| match name {
                "USERPIPE_BACKUP_DIR" => Some("/var/lib/userpipe/backups".into()),
                "USERPIPE_WAL_ARCHIVE" => Some("/var/lib/postgresql/wal-archive".into()),
                "USERPIPE_PG_BIN" => Some("/usr/lib/postgresql/16/bin".into()),
                "USERPIPE_PGCONF" => Some("/etc/userpipe/pgconf/archiving.conf".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.backup.dir, Path::new("/var/lib/userpipe/backups"));
        assert_eq!(
            config.backup.wal_archive,
            Path::new("/var/lib/postgresql/wal-archive")
        );
        assert_eq!(
            config.backup.pg_bin,
            Path::new("/usr/lib/postgresql/16/bin")
        );
        assert_eq!(
            config.pgconf.file,
            Path::new("/etc/userpipe/pgconf/archiving.conf")
        );
        assert_eq!(config.backup.keep, 4);
    }

    #[test]
    fn secrets_never_print() {
        let mut config = Config::default();
        config.database.url = Secret::new("postgres://u:hunter2@db:5432/x");
        assert!(!format!("{config:?}").contains("hunter2"));
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://u:***@db:5432/x"), "{shown}");
        let query = redact_url("postgres://u@db:5432/x?sslmode=require&password=hunter2");
        assert_eq!(query, "postgres://u:***@db:5432/x?sslmode=require");
        let (bare, password) = split_password("postgres://u:p%40ss@db/x?password=q").unwrap();
        assert_eq!(
            (bare.as_str(), password.as_deref()),
            ("postgres://u@db/x", Some("q"))
        );
    }

    #[test]
    fn validation_names_the_key() {
        let error = Config::parse("[sink]\nbatch_size = 0\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(error, "sink.batch_size must be 1 or more, not 0");
        let error = Config::parse("[backup]\nkeep = 0\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(error, "backup.keep must be 1 or more, not 0");
        for (rate, valid) in [
            ("", true),
            ("50M", true),
            ("32k", true),
            ("1000", true),
            ("5G", false),
            ("M", false),
            ("1kM", false),
        ] {
            let config = Config::parse(&format!("[backup]\nmax_rate = \"{rate}\"\n")).unwrap();
            assert_eq!(config.validate().is_ok(), valid, "{rate:?}");
        }
        let error = Config::parse("[fetch]\nsource = \"randomuser\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("fetch.source must be"), "{error}");
    }
}
