//! What the HTTP handlers share: the clients they ask and the roles of this process that are running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;

use crate::kafka::Probe;

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
}
