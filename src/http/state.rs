//! What the HTTP handlers share: the clients they ask and the roles of this process that are running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;

use crate::kafka::Probe;

/// How long a check of Kafka or PostgreSQL waits for an answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Which roles of this process are running.
#[derive(Debug, Default)]
pub struct Roles(Mutex<BTreeMap<&'static str, bool>>);

impl Roles {
    pub fn set(&self, role: &'static str, running: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(role, running);
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, bool> {
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
