//! The sections of `userpipe.toml`: one struct each, every key with its default and a doc comment.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::Secret;

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
    /// How long a base backup waits for its last WAL segment to reach `wal_archive`, and how long
    /// `pgconf check --archive` waits for the segment it switched away from.
    #[serde(with = "humantime_serde")]
    pub archive_wait: Duration,
    /// How a verified backup is stored: `off` keeps the plain data folder; `zstd` packs it, once
    /// pg_verifybackup has passed, into one `base.tar.zst` beside its `backup.json` and `backup_manifest`.
    pub compress: BackupCompression,
}

/// How a verified base backup is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupCompression {
    /// The plain data folder pg_basebackup wrote.
    #[default]
    Off,
    /// One tar file of the folder, compressed with zstd (level 3).
    Zstd,
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
            archive_wait: Duration::from_secs(60),
            compress: BackupCompression::Off,
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

/// The HTTP endpoints: the status page `/`, `/healthz`, `/readyz`, `/metrics`, `/api/...`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (`USERPIPE_HTTP_ADDR`); empty turns the endpoints off. Loopback by default;
    /// the container listens on all interfaces.
    pub listen: String,
    /// A client must send a request's headers within this, else its connection is closed (a half-sent
    /// request can hold neither a connection slot nor the shutdown).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// The bearer token that writing actions (run a schedule now) require (`USERPIPE_HTTP__TOKEN`); empty:
    /// the endpoints are read-only and writing actions are refused.
    pub token: Secret,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 64,
            token: Secret::new(""),
        }
    }
}

/// The in-process scheduler.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// The folder of schedule files, one `<name>.toml` each (`USERPIPE_SCHEDULES`).
    pub dir: PathBuf,
    /// How long the run history (`job_runs`, `job_firings`, the run logs) is kept; the built-in
    /// `prune-history` schedule deletes older runs daily.
    #[serde(with = "days")]
    pub history: Duration,
    /// The newest runs of each schedule kept whatever their age, so a rare schedule's history is never
    /// emptied.
    pub history_keep: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("schedules"),
            history: Duration::from_secs(90 * 86_400),
            history_keep: 20,
        }
    }
}

/// A duration written in whole days when it is whole days (`90d`), else as humantime writes it; read
/// as any humantime duration (`90d`, `12h`).
mod days {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let secs = value.as_secs();
        if secs > 0 && secs.is_multiple_of(86_400) && value.subsec_nanos() == 0 {
            serializer.serialize_str(&format!("{}d", secs / 86_400))
        } else {
            serializer.serialize_str(&humantime::format_duration(*value).to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Which finished runs send a notification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// A run that failed, timed out or was abandoned; and the first success after one (a recovery).
    #[default]
    Failure,
    /// Every run that finished, skipped ones included.
    Always,
    /// None.
    Never,
}

/// Notifications of finished job runs: a webhook (Slack-compatible JSON) that every schedule uses
/// unless its file's own `[notify]` table says otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The webhook the messages are posted to (`USERPIPE_NOTIFY_URL`); empty: no notifications. A secret:
    /// it is never printed beyond its host.
    pub url: Secret,
    /// Which runs notify: `failure` (and recoveries), `always`, or `never`.
    pub on: NotifyOn,
    /// Where operators reach userpipe's HTTP endpoints (`https://userpipe.example.com`); a message's link
    /// to its run starts with it. Empty: the link is the path alone (`/api/jobs/<run id>`).
    pub base_url: String,
    /// How long one attempt at posting a message may take; three attempts are made.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            url: Secret::new(""),
            on: NotifyOn::Failure,
            base_url: String::new(),
            timeout: Duration::from_secs(10),
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
    /// Compression of every batch userpipe produces (`USERPIPE_KAFKA_COMPRESSION`): `none` or `gzip` keep
    /// the topics readable by the old scripts (kafka-python without compression libraries); `snappy`,
    /// `lz4` and `zstd` only once no old script reads them.
    pub compression: Compression,
    /// How long the producer tries to deliver a record before it reports the delivery failed
    /// (librdkafka's `message.timeout.ms`); userpipe then sends the record again, after a backoff, until it
    /// is in. A shorter value makes an outage visible sooner as "delivery failed, retrying".
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
}

/// A producer's batch compression, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Kafka's default; every client reads it.
    #[default]
    None,
    /// Readable by kafka-python with the standard library alone.
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every value, as written in the file.
    pub const ALL: [(&str, Compression); 5] = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];

    /// The name as written in the file (and as Kafka names it).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("none", |(name, _)| name)
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, c)| *c)
            .ok_or_else(|| format!("must be one of none, gzip, snappy, lz4, zstd, not {text:?}"))
    }
}

impl KafkaConfig {
    /// The consumer group of a consuming stage (`timestamp`, `tags`, `sink`): `<group_prefix>-<stage>`.
    pub fn group(&self, stage: &str) -> String {
        format!("{}-{stage}", self.group_prefix)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:19092".into(),
            group_prefix: "userpipe".into(),
            partitions: 3,
            replication_factor: 1,
            compression: Compression::None,
            // librdkafka's own default.
            delivery_timeout: Duration::from_secs(300),
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
            url: Secret::new("postgres://postgres@127.0.0.1:55432/postgres"),
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
            batch_size: 1000,
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
            batch_size: 1000,
            linger: Duration::from_millis(20),
        }
    }
}
