//! The pipeline under measurement: `userpipe run --roles timestamp,tags,sink` as child processes of the
//! benchmark, sharing the consumer groups, so the kernel accounts their CPU time and memory apart from
//! the publisher, the broker and PostgreSQL (`/proc/<pid>/stat` and `/proc/<pid>/status`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::config::env::is_setting_variable;
use crate::config::{Config, Secret};

/// What the kernel has accounted to one process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time in user mode, seconds.
    pub user: f64,
    /// CPU time in the kernel on its behalf, seconds.
    pub system: f64,
    /// Resident memory now, KiB (`VmRSS`).
    pub rss_kb: u64,
    /// Peak resident memory, KiB (`VmHWM`).
    pub peak_rss_kb: u64,
}

impl Usage {
    /// `stat` and `status` are the texts of `/proc/<pid>/stat` and `/proc/<pid>/status`; `ticks` the
    /// clock ticks per second the CPU times are counted in.
    pub fn parse(stat: &str, status: &str, ticks: f64) -> Option<Usage> {
        // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of the file, utime and stime, are the 12th and 13th after the name.
        let user: u64 = fields.get(11)?.parse().ok()?;
        let system: u64 = fields.get(12)?.parse().ok()?;
        let kb = |key: &str| -> Option<u64> {
            let line = status.lines().find_map(|l| l.strip_prefix(key))?;
            line.trim().trim_end_matches("kB").trim().parse().ok()
        };
        Some(Usage {
            user: user as f64 / ticks,
            system: system as f64 / ticks,
            rss_kb: kb("VmRSS:")?,
            peak_rss_kb: kb("VmHWM:")?,
        })
    }

