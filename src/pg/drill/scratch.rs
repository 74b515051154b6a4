//! The restore drill's scratch folder and the throwaway server in it: made private (0700), run as a
//! non-root user through `pg_ctl`, stopped and deleted however the drill ends; the server's log (its
//! stderr) is logged line by line (`program = "postgres"`) before it goes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::{info, warn};

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

/// The scratch folder and the throwaway server in it. Dropping it stops the server (immediate mode)
/// and deletes the folder; [`Scratch::clean_up`] does the same with a fast shutdown first.
pub struct Scratch {
    pub dir: PathBuf,
    pub data: PathBuf,
    pg_ctl: PathBuf,
    /// Who runs the server: `Some` when userpipe is root.
    pub user: Option<String>,
    started: bool,
    cleaned: bool,
}

impl Scratch {
    pub fn create(parent: &Path, pg_ctl: PathBuf, user: Option<String>) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let dir = parent.join(format!("userpipe-drill-{}", &token[..12]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the scratch folder {}", dir.display()))?;
        Ok(Self {
            data: dir.join("data"),
            dir,
            pg_ctl,
            user,
            started: false,
            cleaned: false,
        })
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
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot delete the drill's scratch folder {}",
                    self.dir.display()
                )
            }),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.cleaned
            && let Err(e) = self.stop_and_remove("immediate")
        {
            warn!(message = "restore drill clean-up failed", error = %format!("{e:#}"));
        }
    }
}
