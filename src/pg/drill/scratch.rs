//! The restore drill's scratch folder and the throwaway server in it: made private (0700), run as a
//! non-root user through `pg_ctl`, stopped and deleted however the drill ends; the server's log (its
//! stderr) is logged line by line (`program = "postgres"`) before it goes.
//!
//! A drill dropped part way (a timeout, a shutdown) stops its copy and is cleaned up in the background,
//! once the copy has stopped writing; [`cleanups_finished`] waits for those clean-ups. Each scratch folder
//! `userpipe-drill-<token>` has a lock file `userpipe-drill-<token>.lock` beside it, locked by its drill
//! for its lifetime: [`sweep`] removes the folders whose lock is free (their process died without
//! cleaning up), stopping a server left running in one, and never touches a live drill's.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::recovery::copy_backup;

/// The start of every scratch folder's name.
pub const SCRATCH_PREFIX: &str = "userpipe-drill-";

/// Clean-ups of drills dropped part way, still going.
static CLEANUPS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Waits up to `within` for the clean-ups of drills that were dropped part way; false when one still
/// goes (it is then left to the next start's [`sweep`]).
pub async fn cleanups_finished(within: Duration) -> bool {
    CLEANUPS.close();
    let done = tokio::time::timeout(within, CLEANUPS.wait()).await.is_ok();
    CLEANUPS.reopen();
    done
}

/// Lines of the throwaway server's log put into an error.
const LOG_TAIL: usize = 15;

