//! Running the PostgreSQL programs (pg_basebackup, pg_verifybackup, pg_ctl, postgres) that backups and the
//! restore drill share: finding them, checking their version against the server's, handing them the
//! connection without its password on the command line, and running one in a process group of its own
//! that is killed whole when the run fails, times out or is dropped, and that dies with userpipe (even a
//! SIGKILLed one). Every line a program prints (bar progress aside) becomes a log event with its
//! `program`, so a job run's log holds it.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tracing::{info, warn};

/// Lines of a program's stderr kept for an error message.
const STDERR_TAIL: usize = 30;

/// The program `name`: in `pg_bin` when it is set, else on the PATH (`which`), else in the newest
/// `/usr/lib/postgresql/<major>/bin`, where Debian and Ubuntu keep the programs they do not link into
/// the PATH (`pg_verifybackup`, `pg_ctl`, `postgres`).
pub fn find_program(pg_bin: &Path, name: &str) -> anyhow::Result<PathBuf> {
    if !pg_bin.as_os_str().is_empty() {
        let path = pg_bin.join(name);
        if path.is_file() {
            return Ok(path);
        }
        bail!("there is no {name} in {} (backup.pg_bin)", pg_bin.display());
    }
    if let Ok(path) = which::which(name) {
        return Ok(path);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path().join("bin").join(name);
            path.is_file().then_some((major, path))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, path)| path).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find {name}: install the PostgreSQL programs or set backup.pg_bin (USERPIPE_PG_BIN) to their folder"
        )
    })
}

/// The first line of `program --version`.
pub async fn program_version(program: &Path) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(program);
    command.arg("--version");
    let what = format!("{} --version", program.display());
    let output = program_output(command, &what, Duration::from_secs(30)).await?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Runs a short program whose output is read, not logged (`--version`, `pg_waldump`), within `timeout`,
/// and returns what it printed, whatever its exit status. Like [`run_program`]'s, the program dies with
/// userpipe and is killed when the time is up or the future is dropped.
pub async fn program_output(
    mut command: tokio::process::Command,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<std::process::Output> {
    command
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    die_with_userpipe(&mut command);
    tokio::time::timeout(timeout, command.output())
        .await
        .with_context(|| {
            format!(
                "{what} did not finish within {}",
                humantime::format_duration(timeout)
            )
        })?
        .with_context(|| format!("cannot run {what}"))
}

/// The major version in a `--version` line: `pg_basebackup (PostgreSQL) 15.18 (Debian ...)` is 15.
pub fn major_version(line: &str) -> Option<u32> {
    let after = line
        .split_once("(PostgreSQL)")
        .map_or(line, |(_, after)| after);
    let word = after
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Refuses a client program older than the server: it may not understand what the server sends.
pub fn check_client_version(program: &str, version: &str, server_major: u32) -> anyhow::Result<()> {
    let Some(major) = major_version(version) else {
        bail!("cannot tell the version of {program} from `{version}`");
    };
    if major < server_major {
        bail!(
            "{program} {major} is older than the server (PostgreSQL {server_major}) and cannot back it up: \
             install the PostgreSQL {server_major} programs or point backup.pg_bin at them"
        );
    }
    Ok(())
}

/// The connection string for a pg_* program without its password, and the password, which goes to the
/// program in PGPASSWORD (never in its arguments, which any user can read in the process list). A URL
/// with a secret libpq cannot read from the environment (`sslpassword`) is refused.
pub fn tool_connection(url: &str) -> anyhow::Result<(String, Option<String>)> {
    crate::db::connect_options(url)?;
    let (bare, password) = crate::config::split_password(url)
        .ok_or_else(|| anyhow::anyhow!("the database url is not a valid url"))?;
    Ok((bare.to_string(), password))
}

/// What a program said and how it ended.
pub struct ProgramOutput {
    pub status: ExitStatus,
    /// The last lines of its stderr that the line filter kept.
    pub stderr: Vec<String>,
}

impl ProgramOutput {
    /// The stderr lines, without the `program: ` prefix, joined for an error message.
    pub fn problems(&self, program: &str) -> String {
        let lines = problem_lines(program, &self.stderr);
        if lines.is_empty() {
            "it printed nothing".into()
        } else {
            lines.join("; ")
        }
    }
}

pub fn problem_lines(program: &str, lines: &[String]) -> Vec<String> {
    let prefix = format!("{program}: ");
    lines
        .iter()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l).trim().to_owned())
        .map(|l| l.strip_prefix("error: ").map(str::to_owned).unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect()
}

/// What a line of a program's stderr is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Progress a bar shows: not logged, not kept.
    Progress,
    /// Information (`--verbose`): logged, not kept for an error message.
    Info,
    /// An error, warning, detail or hint: logged, and kept for the error message.
    Problem,
}