    /// The usage of process `pid`; `None` once it is gone.
    pub fn of(pid: u32) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Self::parse(&stat, &status, ticks_per_second())
    }

    /// CPU time in both modes, seconds.
    pub fn cpu(&self) -> f64 {
        self.user + self.system
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// One pipeline process and the last usage read of it.
struct Replica {
    child: Child,
    pid: u32,
    last: Usage,
    killed: bool,
}

/// The pipeline's processes.
pub struct Replicas {
    replicas: Vec<Replica>,
    config_file: PathBuf,
}

/// The roles every replica runs.
pub const ROLES: &str = "timestamp,tags,sink";

impl Replicas {
    /// Starts `count` replicas of `userpipe run --roles timestamp,tags,sink` on `config` (the benchmark's
    /// topics and groups), writing into `database_url`. The configuration goes to them in a file holding
    /// no secret; the database URL in their environment.
    pub fn start(config: &Config, database_url: &str, count: usize) -> anyhow::Result<Self> {
        let mut shared = config.clone();
        shared.database.url = Secret::new("");
        shared.notify.url = Secret::new("");
        shared.http.listen = String::new();
        let config_file =
            std::env::temp_dir().join(format!("userpipe-bench-{}.toml", shared.kafka.group_prefix));
        let text = toml::to_string(&shared).context("cannot write the replicas' configuration")?;
        std::fs::write(&config_file, text)
            .with_context(|| format!("cannot write {}", config_file.display()))?;
        let mut replicas = Self {
            replicas: Vec::with_capacity(count),
            config_file,
        };
        let program = std::env::current_exe().context("cannot find the userpipe binary")?;
        for _ in 0..count {
            let mut command = Command::new(&program);
            // The file says everything: no setting from the benchmark's environment applies (the log's
            // own variables are kept).
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if is_setting_variable(&name) && !name.starts_with("USERPIPE_LOG") {
                    command.env_remove(&*name);
                }
            }
            command
                .arg("--config")
                .arg(&replicas.config_file)
                .args(["run", "--roles", ROLES])
                .env("DATABASE_URL", database_url)
                .env("USERPIPE_HTTP_ADDR", "")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true);
            if std::env::var_os("USERPIPE_LOG").is_none() {
                command.env("USERPIPE_LOG", "warn");
            }
            let child = command
                .spawn()
                .with_context(|| format!("cannot start {}", program.display()))?;
            let pid = child.id().context("a replica exited at once")?;
            replicas.replicas.push(Replica {
                child,
                pid,
                last: Usage::default(),
                killed: false,
            });
        }
        Ok(replicas)
    }

    /// The process ids, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.replicas.iter().map(|r| r.pid).collect()
    }

    /// Reads every live replica's usage; fails when one that was not killed has exited.
    pub fn sample(&mut self) -> anyhow::Result<()> {
        for (at, replica) in self.replicas.iter_mut().enumerate() {
            if replica.killed {
                continue;
            }
            if let Some(status) = replica.child.try_wait()? {
                bail!("replica {} (pid {}) exited: {status}", at + 1, replica.pid);
            }
            if let Some(usage) = Usage::of(replica.pid) {
                replica.last = usage;
            }
        }
        Ok(())
    }

    /// The CPU seconds of every replica together (user, system), as last sampled.
    pub fn cpu(&self) -> (f64, f64) {
        self.replicas
            .iter()
            .fold((0.0, 0.0), |(u, s), r| (u + r.last.user, s + r.last.system))
    }

    /// The resident memory of the largest replica now, and the largest peak, KiB, as last sampled.
    pub fn rss_kb(&self) -> (u64, u64) {
        let live = self.replicas.iter().filter(|r| !r.killed);
        let now = live.map(|r| r.last.rss_kb).max().unwrap_or(0);
        let peak = self.replicas.iter().map(|r| r.last.peak_rss_kb).max();
        (now, peak.unwrap_or(0))
    }

    /// Kills replica `at` (from 0) with SIGKILL, as a crash would, after reading its usage one last time.
    pub async fn kill(&mut self, at: usize) -> anyhow::Result<()> {
        self.sample()?;
        let replica = &mut self.replicas[at];
        replica
            .child
            .kill()
            .await
            .context("cannot kill a replica")?;
        replica.killed = true;
        Ok(())
    }

    /// Stops the replicas as an operator would (SIGTERM), after a last read of their usage; one that has
    /// not exited within 15 s is killed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.sample()?;
        for replica in self.replicas.iter().filter(|r| !r.killed) {
            // SAFETY: kill only sends a signal to a process this benchmark started and still waits for.
            unsafe { libc::kill(replica.pid as i32, libc::SIGTERM) };
        }
        for replica in self.replicas.iter_mut().filter(|r| !r.killed) {
            let exited = tokio::time::timeout(Duration::from_secs(15), replica.child.wait()).await;
            match exited {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => bail!("replica pid {} stopped with {status}", replica.pid),
                Ok(Err(error)) => return Err(error).context("cannot wait for a replica"),
                Err(_) => {
                    replica.child.kill().await.ok();
                    bail!("replica pid {} did not stop within 15 s", replica.pid);
                }
            }
        }
        Ok(())
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        std::fs::remove_file(&self.config_file).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_times_and_memory() {
        let stat = "4242 (userpipe (x) y) S 1 4242 4242 0 -1 4194560 2725 0 0 0 250 75 0 0 20 0 9 0 \
                    1234 1000 2000";
        let status = "Name:\tuserpipe\nVmHWM:\t   30720 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        let usage = Usage::parse(stat, status, 100.0).unwrap();
        assert_eq!(
            usage,
            Usage {
                user: 2.5,
                system: 0.75,
                rss_kb: 20480,
                peak_rss_kb: 30720
            }
        );
        assert_eq!(usage.cpu(), 3.25);
        assert_eq!(Usage::parse("4242 (x) S 1", status, 100.0), None);
    }

    #[test]
    fn reads_this_process() {
        let me = Usage::of(std::process::id()).unwrap();
        assert!(me.peak_rss_kb >= me.rss_kb && me.rss_kb > 0);
    }
}
