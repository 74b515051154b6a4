//! The desired settings next to the server's: in force, written but waiting for a restart, or drifting;
//! and the verdict on the whole file. Pure.

use std::collections::HashMap;

use serde::Serialize;

use super::file::{Desired, LineError};
use super::value::{SettingType, canonical};

/// One setting as the running server has it.
#[derive(Debug, Clone)]
pub struct Live {
    pub name: String,
    /// `pg_settings.setting`, in the setting's unit.
    pub setting: String,
    /// As `SHOW` shows it, with its unit.
    pub shown: String,
    pub ty: SettingType,
    /// `postmaster` settings change only with a restart.
    pub context: String,
    /// The value the configuration files give it now (the last one of `pg_file_settings`), which the
    /// next reload or restart puts in force; `None` when no file sets it.
    pub file_value: Option<String>,
}

/// Where one desired setting stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The running server has the desired value.
    InForce,
    /// The configuration files have it; it takes effect when PostgreSQL restarts.
    RestartNeeded,
    /// Neither: `apply` writes it.
    Drift,
}

/// One desired setting next to the server's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    /// As written in the desired file.
    pub wanted: String,
    /// As the server shows it.
    pub live: String,
    /// As the configuration files have it (the next reload or restart's value).
    pub file: Option<String>,
    pub state: State,
    pub line: usize,
}

/// Compares the desired settings with the server's; an unknown setting or a value of the wrong type is a
/// problem on its line.
pub fn compare(
    desired: &[Desired],
    live: &HashMap<String, Live>,
) -> Result<Vec<Comparison>, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for d in desired {
        let Some(l) = live.get(&d.name) else {
            errors.push(LineError {
                line: d.line,
                message: format!("unknown setting {}", d.name),
            });
            continue;
        };
        let wanted = match canonical(&d.value, &l.ty) {
            Ok(w) => w,
            Err(message) => {
                errors.push(LineError {
                    line: d.line,
                    message: format!("{}: {message}", d.name),
                });
                continue;
            }
        };
        let is_wanted = |v: &str| canonical(v, &l.ty).is_ok_and(|c| c.same(&wanted));
        let in_file = l.file_value.as_deref().is_some_and(is_wanted);
        // archive_command shows `(disabled)` while archive_mode is off: it follows archive_mode's restart.
        let waits_for_archive_mode = d.name == "archive_command" && l.setting == "(disabled)";
        let state = if is_wanted(&l.setting) {
            State::InForce
        } else if in_file && (l.context == "postmaster" || waits_for_archive_mode) {
            State::RestartNeeded
        } else {
            State::Drift
        };
        out.push(Comparison {
            name: d.name.clone(),
            wanted: d.value.clone(),
            live: l.shown.clone(),
            file: l.file_value.clone(),
            state,
            line: d.line,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The verdict on a whole comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InForce,
    Drift,
    RestartNeeded,
}

impl Outcome {
    /// Drift wins over a pending restart: `apply` comes first, then perhaps the restart.
    pub fn of(comparisons: &[Comparison]) -> Self {
        if comparisons.iter().any(|c| c.state == State::Drift) {
            Outcome::Drift
        } else if comparisons.iter().any(|c| c.state == State::RestartNeeded) {
            Outcome::RestartNeeded
        } else {
            Outcome::InForce
        }
    }
}

/// The names of the settings in `state`.
pub fn names_in(comparisons: &[Comparison], state: State) -> Vec<String> {
    comparisons
        .iter()
        .filter(|c| c.state == state)
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::conf::file::parse;
    use crate::pg::conf::value::tests::ty;

    fn live(name: &str, setting: &str, file: Option<&str>, ty: SettingType, context: &str) -> Live {
        Live {
            name: name.into(),
            setting: setting.into(),
            shown: setting.into(),
            ty,
            context: context.into(),
            file_value: file.map(Into::into),
        }
    }

    fn desired(text: &str) -> Vec<Desired> {
        parse(text).unwrap()
    }

    fn states(desired_text: &str, lives: Vec<Live>) -> Vec<(String, State)> {
        let live: HashMap<String, Live> = lives.into_iter().map(|l| (l.name.clone(), l)).collect();
        compare(&desired(desired_text), &live)
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.state))
            .collect()
    }

    #[test]
    fn comparison_tells_in_force_from_restart_needed_from_drift() {
        let mode = || ty("enum", None, &["always", "on", "off"]);
        let got = states(
            "archive_timeout = 60s\narchive_mode = on\nwal_level = replica\narchive_command = 'x %p'\nmax_wal_senders = 10\n",
            vec![
                live(
                    "archive_timeout",
                    "60",
                    Some("1min"),
                    ty("integer", Some("s"), &[]),
                    "sighup",
                ),
                live("archive_mode", "off", Some("on"), mode(), "postmaster"),
                live(
                    "wal_level",
                    "minimal",
                    Some("minimal"),
                    ty("enum", None, &["minimal", "replica", "logical"]),
                    "postmaster",
                ),
                live(
                    "archive_command",
                    "(disabled)",
                    Some("x %p"),
                    ty("string", None, &[]),
                    "sighup",
                ),
                live(
                    "max_wal_senders",
                    "10",
                    None,
                    ty("integer", None, &[]),
                    "postmaster",
                ),
            ],
        );
        assert_eq!(
            got,
            [
                ("archive_timeout".into(), State::InForce),
                ("archive_mode".into(), State::RestartNeeded),
                ("wal_level".into(), State::Drift),
                ("archive_command".into(), State::RestartNeeded),
                ("max_wal_senders".into(), State::InForce),
            ]
        );
        // A reloadable setting written to the files but not reloaded is drift: apply reloads it.
        let got = states(
            "archive_timeout = 60s\n",
            vec![live(
                "archive_timeout",
                "0",
                Some("60s"),
                ty("integer", Some("s"), &[]),
                "sighup",
            )],
        );
        assert_eq!(got, [("archive_timeout".into(), State::Drift)]);
    }

    #[test]
    fn unknown_settings_and_bad_values_name_their_lines() {
        let live: HashMap<String, Live> = [live(
            "archive_timeout",
            "0",
            None,
            ty("integer", Some("s"), &[]),
            "sighup",
        )]
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
        let errors: Vec<String> = compare(
            &desired("archive_timeout = 1GB\nwal_levl = replica\n"),
            &live,
        )
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            errors,
            [
                "line 1: archive_timeout: `1GB` has an invalid unit: valid units are B, kB, MB, GB, TB for memory; us, ms, s, min, h, d for time",
                "line 2: unknown setting wal_levl",
            ]
        );
    }
}
