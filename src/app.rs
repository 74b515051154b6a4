//! `userpipe run`: starts the chosen roles (the two stages, the sink, the scheduler) and stops them on one
//! signal.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::http::{self, HttpState, RoleState, Roles};
use crate::pipeline::stages::{self, Stage};
use crate::pipeline::{sink, topics};
use crate::scheduler::Runner;
use crate::{db, scheduler};

/// A long-running part of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Timestamp,
    Tags,
    Sink,
    Scheduler,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Timestamp, Role::Tags, Role::Sink, Role::Scheduler];
    /// The pipeline without the scheduler.
    pub const PIPELINE: [Role; 3] = [Role::Timestamp, Role::Tags, Role::Sink];

    pub fn name(self) -> &'static str {
        match self {
            Role::Timestamp => "timestamp",
            Role::Tags => "tags",
            Role::Sink => "sink",
            Role::Scheduler => "scheduler",
        }
    }

    fn needs_database(self) -> bool {
        matches!(self, Role::Sink | Role::Scheduler)
    }
}

impl FromStr for Role {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "timestamp" => Ok(Role::Timestamp),
            "tags" => Ok(Role::Tags),
            "sink" => Ok(Role::Sink),
            "scheduler" => Ok(Role::Scheduler),
            other => {
                bail!("unknown role {other:?}: the roles are timestamp, tags, sink and scheduler")
            }
        }
    }
}

/// `userpipe run`, built: the pool is made (it connects lazily) and the HTTP listener is bound, so a test can
/// listen on port 0 and ask which port it got. Building needs neither Kafka nor PostgreSQL: each role waits
/// for what it needs (the consumers for Kafka and their topics, the sink for the schema) and the others run
/// meanwhile, the HTTP endpoints first.
pub struct App {
    config: Config,
    roles: Vec<Role>,
    pool: Option<PgPool>,
    listener: Option<TcpListener>,
}

impl App {
    pub async fn build(config: &Config, roles: &[Role]) -> anyhow::Result<Self> {
        let pool = if roles.iter().any(|r| r.needs_database()) {
            Some(db::lazy_pool(
                config.database.url.expose(),
                config.database.max_connections,
            )?)
        } else {
            None
        };
        let listener = match config.http.listen.as_str() {
            "" => None,
            address => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (http.listen)"))?,
            ),
        };
        Ok(Self {
            config: config.clone(),
            roles: roles.to_vec(),
            pool,
            listener,
        })
    }

    /// The port the HTTP endpoints listen on, when they are on.
    pub fn http_port(&self) -> Option<u16> {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// Runs the roles and the HTTP endpoints until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let roles = Arc::new(Roles::default());
        // One runner and journal for the scheduler and the HTTP run-now.
        let jobs = if self.listener.is_some() || self.roles.contains(&Role::Scheduler) {
            Some(scheduler::Service::start(
                &self.config,
                self.pool.clone(),
                &shutdown,
            )?)
        } else {
            None
        };
        let runner = jobs.as_ref().map(|jobs| jobs.runner.clone());
        let mut http = None;
        if let (Some(listener), Some(runner)) = (self.listener, &runner) {
            let state = HttpState::new(
                &self.config,
                self.pool.clone(),
                roles.clone(),
                runner.clone(),
            )?;
            let runs = state.runs.clone();
            let limits = http::Limits::from(&self.config.http);
            let server = tokio::spawn(http::serve(listener, state, limits, shutdown.clone()));
            http = Some((server, runs));
        }
        let result = run_roles(
            &self.config,
            &self.roles,
            (self.pool, runner),
            &roles,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        if let Some((server, runs)) = http {
            server.await.context("the http server panicked")??;
            runs.close();
            if tokio::time::timeout(crate::SHUTDOWN_GRACE, runs.wait())
                .await
                .is_err()
            {
                warn!(
                    message = "job runs asked for over http still going at shutdown are abandoned"
                );
            }
        }
        if let Some(jobs) = jobs {
            // Messages of the last runs get a moment; the journal writer has its own grace.
            jobs.finish(Duration::from_secs(1), &shutdown).await?;
        }
        result
    }
}

/// Builds and runs `roles` until `shutdown`.
pub async fn run(
    config: &Config,
    roles: &[Role],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    App::build(config, roles).await?.run(shutdown).await
}

/// Runs `roles` until `shutdown` with the process's database pool and job runner, marking each in
/// `health` while it runs; if one fails, the others are stopped too and the error returned.
pub async fn run_roles(
    config: &Config,
    roles: &[Role],
    (pool, runner): (Option<PgPool>, Option<Arc<Runner>>),
    health: &Arc<Roles>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for &role in roles {
        let (config, shutdown, health) = (config.clone(), shutdown.clone(), health.clone());
        let (pool, runner) = (pool.clone(), runner.clone());
        health.set(role.name(), RoleState::Waiting("kafka"));
        tasks.spawn(async move {
            let result = run_role(role, &config, (pool, runner), &health, shutdown).await;
            health.set(role.name(), RoleState::Stopped);
            result.with_context(|| format!("role {} failed", role.name()))
        });
        info!(message = "role started", role = role.name());
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("a role panicked").and_then(|r| r);
        if let Err(err) = result {
            error!(
                message = "role stopped with an error",
                error = format!("{err:#}")
            );
            shutdown.cancel();
            first_error.get_or_insert(err);
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Runs one role until `shutdown`: first it waits for the dependencies it needs (shown in `health`), then it
/// works.
async fn run_role(
    role: Role,
    config: &Config,
    (pool, runner): (Option<PgPool>, Option<Arc<Runner>>),
    health: &Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topics = &config.topics;
    if role == Role::Sink {
        let Some(pool) = &pool else {
            bail!("the sink needs a database pool");
        };
        health.set(role.name(), RoleState::Waiting("postgresql"));
        if !db::migrate_when_reachable(pool, &shutdown).await? {
            return Ok(());
        }
    }
    if role != Role::Scheduler {
        health.set(role.name(), RoleState::Waiting("kafka"));
        if !topics::ensure_when_reachable(config, topics, &shutdown).await? {
            return Ok(());
        }
    }
    health.set(role.name(), RoleState::Running);
    match (role, pool) {
        (Role::Timestamp, _) => stages::run(Stage::Timestamp, config, topics, shutdown).await,
        (Role::Tags, _) => stages::run(Stage::Tags, config, topics, shutdown).await,
        (Role::Sink, Some(pool)) => sink::run(config, topics, pool, shutdown).await,
        (Role::Sink, None) => bail!("the sink needs a database pool"),
        (Role::Scheduler, _) => match runner {
            Some(runner) => scheduler::serve_with(config, runner, shutdown).await,
            None => bail!("the scheduler needs a job runner"),
        },
    }
}
