//! Test helpers: a private topic prefix and consumer group per test, a fresh database per test, and
//! waiting for conditions with a bound.

pub mod broker;
pub mod browser;
pub mod cluster;
pub mod randomuser;
pub mod small_fs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use userpipe::config::{Config, Secret};
use uuid::Uuid;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the stack with `scripts/stack up` and `eval \"$(scripts/stack env)\"`")
    })
}

/// A short random token that makes names unique to one test.
pub fn unique(tag: &str) -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("{tag}_{}", &id[..12])
}

/// The stack's Kafka broker, with names private to one test.
pub struct TestKafka {
    pub brokers: String,
    prefix: String,
}

impl TestKafka {
    pub fn new() -> Self {
        Self {
            brokers: required_env("USERPIPE_KAFKA_BROKERS"),
            prefix: unique("t"),
        }
    }

    /// A topic name private to this test.
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// A consumer group private to this test.
    pub fn group(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
}

impl Drop for TestKafka {
    /// Deletes the test's topics: the shared broker would otherwise keep every partition of every test
    /// run, and its heap and start-up time grow with them.
    fn drop(&mut self) {
        let (brokers, prefix) = (self.brokers.clone(), format!("{}.", self.prefix));
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread of its own.
        let deleted = std::thread::spawn(move || {
            let client: rdkafka::producer::BaseProducer = userpipe::kafka::base_config(&brokers)
                .create()
                .map_err(|e| e.to_string())?;
            let metadata = client
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect();
            if names.is_empty() {
                return Ok(());
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(userpipe::kafka::delete_topics(&brokers, &names))
                .map_err(|e| format!("{e:#}"))
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!(
                "could not delete the topics of {}: {deleted:?}",
                self.prefix
            );
        }
    }
}

/// A freshly created database on the stack's cluster, dropped when the value is dropped.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    admin: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> Self {
        let admin: PgConnectOptions = required_env("DATABASE_URL")
            .parse()
            .expect("DATABASE_URL is a valid postgres url");
        let name = unique("test");
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("connect to the stack's postgresql");
        // An identifier cannot be a bound parameter; `name` is made here from hex digits only.
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let pool = userpipe::db::connect_with(admin.clone().database(&name), 4)
            .await
            .expect("connect to the test database");
        Self { pool, name, admin }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime to drop the test database");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A userpipe configuration pointing at the stack, with topics, consumer groups and database private
/// to one test.
pub fn config_for(kafka: &TestKafka, database_url: &str) -> Config {
    let mut config = Config::default();
    config.kafka.brokers = kafka.brokers.clone();
    config.kafka.group_prefix = kafka.group("userpipe");
    config.topics = config.topics.prefixed(&kafka.topic(""));
    config.database.url = Secret::new(database_url);
    config.fetch.source = "generator".into();
    // Tests run side by side: each HTTP listener gets a port of its own.
    config.http.listen = "127.0.0.1:0".into();
    config
}

impl TestDb {
    /// The URL of this test's database.
    pub fn url(&self) -> String {
        let mut url =
            url::Url::parse(&required_env("DATABASE_URL")).expect("DATABASE_URL is a url");
        url.set_path(&self.name);
        url.to_string()
    }
}

/// Keeps each job run's log in the journal, as `userpipe` does: installs the capture layer (with the
/// process's default filter) as this test binary's subscriber, once.
pub fn capture_run_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(
                userpipe::cli::process::DEFAULT_LOG_FILTER,
            ))
            .with(userpipe::scheduler::CaptureLayer);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A producer whose `send` answers where the message went (partition and offset), for tests that must
/// find a message they sent; it takes records up to 16 MB, like userpipe's.
pub fn located_producer(brokers: &str) -> rdkafka::producer::FutureProducer {
    userpipe::kafka::base_config(brokers)
        .set("message.max.bytes", (16 << 20).to_string())
        .create()
        .expect("a kafka producer")
}

/// Reads `topic` from the beginning until `n` messages have come, within `timeout`. A message read again
/// (the reader's group rebalanced and it restarted a partition from the beginning) counts once.
pub async fn consume(brokers: &str, topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = userpipe::kafka::base_config(brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut messages = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while messages.len() < n {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => {
                if seen.insert((message.partition(), message.offset())) {
                    messages.push(message.detach());
                }
            }
            Ok(Err(error)) => panic!("reading {topic}: {error}"),
            Err(_) => panic!(
                "timed out after {timeout:?} reading {topic}: {} of {n} messages",
                messages.len()
            ),
        }
    }
    messages
}

/// The number of rows in `random_users`.
pub async fn row_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM random_users")
        .fetch_one(pool)
        .await
        .expect("count rows")
}

/// The value of header `name` of `message`, as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Creates the topics and the schema, as `userpipe run` does at start.
pub async fn prepare(config: &Config, pool: &PgPool) {
    userpipe::pipeline::topics::ensure(config, &config.topics)
        .await
        .expect("create the topics");
    userpipe::db::migrate(pool).await.expect("migrate");
}

/// The `userpipe` binary as a child process, run with `config` written to a file; its stderr goes to a
/// log file. Killed when dropped.
pub struct Userpipe {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Userpipe {
    /// Starts `userpipe --config <dir>/.config/userpipe.toml <args>`, appending its stderr to `<dir>/<log>`.
    pub fn spawn(config: &Config, dir: &Path, log: &str, args: &[&str]) -> Self {
        Self::spawn_with(config, dir, log, args, &[])
    }

