//! Job runs an operator can read and be warned about, against the real stack: each run's own log (and
//! the API and command that show it), history retention, webhook notifications, freshness metrics, the
//! log filter, and the `jobs` command's output.

mod cli;
mod freshness;
mod history;
mod logs;
mod notify;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use userpipe::config::Config;
use userpipe::http::{HttpState, Roles};
use userpipe::scheduler::journal::{self, Journal, RunFilter, RunRecord};
use userpipe::scheduler::{Runner, schedule};
use uuid::Uuid;

use crate::support::{TestDb, TestKafka, config_for, prepare, wait_for};

/// A stack configuration (its own topics and database) with the schedules in `dir`.
async fn setup(dir: &Path) -> (TestKafka, TestDb, Config) {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = dir.to_owned();
    config.fetch.max_attempts = 1;
    prepare(&config, &db.pool).await;
    (kafka, db, config)
}

/// A runner whose journal writes to `pool`.
fn runner(config: &Config, pool: &PgPool) -> Arc<Runner> {
    let (journal, _writer) = Journal::start(Some(pool.clone()), CancellationToken::new());
    Runner::new(config.clone(), Some(pool.clone()), journal).unwrap()
}

/// The schedule `text`, named `name`.
fn parse(name: &str, text: &str) -> schedule::Schedule {
    schedule::parse(Path::new(&format!("{name}.toml")), text).expect("a valid schedule")
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.toml"))).unwrap();
}

/// Every attempt of `schedule` in the journal, oldest first.
async fn runs(pool: &PgPool, schedule: &str) -> Vec<RunRecord> {
    let filter = RunFilter {
        schedule: Some(schedule.into()),
        limit: 100_000,
        ..Default::default()
    };
    let mut runs = journal::list(pool, &filter).await.expect("the journal");
    runs.reverse();
    runs
}

/// The attempts of the newest run of `schedule`, once it is over in the journal.
async fn finished_run(pool: &PgPool, schedule: &str) -> Vec<RunRecord> {
    wait_for(
        "the run to be over in the journal",
        Duration::from_secs(30),
        || async {
            let runs = runs(pool, schedule).await;
            let newest = runs.last()?.run_id;
            let attempts: Vec<RunRecord> =
                runs.into_iter().filter(|r| r.run_id == newest).collect();
            journal::run_over(&attempts).then_some(attempts)
        },
    )
    .await
}

/// The HTTP endpoints on a free port, answering from `pool`; their base URL.
async fn serve_http(config: &Config, pool: &PgPool) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let jobs = userpipe::scheduler::Service::start(config, Some(pool.clone()), &shutdown).unwrap();
    let state = HttpState::new(
        config,
        Some(pool.clone()),
        Arc::new(Roles::default()),
        jobs.runner.clone(),
    )
    .unwrap();
    let limits = userpipe::http::Limits::from(&config.http);
    tokio::spawn(userpipe::http::serve(
        listener,
        state,
        limits,
        shutdown.clone(),
    ));
    (base, shutdown)
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `userpipe --config <file> ARGS` in `dir` with `config` (the file goes in a subfolder: `dir` may be
/// the schedule folder), the environment's overrides removed.
fn userpipe(config: &Config, dir: &Path, args: &[&str]) -> std::process::Command {
    let configs = dir.join(".config");
    std::fs::create_dir_all(&configs).unwrap();
    let file = configs.join(format!("{}.toml", crate::support::unique("userpipe")));
    std::fs::write(&file, toml::to_string(config).unwrap()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_userpipe"));
    command
        .current_dir(dir)
        .arg("--config")
        .arg(&file)
        .args(args);
    for (name, _) in userpipe::config::ENV_OVERRIDES {
        command.env_remove(name);
    }
    command
        .env_remove("USERPIPE_LOG")
        .env_remove("USERPIPE_LOG_FORMAT");
    command
}

/// A webhook receiver on a free loopback port: records each JSON body posted to it.
struct Receiver {
    /// The webhook URL, with a path that stands for a token.
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let app = axum::Router::new()
            .route("/hooks/{token}", axum::routing::post(receive))
            .with_state(bodies.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/T0-{}",
            listener.local_addr().unwrap(),
            Uuid::new_v4().simple()
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { url, bodies, task }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(bodies): State<Arc<Mutex<Vec<serde_json::Value>>>>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> StatusCode {
    bodies.lock().unwrap().push(body);
    StatusCode::OK
}

/// A loopback URL nobody listens on, with a token in its path.
fn dead_url(token: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/hooks/{token}")
}
