//! `backup restore`: point-in-time recovery as one command. It picks the backup the target needs, copies it
//! into an empty folder, writes the recovery settings (`restore_command` reading the archive, the target,
//! `recovery_target_action = 'promote'`) and `recovery.signal`, and says the `pg_ctl start` that finishes
//! it; with `--verify` a throwaway copy of that folder is first recovered as the drill does, and its rows
//! and newest commit reported. How far the archive reaches is read from it: the newest commit with
//! `pg_waldump`, the newest segment from its name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use super::target::{Candidate, Reach, Target, choose, newest_commit, recovery_settings};
use crate::config::Config;
use crate::pg::archive::{Lsn, SegmentSize, WalFile};
use crate::pg::backup;
use crate::pg::drill::recovery::{copy_backup, restore_command};
use crate::pg::drill::scratch::{chown, running_as_root};
use crate::pg::drill::{Recovered, Source, recover};
use crate::pg::program::{find_program, program_output};

/// What `backup restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    /// Where recovery stops, as given.
    pub target: String,
    /// The restored data folder.
    pub to: PathBuf,
    /// The settings appended to its `postgresql.auto.conf`.
    pub settings: Vec<String>,
    /// The command that starts the server, which recovers and promotes.
    pub start_command: Vec<String>,
    /// What a throwaway copy recovered (`--verify`).
    pub verified: Option<Recovered>,
}

/// Restores the backup that `target` needs into the empty or new folder `to`, ready to start.
#[tracing::instrument(skip_all, fields(target = %target, to = %to.display()))]
pub async fn restore(
    config: &Config,
    target: Target,
    to: &Path,
    verify: bool,
) -> anyhow::Result<RestoreReport> {
    let listed = backup::list(&config.backup.dir)?;
    let candidates: Vec<Candidate> = listed
        .iter()
        .filter_map(|l| {
            let m = l.metadata.as_ref()?;
            Some(Candidate {
                id: l.id.clone(),
                finished_at: m.finished_at,
                end_lsn: Lsn::parse(&m.end_lsn)?,
                verified: m.verification.ok,
            })
        })
        .collect();
    let archive = std::fs::canonicalize(&config.backup.wal_archive).with_context(|| {
        format!(
            "cannot open the WAL archive {} (backup.wal_archive)",
            config.backup.wal_archive.display()
        )
    })?;
    let reach = match target {
        Target::Time(_) => Reach {
            newest_commit: newest_archived_commit(config, &archive).await?,
            end: None,
        },
        Target::Lsn(_) => Reach {
            newest_commit: None,
            end: archive_end(&archive)?,
        },
        Target::Latest => Reach::default(),
    };
    let chosen = choose(&candidates, &target, &reach).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(backup) = listed.iter().find(|l| l.id == chosen.id) else {
        bail!("backup {} went away", chosen.id);
    };
    let timeline = backup.metadata.as_ref().map_or(1, |m| m.timeline);
    let restore_command = restore_command(&archive)?;

    let to = empty_folder(to)?;
    let mut guard = EmptyOnDrop(Some(to.clone()));
    info!(message = "restore started", backup = %chosen.id, target = %target, to = %to.display());
    {
        let (from, into) = (backup.path.clone(), to.clone());
        // Dropped (a signal), the restore stops its copy too.
        let cancel = tokio_util::sync::CancellationToken::new();
        let _stop = cancel.clone().drop_guard();
        // A copy that stops empties the folder itself, after its last write: when the restore was dropped
        // meanwhile, the guard below emptied it while the copy was still writing.
        tokio::task::spawn_blocking(move || {
            let copied = copy_backup(&from, &into, &cancel);
            if copied.is_err() {
                empty(&into);
            }
            copied
        })
        .await
        .context("the copy panicked")?
        .with_context(|| format!("cannot copy backup {} to {}", chosen.id, to.display()))?;
    }
    let settings = recovery_settings(&target, &restore_command);
    write_recovery(&to, &settings, &chosen.id, &target)?;
    let user = running_as_root().then(|| config.backup.drill_user.clone());
    if let Some(user) = &user {
        chown(&to, user).await?;
    }
    guard.0 = None;

    let verified = if verify {
        Some(recover(config, Source::Restored(&to), &target, timeline).await?)
    } else {
        None
    };
    let pg_ctl = find_program(&config.backup.pg_bin, "pg_ctl")?;
    let mut start_command: Vec<String> = match &user {
        Some(user) => vec!["runuser".into(), "-u".into(), user.clone(), "--".into()],
        None => Vec::new(),
    };
    start_command.extend([
        pg_ctl.display().to_string(),
        "-D".into(),
        to.display().to_string(),
        "start".into(),
    ]);
    info!(message = "restore written", backup = %chosen.id, to = %to.display());
    Ok(RestoreReport {
        backup_id: chosen.id.clone(),
        target: target.to_string(),
        to,
        settings: settings.iter().map(|(n, v)| format!("{n} = {v}")).collect(),
        start_command,
        verified,
    })
}

