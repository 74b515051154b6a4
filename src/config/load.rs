//! The whole configuration: `Config`, read from the file and the environment, checked, and shown with
//! its secrets redacted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::env::{self, Origin, Origins};
use super::secret::{Secret, redact_url, redact_webhook};
use super::sections::*;
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

impl Config {
    /// Reads the configuration: the file named by `path`, else `USERPIPE_CONFIG`, else `userpipe.toml` when
    /// it exists, else the defaults; then the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        Ok(Self::load_with_origins(path)?.0)
    }

    /// [`Config::load`], saying where each value came from.
    pub fn load_with_origins(path: Option<&Path>) -> anyhow::Result<(Self, Origins)> {
        let file = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("USERPIPE_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()));
        let text = match &file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?,
            ),
            None => None,
        };
        let file = file.as_deref().zip(text.as_deref());
        let (config, origins) =
            Self::resolve(file, &environment()?, |path| std::fs::read_to_string(path))?;
        for parameter in crate::db::parameters_left_aside(config.database.url.expose()) {
            tracing::warn!(
                message = "database.url parameter left to the pg_* programs: userpipe's own connections do not read it",
                parameter
            );
        }
        Ok((config, origins))
    }

    /// The configuration from a file (its path and text), the environment `vars` laid over it, and the
    /// checks; `read` reads the files `_FILE` variables name. A check that fails says where the value came
    /// from.
    pub fn resolve(
        file: Option<(&Path, &str)>,
        vars: &[(String, String)],
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> anyhow::Result<(Self, Origins)> {
        let (table, mut origins) = match file {
            Some((path, text)) => {
                // Parsed as the configuration first: its errors name the line.
                Self::parse(text)
                    .with_context(|| format!("invalid config file {}", path.display()))?;
                (toml::from_str(text)?, Origins::of_file(path, text))
            }
            None => (toml::Table::new(), Origins::default()),
        };
        let config = Self::layered(table, vars, read, &mut origins)?;
        if let Err(error) = config.validate() {
            let message = error.to_string();
            let key = message.split_whitespace().next().unwrap_or_default();
            match origins.of(key) {
                Origin::Default => return Err(error),
                origin => bail!("{message} (from {origin})"),
            }
        }
        Ok((config, origins))
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

    /// The keys of `table` (a file's) with the environment `vars` laid over them (`env::apply`); `read`
    /// reads the files `_FILE` variables name.
    fn layered(
        mut table: toml::Table,
        vars: &[(String, String)],
        read: impl Fn(&Path) -> std::io::Result<String>,
        origins: &mut Origins,
    ) -> anyhow::Result<Self> {
        let defaults = toml::Table::try_from(Self::default())?;
        env::apply::<Self>(&mut table, &defaults, vars, read, origins)?;
        Ok(table.try_into()?)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        // (key, value, most): at least 1, at most what any deployment needs and the code can hold.
        let counts = [
            ("kafka.partitions", self.kafka.partitions as i64, 10_000),
            (
                "kafka.replication_factor",
                self.kafka.replication_factor as i64,
                100,
            ),
            (
                "database.max_connections",
                self.database.max_connections as i64,
                10_000,
            ),
            ("fetch.max_attempts", self.fetch.max_attempts as i64, 1_000),
            (
                "stages.batch_size",
                count(self.stages.batch_size),
                1_000_000,
            ),
            (
                "stages.max_message_bytes",
                count(self.stages.max_message_bytes),
                1_000_000_000,
            ),
            ("sink.batch_size", count(self.sink.batch_size), 1_000_000),
            ("backup.keep", count(self.backup.keep), 10_000),
            (
                "http.max_connections",
                count(self.http.max_connections),
                1_000_000,
            ),
        ];
        for (key, value, most) in counts {
            if value < 1 {
                bail!("{key} must be 1 or more, not {value}");
            }
            if value > most {
                bail!("{key} must be at most {most}, not {value}");
            }
        }
        if self.scheduler.history_keep > 1_000_000 {
            bail!(
                "scheduler.history_keep must be at most 1000000, not {}",
                self.scheduler.history_keep
            );
        }
        let (hour, day) = (Duration::from_secs(3600), Duration::from_secs(86_400));
        const YEAR: Duration = Duration::from_secs(31_557_600);
        let durations = [
            ("backup.timeout", self.backup.timeout, 7 * day),
            ("backup.archive_wait", self.backup.archive_wait, day),
            (
                "http.header_read_timeout",
                self.http.header_read_timeout,
                hour,
            ),
            ("scheduler.history", self.scheduler.history, 10 * YEAR),
            ("notify.timeout", self.notify.timeout, hour),
            ("fetch.timeout", self.fetch.timeout, hour),
            ("fetch.backoff", self.fetch.backoff, hour),
            ("fetch.max_backoff", self.fetch.max_backoff, day),
            ("fetch.publish_timeout", self.fetch.publish_timeout, day),
            ("kafka.delivery_timeout", self.kafka.delivery_timeout, day),
            ("stages.linger", self.stages.linger, hour),
            ("sink.linger", self.sink.linger, hour),
        ];
        for (key, value, most) in durations {
            if value > most {
                bail!(
                    "{key} must be at most {}, not {}",
                    humantime::format_duration(most),
                    humantime::format_duration(value)
                );
            }
        }
        if self.backup.drill_user.trim().is_empty() {
            bail!("backup.drill_user is empty");
        }
        if self.kafka.delivery_timeout < Duration::from_secs(1) {
            bail!(
                "kafka.delivery_timeout must be 1s or more, not {}",
                humantime::format_duration(self.kafka.delivery_timeout)
            );
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
            bail!("fetch.source must be `generator` or an http(s) url");
        }
        if let Err(error) = crate::db::connect_options(self.database.url.expose()) {
            bail!(
                "database.url {}: {error}",
                redact_url(self.database.url.expose())
            );
        }
        Ok(())
    }

    /// The configuration with its secrets redacted, for `config show`.
    pub fn redacted(&self) -> Self {
        let mut shown = self.clone();
        shown.database.url = Secret::new(redact_url(self.database.url.expose()));
        shown.notify.url = Secret::new(redact_webhook(self.notify.url.expose()));
        if !self.http.token.expose().is_empty() {
            shown.http.token = Secret::new("[redacted]");
        }
        if shown.fetch.source != "generator" {
            shown.fetch.source = redact_url(&self.fetch.source);
        }
        shown
    }

    /// The configuration as TOML with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// Whether `text` is an absolute http or https URL.
/// A count as the checks compare it (a count past `i64::MAX` is past every limit anyway).
fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn is_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// The process's environment variables that may be settings: `USERPIPE_` ones and the older names (with
/// their `_FILE` forms). A value that is not UTF-8 is an error naming its variable.
fn environment() -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !env::is_setting_variable(name) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("environment variable {name} is not valid UTF-8"))?;
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}
