//! The `pgconf-enforce` job: compare the desired file with the server, apply when asked, read the archiver,
//! and report what is not right. The scheduler decides that a report with problems is a failed run.

use serde::Serialize;
use sqlx::Connection;

use super::archive_check::{ArchiveCheck, check_archive};
use super::archiver::{ArchiverStats, archiver, archiving_problem};
use super::compare::{State, names_in};
use super::file::DesiredFile;
use super::server::{apply, check};
use crate::config::Config;

/// What one `pgconf-enforce` run found.
#[derive(Debug, Clone, Serialize)]
pub struct EnforceReport {
    pub file: std::path::PathBuf,
    pub in_force: Vec<String>,
    pub restart_needed: Vec<String>,
    pub drift: Vec<String>,
    pub applied: Vec<String>,
    pub archiver: ArchiverStats,
    /// The archive check, when the schedule asks for it (`archive_check = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_check: Option<ArchiveCheck>,
    /// What is not right: settings not in force, or archiving that fails or lags. Empty when all is well.
    #[serde(skip)]
    pub problems: Vec<String>,
}

/// Compares, applies when `apply_changes` (and something drifts), reads the archiver, and with
/// `archive_check` forces a WAL switch and waits for the segment in the archive.
pub async fn enforce(
    config: &Config,
    apply_changes: bool,
    archive_check: bool,
) -> anyhow::Result<EnforceReport> {
    let file = DesiredFile::load(&config.pgconf.file)?;
    let mut conn = crate::db::connect_one(config.database.url.expose()).await?;
    let (altered, comparisons) = if apply_changes {
        let applied = apply(&mut conn, &file).await?;
        (applied.altered, applied.after)
    } else {
        (Vec::new(), check(&mut conn, &file).await?)
    };
    let stats = archiver(&mut conn).await?;
    let archive_check = if archive_check {
        let wait = config.backup.archive_wait;
        Some(check_archive(&mut conn, &config.backup.wal_archive, wait).await?)
    } else {
        None
    };
    conn.close().await.ok();
    let drift = names_in(&comparisons, State::Drift);
    let restart = names_in(&comparisons, State::RestartNeeded);
    let mut problems = Vec::new();
    if !drift.is_empty() {
        let how = if apply_changes {
            "still differ after apply"
        } else {
            "differ (this schedule does not apply)"
        };
        problems.push(format!("{} {how}", drift.join(", ")));
    }
    if !restart.is_empty() {
        problems.push(format!(
            "{} wait for a postgresql restart",
            restart.join(", ")
        ));
    }
    if let Some(problem) = archiving_problem(&stats) {
        problems.push(problem);
    }
    if let Some(problem) = archive_check.as_ref().and_then(|c| c.problem.clone()) {
        problems.push(format!("archive check: {problem}"));
    }
    Ok(EnforceReport {
        file: file.path,
        in_force: names_in(&comparisons, State::InForce),
        restart_needed: restart,
        drift,
        applied: altered,
        archiver: stats,
        archive_check,
        problems,
    })
}
