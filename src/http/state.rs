//! What the HTTP handlers share: the clients they ask and the roles of this process that are running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::task::TaskTracker;

use super::samples::Samples;
use crate::config::Config;
use crate::kafka::Probe;
use crate::scheduler::Runner;

/// How long a check of Kafka or PostgreSQL waits for an answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a role of this process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleState {
    /// Started, waiting for the dependency it needs before it can work (`"kafka"`, `"postgresql"`).
    Waiting(&'static str),
    Running,
    Stopped,
}

impl RoleState {
    /// As `/readyz` shows it: `running`, `waiting for kafka`, `stopped`.
    pub fn describe(self) -> String {
        match self {
            RoleState::Waiting(dependency) => format!("waiting for {dependency}"),
            RoleState::Running => "running".into(),
            RoleState::Stopped => "stopped".into(),
        }
    }
}

/// Where each role of this process stands.
#[derive(Debug, Default)]
pub struct Roles(Mutex<BTreeMap<&'static str, RoleState>>);

impl Roles {
    pub fn set(&self, role: &'static str, state: RoleState) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(role, state);
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, RoleState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    pub kafka: Arc<Probe>,
    pub pool: Option<PgPool>,
    pub roles: Arc<Roles>,
    /// The base backups, for the time of the newest verified one.
    pub backup_dir: PathBuf,
    /// The configuration (schedule folder, topics, groups, desired settings, token).
    pub config: Arc<Config>,
    /// The pipeline's last hour, for the status page's charts.
    pub samples: Arc<Samples>,
    /// Runs a schedule now for a writing action; its runs are tracked in `runs`.
    pub runner: Arc<Runner>,
    pub runs: TaskTracker,
}

impl HttpState {
    /// What the handlers of a process with `config` share, asking `pool` when it has one. Runs asked for
    /// over HTTP go through `runner`, the process's one (journaled like the scheduler's).
    pub fn new(
        config: &Config,
        pool: Option<PgPool>,
        roles: Arc<Roles>,
        runner: Arc<Runner>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            kafka: Arc::new(Probe::new(&config.kafka.brokers)?),
            runner,
            pool,
            roles,
            backup_dir: config.backup.dir.clone(),
            config: Arc::new(config.clone()),
            samples: Arc::default(),
            runs: TaskTracker::new(),
        })
    }
}