/// A line `program --verbose` prints: information unless it has a level (`pg_basebackup: error: ...`)
/// or is not the program's own (a server message carried along).
pub fn verbose_line(program: &str, line: &str) -> Line {
    let levels = ["error:", "warning:", "detail:", "hint:", "fatal:"];
    match line
        .strip_prefix(program)
        .and_then(|rest| rest.strip_prefix(": "))
    {
        Some(rest) if !levels.iter().any(|level| rest.starts_with(level)) => Line::Info,
        _ => Line::Problem,
    }
}

/// Reads `output` line by line (a terminal's progress lines end with \r, not \n), handing each
/// non-blank one to `each`.
async fn read_lines(
    output: impl AsyncRead + Unpin,
    mut each: impl FnMut(&str),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(output);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf);
        for line in text.split(['\r', '\n']).filter(|l| !l.trim().is_empty()) {
            each(line);
        }
    }
}

/// Kills a process group when dropped, unless disarmed.
struct KillGroupOnDrop {
    group: Option<i32>,
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            kill_group(group);
        }
    }
}

/// The shell that watches a program's process group: it runs the program (its arguments are the shell's
/// positional parameters, never part of this text) and, told by the kernel that userpipe died (SIGTERM),
/// kills the whole group, the program's own children with it.
const WATCHER: &str = r#"trap 'kill -KILL 0' TERM; "$@" & wait $!"#;

/// `command` run by [`WATCHER`] in a process group of its own, so that the program and every process it
/// forks (pg_basebackup's WAL streamer, which keeps streaming into `.partial` when only its parent dies)
/// die with userpipe, even a SIGKILLed one that can clean up nothing.
fn watched(command: &tokio::process::Command) -> tokio::process::Command {
    let original = command.as_std();
    let mut watched = tokio::process::Command::new("/bin/sh");
    watched
        .arg("-c")
        .arg(WATCHER)
        .arg("sh")
        .arg(original.get_program())
        .args(original.get_args());
    for (name, value) in original.get_envs() {
        match value {
            Some(value) => watched.env(name, value),
            None => watched.env_remove(name),
        };
    }
    if let Some(dir) = original.get_current_dir() {
        watched.current_dir(dir);
    }
    watched.process_group(0);
    die_with_userpipe(&mut watched);
    watched
}

