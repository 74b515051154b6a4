//! The job dispatch: the kinds of job a schedule can name, their typed `[params]`, and the one place that
//! maps a kind to the code that runs it. Jobs return typed reports; this module decides what counts as a
//! failure of the run ([`JobFailure`] keeps a failed job's account for the journal).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sqlx::PgPool;

use super::history;
use crate::config::Config;
use crate::pg::{backup, conf, drill};
use crate::pipeline::{fetch, topics};

/// What a run does, with its typed parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "job", content = "params", rename_all = "kebab-case")]
pub enum JobSpec {
    FetchUsers(FetchParams),
    BaseBackup(BackupParams),
    RestoreDrill(DrillParams),
    PgconfEnforce(PgconfParams),
    PruneHistory(PruneParams),
}

impl JobSpec {
    /// The kind as written in a schedule file.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::FetchUsers(_) => "fetch-users",
            JobSpec::BaseBackup(_) => "base-backup",
            JobSpec::RestoreDrill(_) => "restore-drill",
            JobSpec::PgconfEnforce(_) => "pgconf-enforce",
            JobSpec::PruneHistory(_) => history::SCHEDULE,
        }
    }
}

/// The job kinds, as written in schedule files.
pub const JOB_KINDS: [&str; 5] = [
    "fetch-users",
    "base-backup",
    "restore-drill",
    "pgconf-enforce",
    history::SCHEDULE,
];

/// `[params]` of `fetch-users`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FetchParams {
    /// Users per run (1 to 5000).
    #[serde(default = "one")]
    pub results: usize,
    /// A source other than `fetch.source`: a URL, or `generator`.
    #[serde(default)]
    pub source: Option<String>,
}

impl Default for FetchParams {
    fn default() -> Self {
        Self {
            results: 1,
            source: None,
        }
    }
}

fn one() -> usize {
    1
}

/// `[params]` of `base-backup`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Verified backups to keep, instead of `backup.keep` (1 or more).
    #[serde(default)]
    pub keep: Option<usize>,
}

/// `[params]` of `restore-drill`: none; the drill takes the newest verified backup.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DrillParams {}

/// `[params]` of `pgconf-enforce`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PgconfParams {
    /// Write drifting settings with ALTER SYSTEM and reload (true), or only check and report (false).
    #[serde(default = "yes")]
    pub apply: bool,
    /// Also force a WAL switch and wait until the segment is in `backup.wal_archive`.
    #[serde(default)]
    pub archive_check: bool,
}

impl Default for PgconfParams {
    fn default() -> Self {
        Self {
            apply: true,
            archive_check: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// `[params]` of `prune-history`: none; `scheduler.history` and `scheduler.history_keep` say what to keep.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneParams {}

/// A job's failure that still has an account for the journal (the archiver's statistics of a failed
/// `pgconf-enforce`, ...): the run is recorded `failed` with `message` as its error and `detail` as its
/// detail.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub message: String,
    pub detail: serde_json::Value,
}

/// What the fetch runs of one process share: a producer (its start-up costs more than publishing one user),
/// and whether the topics are known to exist. Only fetch runs touch Kafka: a backup, a drill or pgconf
/// enforcement runs while it is down.
pub struct KafkaSide {
    pub producer: crate::kafka::Producer,
    topics_ready: tokio::sync::OnceCell<()>,
}

impl KafkaSide {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            producer: crate::kafka::producer(&config.kafka)?,
            topics_ready: tokio::sync::OnceCell::new(),
        })
    }
}

/// Runs `job` as run `run_id`; the job's report becomes the run's detail. `pool` is the journal's
/// database, which `prune-history` prunes.
pub async fn execute(
    config: &Config,
    kafka: &KafkaSide,
    pool: Option<&PgPool>,
    job: &JobSpec,
    run_id: Uuid,
) -> anyhow::Result<serde_json::Value> {
    match job {
        JobSpec::FetchUsers(params) => {
            kafka
                .topics_ready
                .get_or_try_init(|| topics::ensure(config, &config.topics))
                .await?;
            let producer = &kafka.producer;
            let mut config = config.clone();
            if let Some(source) = &params.source {
                config.fetch.source = source.clone();
            }
            let report = fetch::run(&config, producer, params.results, run_id).await?;
            Ok(serde_json::to_value(report)?)
        }
        JobSpec::BaseBackup(params) => {
            let mut config = config.clone();
            if let Some(keep) = params.keep {
                config.backup.keep = keep;
            }
            let report = backup::run(&config, false).await?;
            let detail = serde_json::to_value(&report)?;
            // The backup is kept, but the archive it is restored with is not complete, or it could not
            // be compressed as configured: the run failed.
            match report
                .archive_problem
                .as_ref()
                .or(report.compress_error.as_ref())
            {
                None => Ok(detail),
                Some(problem) => Err(JobFailure {
                    message: problem.clone(),
                    detail,
                }
                .into()),
            }
        }
        JobSpec::RestoreDrill(_) => {
            let report = drill::run(config, None).await?;
            Ok(serde_json::to_value(report)?)
        }
        JobSpec::PgconfEnforce(params) => {
            let report = conf::enforce(config, params.apply, params.archive_check).await?;
            let detail = serde_json::to_value(&report)?;
            // Settings not in force, or archiving that fails or lags: the job did not do its work.
            if report.problems.is_empty() {
                Ok(detail)
            } else {
                Err(JobFailure {
                    message: report.problems.join("; "),
                    detail,
                }
                .into())
            }
        }
        JobSpec::PruneHistory(_) => {
            let Some(pool) = pool else {
                anyhow::bail!("prune-history needs the database, and this process has none");
            };
            let history = &config.scheduler;
            let report = history::prune(pool, history.history, history.history_keep).await?;
            Ok(serde_json::to_value(report)?)
        }
    }
}