    /// [`Userpipe::spawn`] with `env` set for the process (`USERPIPE_LOG`, ...).
    pub fn spawn_with(
        config: &Config,
        dir: &Path,
        log: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        // In a folder of its own: `dir` may be the schedule folder, where it would be read as a schedule.
        let configs = dir.join(".config");
        std::fs::create_dir_all(&configs).expect("make the config folder");
        let config_file = configs.join("userpipe.toml");
        std::fs::write(
            &config_file,
            toml::to_string(config).expect("render the config"),
        )
        .expect("write the config");
        let log = dir.join(log);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the log");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_userpipe"));
        // The configuration file alone: `scripts/stack env` exports overrides (the stack's backup folder,
        // archive and pgconf file) that must not reach a test's process.
        for (name, _) in userpipe::config::ENV_OVERRIDES {
            command.env_remove(name);
        }
        let child = command
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&config_file)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start userpipe");
        Self { child, log }
    }

    /// Stops the process (SIGSTOP, as a stopped container or a machine asleep) for `pause` and lets it go
    /// on (SIGCONT); returns when it was stopped and when it was let go.
    pub async fn pause(
        &self,
        pause: Duration,
    ) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
        let pid = self.child.id() as libc::pid_t;
        let signal = |signal| {
            // SAFETY: a plain kill(2) of the child this test started and has not reaped.
            assert_eq!(
                unsafe { libc::kill(pid, signal) },
                0,
                "kill({pid}, {signal})"
            );
        };
        signal(libc::SIGSTOP);
        let stopped = chrono::Utc::now();
        // The pause is what the caller tests: its length is the point, nothing is waited for here.
        tokio::time::sleep(pause).await;
        let resumed = chrono::Utc::now();
        signal(libc::SIGCONT);
        (stopped, resumed)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM; the exit status, which must come within 10 seconds.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let child = &mut self.child;
        wait_for(
            "userpipe to exit after SIGTERM",
            Duration::from_secs(10),
            || {
                let exited = child.try_wait().expect("try_wait");
                async move { exited }
            },
        )
        .await
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of its HTTP endpoints (`http://127.0.0.1:<port>`), once it logged that it listens;
    /// panics with its log if it exits first or takes longer than 30 seconds.
    pub async fn http_base(&mut self) -> String {
        const LISTENING: &str = "http endpoints listening address=";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log_text();
            let address = log.lines().find_map(|line| {
                let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
                Some(rest.split_whitespace().next()?.to_owned())
            });
            // The same event as a JSON line (`--log-format json`).
            let address = address.or_else(|| {
                log.lines()
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .find(|event| event["message"] == "http endpoints listening")
                    .and_then(|event| Some(event["address"].as_str()?.to_owned()))
            });
            if let Some(address) = address {
                return format!("http://{address}");
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("userpipe exited ({status}) before listening:\n{log}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "userpipe did not log its http address within 30s:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Userpipe {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `userpipe --config <file> <args>` to its end with `config` written to a file in `dir`, and no
/// configuration from this process's environment.
pub fn userpipe_output(config: &Config, dir: &Path, args: &[&str]) -> std::process::Output {
    let config_file = dir.join(format!("{}.toml", unique("userpipe")));
    std::fs::write(
        &config_file,
        toml::to_string(config).expect("render the config"),
    )
    .expect("write the config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_userpipe"));
    for (name, _) in std::env::vars() {
        let setting = name.starts_with("USERPIPE_") || name.starts_with("DATABASE_URL");
        if setting && !userpipe::config::PROCESS_VARIABLES.contains(&name.as_str()) {
            command.env_remove(name);
        }
    }
    command
        .arg("--config")
        .arg(&config_file)
        .args(args)
        .env("USERPIPE_LOG", "warn")
        .output()
        .expect("run userpipe")
}

/// Messages in `group` not yet committed on `topic`, and the messages in `topic`.
pub fn lag_and_total(brokers: &str, group: &str, topic: &str, partitions: i32) -> (i64, i64) {
    let consumer: StreamConsumer = userpipe::kafka::base_config(brokers)
        .set("group.id", group)
        .create()
        .expect("create a consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    let (mut lag, mut total) = (0, 0);
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks");
        let at = match committed
            .find_partition(topic, partition)
            .map(|p| p.offset())
        {
            Some(Offset::Offset(n)) => n,
            _ => low,
        };
        lag += high - at;
        total += high - low;
    }
    (lag, total)
}

/// `userpipe run` with `roles` in this process: the base URL of its HTTP endpoints
/// (`http://127.0.0.1:<port>`), the token that stops it, and its task.
pub async fn start_app(
    config: &Config,
    roles: &[userpipe::app::Role],
) -> (
    String,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let app = userpipe::app::App::build(config, roles)
        .await
        .expect("build the app");
    let base = format!("http://127.0.0.1:{}", app.http_port().expect("http is on"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    (base, shutdown, task)
}

/// The value of the sample `name` with exactly `labels`, from Prometheus text.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("the metrics parse as Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The Prometheus text of a running process's `/metrics` (`base`: `http://127.0.0.1:<port>`).
pub async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("GET {base}/metrics: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {base}/metrics");
    response.text().await.expect("the metrics as text")
}

/// Messages in `topic` (all partitions).
pub fn total(config: &Config, topic: &str) -> i64 {
    lag_and_total(
        &config.kafka.brokers,
        &unique("count"),
        topic,
        config.kafka.partitions,
    )
    .1
}

/// A backup folder with its `backup.json`, as a base-backup run leaves it.
pub fn write_backup(
    dir: &std::path::Path,
    id: &str,
    finished_at: chrono::DateTime<chrono::Utc>,
    ok: bool,
) {
    let metadata = userpipe::pg::backup::Metadata {
        id: id.to_owned(),
        label: format!("userpipe {id}"),
        started_at: finished_at - chrono::Duration::minutes(3),
        finished_at,
        bytes: 1,
        server_version: "15.18".into(),
        server_version_num: 150018,
        pg_basebackup: "pg_basebackup (PostgreSQL) 15.18".into(),
        timeline: 1,
        start_lsn: "0/2000028".into(),
        end_lsn: "0/2000100".into(),
        start_wal: None,
        verification: userpipe::pg::backup::Verification {
            ok,
            at: finished_at,
            problems: Vec::new(),
        },
        compressed: None,
    };
    let folder = dir.join(id);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("backup.json"),
        serde_json::to_vec(&metadata).unwrap(),
    )
    .unwrap();
}
