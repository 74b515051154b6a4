//! Verifying backups: pg_verifybackup on a folder (the new backup's, before it is kept), and `backup verify
//! ID` again later, on the plain folder or on a copy unpacked from `base.tar.zst`, recorded in the backup's
//! `backup.json`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tracing::{info, warn};

use super::catalog::{
    METADATA_FILE, Metadata, Verification, backup_folder, read_metadata, scratch_parent,
    write_metadata,
};
use super::compress::{Unpacked, is_compressed};
use crate::config::Config;
use crate::pg::program::{Line, find_program, problem_lines, run_program};

/// Runs pg_verifybackup on `folder`.
pub async fn verify_folder(
    pg_verifybackup: &Path,
    folder: &Path,
    timeout: Duration,
) -> anyhow::Result<Verification> {
    let mut command = tokio::process::Command::new(pg_verifybackup);
    command.arg("--ignore").arg(METADATA_FILE).arg(folder);
    let output = run_program(command, "pg_verifybackup", timeout, |_| Line::Problem).await?;
    let ok = output.status.success();
    let mut problems = if ok {
        Vec::new()
    } else {
        problem_lines("pg_verifybackup", &output.stderr)
    };
    if !ok && problems.is_empty() {
        problems.push(format!("pg_verifybackup ended with {}", output.status));
    }
    Ok(Verification {
        ok,
        at: Utc::now(),
        problems,
    })
}

/// `backup verify ID`: checks backup `id` again with pg_verifybackup and records the result in its
/// `backup.json` (retention counts only backups whose latest verification passed). A compressed backup
/// is unpacked into a private folder under `backup.scratch` first, removed afterwards.
pub async fn verify(config: &Config, id: &str) -> anyhow::Result<Verification> {
    let folder = backup_folder(&config.backup.dir, id)?;
    let metadata = read_metadata(&folder)?;
    let pg_verifybackup = find_program(&config.backup.pg_bin, "pg_verifybackup")?;
    let unpacked = if is_compressed(&folder) {
        let (from, parent) = (folder.clone(), scratch_parent(config)?);
        let unpacked = tokio::task::spawn_blocking(move || Unpacked::new(&from, &parent))
            .await
            .context("the unpacking panicked")?;
        match unpacked {
            Ok(unpacked) => Some(unpacked),
            // A damaged archive fails verification like a damaged file does.
            Err(e) => {
                let verification = Verification {
                    ok: false,
                    at: Utc::now(),
                    problems: vec![format!("{e:#}")],
                };
                return record_verification(&folder, metadata, verification, id);
            }
        }
    } else {
        None
    };
    let checked = unpacked
        .as_ref()
        .map_or(folder.as_path(), |u| u.path.as_path());
    let verification = verify_folder(&pg_verifybackup, checked, config.backup.timeout).await?;
    drop(unpacked);
    record_verification(&folder, metadata, verification, id)
}

/// Records `verification` in the `backup.json` of backup `id` in `folder`, and logs it.
fn record_verification(
    folder: &Path,
    mut metadata: Metadata,
    verification: Verification,
    id: &str,
) -> anyhow::Result<Verification> {
    metadata.verification = verification.clone();
    write_metadata(folder, &metadata)?;
    if verification.ok {
        info!(message = "backup verified", id);
    } else {
        warn!(message = "backup failed verification", id, problems = %verification.problems.join("; "));
    }
    Ok(verification)
}
