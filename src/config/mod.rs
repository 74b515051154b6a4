//! Configuration: `userpipe.toml`, then environment overrides, parsed once at start into checked types.
//! Every key and its environment variable is listed in README.md; keep the two in step.

mod secret;
mod sections;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub use secret::{Secret, redact_url, redact_webhook, split_password};
pub use sections::*;

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
    pub notify: NotifyConfig,
}

/// Environment variables that override keys of the file, in the order they are applied.
pub const ENV_OVERRIDES: [(&str, &str); 13] = [
    ("USERPIPE_KAFKA_BROKERS", "kafka.brokers"),
    ("USERPIPE_KAFKA_COMPRESSION", "kafka.compression"),
    ("DATABASE_URL", "database.url"),
    ("USERPIPE_SOURCE", "fetch.source"),
    ("USERPIPE_GROUP_PREFIX", "kafka.group_prefix"),
    ("USERPIPE_SCHEDULES", "scheduler.dir"),
    ("USERPIPE_HTTP_ADDR", "http.listen"),
    ("USERPIPE_HTTP_TOKEN", "http.token"),
    ("USERPIPE_BACKUP_DIR", "backup.dir"),
    ("USERPIPE_WAL_ARCHIVE", "backup.wal_archive"),
    ("USERPIPE_PG_BIN", "backup.pg_bin"),
    ("USERPIPE_PGCONF", "pgconf.file"),
    ("USERPIPE_NOTIFY_URL", "notify.url"),
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
                "kafka.compression" => {
                    self.kafka.compression = value
                        .parse()
                        .map_err(|error| anyhow::anyhow!("{name} {error}"))?
                }
                "database.url" => self.database.url = Secret::new(value),
                "fetch.source" => self.fetch.source = value,
                "kafka.group_prefix" => self.kafka.group_prefix = value,
                "scheduler.dir" => self.scheduler.dir = PathBuf::from(value),
                "backup.dir" => self.backup.dir = PathBuf::from(value),
                "backup.wal_archive" => self.backup.wal_archive = PathBuf::from(value),
                "backup.pg_bin" => self.backup.pg_bin = PathBuf::from(value),
                "pgconf.file" => self.pgconf.file = PathBuf::from(value),
                "http.listen" => self.http.listen = value,
                "notify.url" => self.notify.url = Secret::new(value),
                "http.token" => self.http.token = Secret::new(value),
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
            ("http.max_connections", self.http.max_connections as i64),
            ("scheduler.history_keep", self.scheduler.history_keep as i64),
        ];
        for (key, value) in positive {
            if value < 1 {
                bail!("{key} must be 1 or more, not {value}");
            }
        }
        if self.backup.drill_user.trim().is_empty() {
            bail!("backup.drill_user is empty");
        }
        if self.http.header_read_timeout.is_zero() {
            bail!("http.header_read_timeout must be more than 0s");
        }
        if self.scheduler.history < std::time::Duration::from_secs(86_400) {
            bail!("scheduler.history must be one day or more");
        }
        let notify = self.notify.url.expose();
        if !notify.is_empty() && !is_http_url(notify) {
            // The URL itself is a secret: say what is wrong without it.
            bail!("notify.url (USERPIPE_NOTIFY_URL) is not an http(s) url");
        }
        if !self.notify.base_url.is_empty() && !is_http_url(&self.notify.base_url) {
            bail!(
                "notify.base_url must be an http(s) url, not {:?}",
                self.notify.base_url
            );
        }
        if self.notify.timeout.is_zero() {
            bail!("notify.timeout must be more than 0s");
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
        if crate::db::connect_options(self.database.url.expose()).is_err() {
            bail!(
                "database.url is not a valid postgres url: {}",
                redact_url(self.database.url.expose())
            );
        }
        Ok(())
    }

    /// The configuration as TOML with secrets redacted, for `config show`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = Secret::new(redact_url(self.database.url.expose()));
        shown.notify.url = Secret::new(redact_webhook(self.notify.url.expose()));
        if !self.http.token.expose().is_empty() {
            shown.http.token = Secret::new("[redacted]");
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// Whether `text` is an absolute http or https URL.
fn is_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let shipped = Config::parse(include_str!("../../userpipe.toml")).unwrap();
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
    fn compression_is_none_unless_set() {
        assert_eq!(Config::default().kafka.compression, Compression::None);
        let mut config = Config::parse("[kafka]\ncompression = \"gzip\"\n").unwrap();
        assert_eq!(config.kafka.compression, Compression::Gzip);
        config
            .apply_env(|name| (name == "USERPIPE_KAFKA_COMPRESSION").then(|| "zstd".into()))
            .unwrap();
        assert_eq!(config.kafka.compression, Compression::Zstd);
        let error = config
            .apply_env(|name| (name == "USERPIPE_KAFKA_COMPRESSION").then(|| "LZ4".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "USERPIPE_KAFKA_COMPRESSION must be one of none, gzip, snappy, lz4, zstd, not \"LZ4\""
        );
        let error = Config::parse("[kafka]\ncompression = \"brotli\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("unknown variant `brotli`"), "{error}");
        for (name, compression) in Compression::ALL {
            assert_eq!(name.parse(), Ok(compression));
            assert_eq!(compression.name(), name);
        }
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
        config
            .apply_env(|name| (name == "USERPIPE_HTTP_TOKEN").then(|| "s3cr3t-token".into()))
            .unwrap();
        assert_eq!(config.http.token.expose(), "s3cr3t-token");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("token = \"[redacted]\""), "{shown}");
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
    fn the_notification_url_is_a_secret() {
        let hook = "https://hooks.slack.com/services/T0/B0/s3cr3tT0ken";
        let mut config = Config::default();
        config
            .apply_env(|name| (name == "USERPIPE_NOTIFY_URL").then(|| hook.to_owned()))
            .unwrap();
        assert_eq!(config.notify.url.expose(), hook);
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("url = \"https://hooks.slack.com/***\""),
            "{shown}"
        );
        config.notify.url = Secret::new("hooks.slack.com/services/s3cr3t");
        let error = config.validate().unwrap_err().to_string();
        assert_eq!(
            error,
            "notify.url (USERPIPE_NOTIFY_URL) is not an http(s) url"
        );
    }

    #[test]
    fn history_is_written_in_days() {
        let config = Config::parse("[scheduler]\nhistory = \"30d\"\nhistory_keep = 5\n").unwrap();
        assert_eq!(config.scheduler.history, Duration::from_secs(30 * 86_400));
        assert_eq!(config.scheduler.history_keep, 5);
        assert!(
            Config::default()
                .to_redacted_toml()
                .contains("history = \"90d\"")
        );
        let error = Config::parse("[scheduler]\nhistory = \"2h\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(error, "scheduler.history must be one day or more");
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