/// Has the kernel send SIGTERM to the process `command` starts when the thread that started it ends
/// (`PR_SET_PDEATHSIG`). Call only from async code, whose threads (the runtime's workers, or the one in
/// `block_on`) live as long as the runtime, never from `spawn_blocking`, whose threads come and go.
fn die_with_userpipe(command: &mut tokio::process::Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe calls are
    // allowed: prctl(2) and getppid(2) are, and it allocates nothing (an OS error is a plain number).
    // Should userpipe have died between the fork and the prctl, the child sees another parent and stops.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// SIGKILL to every process of process group `group`.
fn kill_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// Runs `command` in a process group of its own, reading its output line by line, within `timeout`.
/// Each stderr line is logged (`program` = `name`) as `classify` says, and the problems are kept for an
/// error; stdout lines are logged. When it fails, times out, or the future is dropped, the whole group
/// is killed.
pub async fn run_program(
    mut command: tokio::process::Command,
    name: &str,
    timeout: Duration,
    mut classify: impl FnMut(&str) -> Line,
) -> anyhow::Result<ProgramOutput> {
    command.env("LC_ALL", "C");
    let mut command = watched(&command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let mut group = KillGroupOnDrop {
        group: child.id().map(|id| id as i32),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        bail!("cannot read the output of {name}");
    };
    let work = async {
        let mut tail: Vec<String> = Vec::new();
        let read_stderr = read_lines(stderr, |line| match classify(line) {
            Line::Progress => {}
            Line::Info => info!(message = line, program = name),
            Line::Problem => {
                warn!(message = line, program = name);
                tail.push(line.to_owned());
                if tail.len() > STDERR_TAIL {
                    tail.remove(0);
                }
            }
        });
        let read_stdout = read_lines(stdout, |line| info!(message = line, program = name));
        // A forked helper (pg_basebackup's WAL streamer) shares the pipes: when the program fails, its
        // group is killed at once, so a helper left behind cannot keep the pipes open until the timeout.
        let waiting = async {
            let status = child.wait().await?;
            if !status.success()
                && let Some(group) = group.group
            {
                kill_group(group);
            }
            Ok::<_, std::io::Error>(status)
        };
        let (out, err, status) = tokio::join!(read_stdout, read_stderr, waiting);
        out?;
        err?;
        let status = status?;
        Ok::<_, std::io::Error>(ProgramOutput {
            status,
            stderr: tail,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(output)) => {
            if output.status.success() {
                group.group = None;
            }
            Ok(output)
        }
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot run {name}")),
        Err(_) => bail!(
            "{name} did not finish within {} (backup.timeout)",
            humantime::format_duration(timeout)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let check =
            |line: &str, expected: Option<u32>| assert_eq!(major_version(line), expected, "{line}");
        check(
            "pg_basebackup (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)",
            Some(15),
        );
        check("pg_basebackup (PostgreSQL) 16beta1", Some(16));
        check("pg_basebackup (PostgreSQL) 9.6.24", Some(9));
        check("postgres (PostgreSQL) 17.2", Some(17));
        check("something else", None);
        assert!(
            check_client_version("pg_basebackup", "pg_basebackup (PostgreSQL) 16.1", 15).is_ok()
        );
        assert!(
            check_client_version("pg_basebackup", "pg_basebackup (PostgreSQL) 15.1", 15).is_ok()
        );
        let error = check_client_version("pg_basebackup", "pg_basebackup (PostgreSQL) 14.9", 15)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "pg_basebackup 14 is older than the server (PostgreSQL 15) and cannot back it up: install the \
             PostgreSQL 15 programs or point backup.pg_bin at them"
        );
        let error = check_client_version("pg_basebackup", "", 15)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "cannot tell the version of pg_basebackup from ``");
    }

    #[test]
    fn the_password_goes_to_the_environment_not_the_arguments() {
        let (conninfo, password) = tool_connection(
            "postgres://backup:s3cr%40t%2Fx@db.example:5432/userpipe?sslmode=require",
        )
        .unwrap();
        assert_eq!(
            conninfo,
            "postgres://backup@db.example:5432/userpipe?sslmode=require"
        );
        assert_eq!(password.as_deref(), Some("s3cr@t/x"));
        let (conninfo, password) =
            tool_connection("postgres://postgres@127.0.0.1:55432/postgres").unwrap();
        assert_eq!(conninfo, "postgres://postgres@127.0.0.1:55432/postgres");
        assert_eq!(password, None);
        let (conninfo, password) =
            tool_connection("postgres://backup@db.example/userpipe?password=q%26r").unwrap();
        assert_eq!(conninfo, "postgres://backup@db.example/userpipe");
        assert_eq!(password.as_deref(), Some("q&r"));
    }

    #[test]
    fn verbose_lines_are_information_and_leveled_ones_problems() {
        let check = |line: &str, expected: Line| {
            assert_eq!(verbose_line("pg_basebackup", line), expected, "{line}")
        };
        check("pg_basebackup: checkpoint completed", Line::Info);
        check(
            "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1",
            Line::Info,
        );
        check(
            "pg_basebackup: error: could not connect to server",
            Line::Problem,
        );
        check("pg_basebackup: warning: something", Line::Problem);
        check("pg_basebackup: hint: try this", Line::Problem);
        check(
            "FATAL:  no pg_hba.conf entry for replication connection",
            Line::Problem,
        );
    }

    #[test]
    fn problems_lose_the_program_prefix() {
        let lines = vec![
            "pg_verifybackup: error: checksum mismatch for file \"base/1/112\"".to_owned(),
            "pg_verifybackup: error: \"base/1/1259\" is present in the manifest but not on disk"
                .to_owned(),
            "pg_basebackup: hint: something".to_owned(),
        ];
        assert_eq!(
            problem_lines("pg_verifybackup", &lines),
            [
                "checksum mismatch for file \"base/1/112\"",
                "\"base/1/1259\" is present in the manifest but not on disk",
                "pg_basebackup: hint: something",
            ]
        );
    }
}