/// `to` made absolute: a new folder (mode 0700), or an existing empty one. A folder with anything in it is
/// refused: a restore never mixes with another cluster's files.
fn empty_folder(to: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: restore into an empty or new folder (move the old data folder aside first)",
                    to.display()
                );
            }
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private", to.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(to)
                .with_context(|| format!("cannot create {}", to.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", to.display())),
    }
    std::fs::canonicalize(to).with_context(|| format!("cannot open {}", to.display()))
}

/// Empties a restore folder that was not finished, leaving the folder itself (it may be a mount point).
struct EmptyOnDrop(Option<PathBuf>);

impl Drop for EmptyOnDrop {
    fn drop(&mut self) {
        if let Some(folder) = self.0.take() {
            empty(&folder);
        }
    }
}

/// Removes everything in `folder`, leaving the folder itself.
fn empty(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            warn!(message = "cannot remove what an unfinished restore copied", path = %path.display(), error = %e);
        }
    }
}

/// Appends the recovery settings to the copy's `postgresql.auto.conf` (after the live server's ALTER
/// SYSTEM settings, which it keeps) and writes `recovery.signal`.
fn write_recovery(
    data: &Path,
    settings: &[(&str, String)],
    backup_id: &str,
    target: &Target,
) -> anyhow::Result<()> {
    for name in ["standby.signal", "postmaster.pid", "postmaster.opts"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let names: Vec<&str> = settings.iter().map(|(n, _)| *n).collect();
    let mut text = format!(
        "\n# Added by `userpipe backup restore` at {}: recover backup {backup_id} to {target} from the WAL \
         archive, then promote.\n# Once the server runs, remove them: ALTER SYSTEM RESET {}.\n",
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        names.join("; ALTER SYSTEM RESET ")
    );
    for (name, value) in settings {
        text.push_str(&format!("{name} = {value}\n"));
    }
    let path = data.join("postgresql.auto.conf");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::write(data.join("recovery.signal"), "")
    };
    write().with_context(|| format!("cannot write the recovery settings into {}", data.display()))
}

/// The whole segments in `archive`, newest position first (the newest timeline first at a position).
fn segments_newest_first(archive: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(archive)
        .with_context(|| format!("cannot read the WAL archive {}", archive.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| matches!(WalFile::parse(n), WalFile::Segment { .. }))
        .collect();
    names.sort_by(|a, b| (&b[8..], &b[..8]).cmp(&(&a[8..], &a[..8])));
    Ok(names)
}

/// The end of the newest archived segment, and its name.
fn archive_end(archive: &Path) -> anyhow::Result<Option<(Lsn, String)>> {
    let Some(newest) = segments_newest_first(archive)?.into_iter().next() else {
        return Ok(None);
    };
    let bytes = std::fs::metadata(archive.join(&newest))
        .with_context(|| format!("cannot read {newest} in the archive"))?
        .len();
    let size = SegmentSize::new(bytes).ok_or_else(|| {
        anyhow::anyhow!("{newest} in the archive has {bytes} bytes, not a WAL segment's size")
    })?;
    let number = size
        .number(&newest)
        .ok_or_else(|| anyhow::anyhow!("{newest} is not a segment of {bytes} bytes"))?;
    Ok(Some((size.end_of(number), newest)))
}

/// The newest commit (or abort) in the archive and its segment, read with `pg_waldump` from the newest
/// segment back until one holds a transaction's end.
async fn newest_archived_commit(
    config: &Config,
    archive: &Path,
) -> anyhow::Result<Option<(DateTime<Utc>, String)>> {
    let pg_waldump = find_program(&config.backup.pg_bin, "pg_waldump")?;
    for segment in segments_newest_first(archive)? {
        let mut command = tokio::process::Command::new(&pg_waldump);
        command
            .env("TZ", "UTC")
            .arg("--path")
            .arg(archive)
            .arg("--rmgr=Transaction")
            .arg(&segment)
            .arg(&segment);
        let what = format!("pg_waldump of {segment}");
        let output = program_output(command, &what, Duration::from_secs(60)).await?;
        // At the end of the WAL in a segment pg_waldump may complain and exit 1; what it printed stands.
        if let Some(at) = newest_commit(&String::from_utf8_lossy(&output.stdout)) {
            return Ok(Some((at, segment)));
        }
    }
    Ok(None)
}
