//! `GET /api/postgres`: the status page's PostgreSQL section: the base backups (time, size, duration,
//! verification), the last restore drill run, the archiver, and whether the archiving settings are in
//! force. Setting values are not shown (an `archive_command` may carry credentials): names and states only.

use std::future::Future;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::state::{CHECK_TIMEOUT, HttpState};
use crate::pg::{backup, conf};
use crate::scheduler::journal::RunRecord;
use crate::scheduler::timeline;

/// One folder of `backup.dir`.
#[derive(Debug, Serialize)]
pub struct BackupRow {
    pub id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub bytes: Option<u64>,
    /// The size of its `base.tar.zst` when stored compressed (`backup.compress`).
    pub compressed_bytes: Option<u64>,
    pub duration_ms: Option<i64>,
    /// The latest pg_verifybackup passed (`false` also for an incomplete folder).
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
    /// What is wrong: failed verification lines, or why the folder has no `backup.json`.
    pub problems: Vec<String>,
}

/// A desired setting's state, without its value.
#[derive(Debug, Serialize)]
pub struct SettingState {
    pub name: String,
    pub state: conf::State,
}

/// The archiving settings next to the server's.
#[derive(Debug, Serialize)]
pub struct Settings {
    pub file: String,
    pub verdict: conf::Outcome,
    pub settings: Vec<SettingState>,
}

/// The archiver's account and what is wrong with it.
#[derive(Debug, Serialize)]
pub struct Archiver {
    #[serde(flatten)]
    pub stats: conf::ArchiverStats,
    pub problem: Option<String>,
}

/// One part of the section: its value, or why it is missing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part<T> {
    Ok(T),
    Error(String),
}

#[derive(Debug, Serialize)]
pub struct Postgres {
    pub backup_dir: String,
    pub backups: Part<Vec<BackupRow>>,
    /// The last finished `restore-drill` run (`null`: none yet).
    pub drill: Part<Option<RunRecord>>,
    pub archiver: Part<Archiver>,
    pub settings: Part<Settings>,
}

/// `work`'s answer within [`CHECK_TIMEOUT`], or why not.
async fn bounded<T>(work: impl Future<Output = anyhow::Result<T>>) -> Part<T> {
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(value)) => Part::Ok(value),
        Ok(Err(e)) => Part::Error(format!("{e:#}")),
        Err(_) => Part::Error(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    }
}

pub async fn postgres(State(state): State<HttpState>) -> Json<Postgres> {
    let dir = state.config.backup.dir.clone();
    let backups = bounded(async move {
        let listed = tokio::task::spawn_blocking(move || backup::list(&dir)).await??;
        Ok(listed.into_iter().map(backup_row).collect())
    });
    let (backups, drill, archiver, settings) = match &state.pool {
        None => (backups.await, no_database(), no_database(), no_database()),
        Some(pool) => tokio::join!(
            backups,
            bounded(timeline::last_finished_run_of(pool, "restore-drill")),
            bounded(archiver(pool)),
            bounded(settings(pool, &state.config.pgconf.file)),
        ),
    };
    Json(Postgres {
        backup_dir: state.config.backup.dir.display().to_string(),
        backups,
        drill,
        archiver,
        settings,
    })
}

fn no_database<T>() -> Part<T> {
    Part::Error("this process has no database".to_owned())
}

fn backup_row(listed: backup::Listed) -> BackupRow {
    match listed.metadata {
        Some(m) => BackupRow {
            id: listed.id,
            started_at: Some(m.started_at),
            finished_at: Some(m.finished_at),
            bytes: Some(m.bytes),
            compressed_bytes: m.compressed.map(|c| c.bytes),
            duration_ms: Some((m.finished_at - m.started_at).num_milliseconds()),
            verified: m.verification.ok,
            verified_at: Some(m.verification.at),
            problems: m.verification.problems,
        },
        None => BackupRow {
            id: listed.id,
            started_at: None,
            finished_at: None,
            bytes: None,
            compressed_bytes: None,
            duration_ms: None,
            verified: false,
            verified_at: None,
            problems: listed.problem.into_iter().collect(),
        },
    }
}

async fn archiver(pool: &PgPool) -> anyhow::Result<Archiver> {
    let mut conn = pool.acquire().await?;
    let stats = conf::archiver(&mut conn).await?;
    Ok(Archiver {
        problem: conf::archiving_problem(&stats),
        stats,
    })
}

async fn settings(pool: &PgPool, file: &std::path::Path) -> anyhow::Result<Settings> {
    let path = file.to_owned();
    let file = tokio::task::spawn_blocking(move || conf::DesiredFile::load(&path)).await??;
    let mut conn = pool.acquire().await?;
    let comparisons = conf::check(&mut conn, &file).await?;
    Ok(Settings {
        file: file.path.display().to_string(),
        verdict: conf::Outcome::of(&comparisons),
        settings: comparisons
            .into_iter()
            .map(|c| SettingState {
                name: c.name,
                state: c.state,
            })
            .collect(),
    })
}