/// Whether this process runs as root (then the server runs as `backup.drill_user`).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `folder` and everything in it to `user` (and the user's login group).
pub async fn chown(folder: &Path, user: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(folder)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run chown")?;
    if !output.status.success() {
        bail!(
            "cannot give the scratch folder to {user}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A loopback port number nobody listens on: it names the server's socket file and its shared memory
/// (the server itself listens on no TCP port).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot pick a port")?;
    Ok(listener.local_addr()?.port())
}

/// The scratch folder and the throwaway server in it. Dropping it stops the copy, then (in the
/// background, tracked for [`cleanups_finished`]) stops the server (immediate mode) and deletes the
/// folder; [`Scratch::clean_up`] does the same at once with a fast shutdown first.
pub struct Scratch {
    pub dir: PathBuf,
    pub data: PathBuf,
    pg_ctl: PathBuf,
    /// Who runs the server: `Some` when userpipe is root.
    pub user: Option<String>,
    /// The lock file beside the folder, locked while this drill lives.
    lock: Option<(PathBuf, File)>,
    /// Stops the copy.
    cancel: CancellationToken,
    /// Held by the copy while it writes: the clean-up takes it before deleting anything.
    writing: Arc<Mutex<()>>,
    started: bool,
    cleaned: bool,
}

impl Scratch {
    pub fn create(parent: &Path, pg_ctl: PathBuf, user: Option<String>) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{SCRATCH_PREFIX}{}", &token[..12]);
        let dir = parent.join(&name);
        // Locked before the folder exists, so no sweep ever sees the folder unlocked while this lives.
        let lock_path = parent.join(format!("{name}.lock"));
        let lock = File::create_new(&lock_path)
            .and_then(|file| file.try_lock().map(|()| file).map_err(std::io::Error::from))
            .with_context(|| format!("cannot lock the scratch folder's {}", lock_path.display()))?;
        let created = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        if let Err(e) = created {
            let _ = std::fs::remove_file(&lock_path);
            return Err(e)
                .with_context(|| format!("cannot create the scratch folder {}", dir.display()));
        }
        Ok(Self {
            data: dir.join("data"),
            dir,
            pg_ctl,
            user,
            lock: Some((lock_path, lock)),
            cancel: CancellationToken::new(),
            writing: Arc::default(),
            started: false,
            cleaned: false,
        })
    }

    /// Copies the folder `from` into the scratch folder's `data` (see [`copy_backup`]), or unpacks it when it
    /// is a compressed backup, on a blocking thread; dropping the drill stops it within one chunk (one file
    /// when unpacking).
    pub async fn copy_in(&self, from: &Path) -> std::io::Result<()> {
        let (from, to) = (from.to_owned(), self.data.clone());
        let (cancel, writing) = (self.cancel.clone(), self.writing.clone());
        tokio::task::spawn_blocking(move || {
            let _writing = writing.lock().unwrap_or_else(|e| e.into_inner());
            copy_backup(&from, &to, &cancel)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of the server's log, for an error.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
        if tail.is_empty() {
            "(the server log is empty)".into()
        } else {
            format!("the end of the server log:\n{tail}")
        }
    }

    /// `pg_ctl ARGS`, as the drill user when there is one.
    fn pg_ctl_args(&self, args: &[&str]) -> (PathBuf, Vec<String>) {
        let mut full: Vec<String> = Vec::new();
        let program = match &self.user {
            Some(user) => {
                full.extend(["-u".into(), user.clone(), "--".into()]);
                full.push(self.pg_ctl.to_string_lossy().into_owned());
                PathBuf::from("runuser")
            }
            None => self.pg_ctl.clone(),
        };
        full.extend(args.iter().map(|a| a.to_string()));
        (program, full)
    }

    fn pg_ctl_async(&self, args: &[&str]) -> tokio::process::Command {
        let (program, args) = self.pg_ctl_args(args);
        let mut command = tokio::process::Command::new(program);
        command.args(args).stdin(Stdio::null()).kill_on_drop(true);
        command
    }

    fn pg_ctl_sync(&self, args: &[&str]) -> bool {
        let (program, args) = self.pg_ctl_args(args);
        std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the server; returns once it runs recovery (or is up).
    pub async fn start(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.log_path().to_string_lossy().into_owned();
        let seconds = timeout.as_secs().clamp(1, 3600).to_string();
        self.started = true;
        let output = self
            .pg_ctl_async(&["-D", &data, "-l", &log, "-w", "-t", &seconds, "start"])
            .output()
            .await
            .context("cannot run pg_ctl start")?;
        if !output.status.success() {
            bail!(
                "the restored server did not start: {}; {}",
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Whether the server is still running (`pg_ctl status`).
    pub async fn is_running(&self) -> anyhow::Result<bool> {
        let data = self.data.to_string_lossy().into_owned();
        let status = self
            .pg_ctl_async(&["-D", &data, "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("cannot run pg_ctl status")?;
        Ok(status.success())
    }

    /// Stops the server (fast, else immediate) and deletes the scratch folder.
    pub fn clean_up(mut self) -> anyhow::Result<()> {
        self.stop_and_remove("fast")
    }

    fn stop_and_remove(&mut self, mode: &str) -> anyhow::Result<()> {
        self.cleaned = true;
        self.cancel.cancel();
        // The copy stops within one chunk; nothing is deleted while it still writes.
        let _copy_stopped = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if self.started {
            let data = self.data.to_string_lossy().into_owned();
            let stopped = self.pg_ctl_sync(&["-D", &data, "-m", mode, "-w", "-t", "60", "stop"]);
            if !stopped && mode != "immediate" {
                self.pg_ctl_sync(&["-D", &data, "-m", "immediate", "-w", "-t", "60", "stop"]);
            }
            self.started = false;
        }
        for line in self.log().lines().filter(|l| !l.trim().is_empty()) {
            info!(message = line, program = "postgres");
        }
        let removed = match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot delete the drill's scratch folder {}",
                    self.dir.display()
                )
            }),
        };
        if removed.is_ok()
            && let Some((path, _locked)) = self.lock.take()
        {
            let _ = std::fs::remove_file(path);
        }
        removed
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Dropped part way: stop the copy now, and clean up in the background once it has stopped.
        self.cancel.cancel();
        let mut rest = Scratch {
            dir: self.dir.clone(),
            data: self.data.clone(),
            pg_ctl: self.pg_ctl.clone(),
            user: self.user.take(),
            lock: self.lock.take(),
            cancel: self.cancel.clone(),
            writing: self.writing.clone(),
            started: self.started,
            cleaned: true,
        };
        self.cleaned = true;
        let span = tracing::Span::current();
        let mut clean = move || {
            span.in_scope(|| {
                if let Err(e) = rest.stop_and_remove("immediate") {
                    warn!(message = "restore drill clean-up failed", error = %format!("{e:#}"));
                }
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                CLEANUPS.spawn_blocking_on(clean, &runtime);
            }
            Err(_) => clean(),
        }
    }
}

/// Removes the scratch folders in `parent` that no live drill holds (their process died without cleaning
/// up), first stopping a server still running in one; returns the folders removed.
pub fn sweep(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if !name.starts_with(SCRATCH_PREFIX) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let lock_path = parent.join(format!("{name}.lock"));
        let lock = match File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
        {
            Ok(file) => file,
            Err(e) => {
                warn!(message = "cannot check a leftover scratch folder", path = %dir.display(), error = %e);
                continue;
            }
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue, // a live drill's
            Err(TryLockError::Error(e)) => {
                warn!(message = "cannot check a leftover scratch folder", path = %dir.display(), error = %e);
                continue;
            }
        }
        stop_leftover_server(&dir.join("data"));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                let _ = std::fs::remove_file(&lock_path);
                warn!(message = "removed a scratch folder an interrupted restore drill left", path = %dir.display());
                removed.push(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&lock_path);
            }
            Err(e) => {
                warn!(message = "cannot remove a scratch folder an interrupted restore drill left", path = %dir.display(), error = %e)
            }
        }
    }
    removed
}

/// Stops the postmaster of `data` if one still runs there: immediate shutdown (SIGQUIT), and SIGKILL if it
/// still runs 10 seconds later, waiting up to 5 more. The pid comes from `postmaster.pid` and must be a
/// process whose command line names `data` (an exited process's, awaiting its parent's reap, names nothing).
fn stop_leftover_server(data: &Path) {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    let names_data = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*data.to_string_lossy()))
            .unwrap_or(false)
    };
    if pid <= 1 || !names_data(pid) {
        return;
    }
    let signal_and_wait = |signal: i32, wait: Duration| {
        // SAFETY: kill(2) on a process checked just above; no memory is involved.
        unsafe {
            libc::kill(pid, signal);
        }
        let deadline = Instant::now() + wait;
        while names_data(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        !names_data(pid)
    };
    if signal_and_wait(libc::SIGQUIT, Duration::from_secs(10))
        || signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
    {
        warn!(
            message = "stopped the server an interrupted restore drill left running",
            pid
        );
    } else {
        warn!(
            message = "cannot stop the server an interrupted restore drill left running",
            pid
        );
    }
}
