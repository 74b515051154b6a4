//! The schedule folder: every `*.toml` in it read and checked, valid schedules apart from the errors of the
//! invalid files; and the built-in schedules that no file replaces (`prune-history`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::history;
use super::schedule::{self, Schedule, ScheduleError};

/// Where a built-in schedule is said to come from.
const BUILTIN_DIR: &str = "(built in)";

/// The built-in `prune-history` schedule.
fn builtin_history() -> Schedule {
    let path = Path::new(BUILTIN_DIR).join(format!("{}.toml", history::SCHEDULE));
    schedule::parse(&path, history::BUILTIN).expect("the built-in schedule is valid")
}

/// Whether a loaded schedule's text is the built-in one (no file replaces it).
pub fn is_builtin(text: &str) -> bool {
    text == history::BUILTIN
}

/// The schedule `name`: its file in `dir`, or the built-in one of that name.
pub fn find(dir: &Path, name: &str) -> anyhow::Result<Schedule> {
    let path = dir.join(format!("{name}.toml"));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(schedule::parse(&path, &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == history::SCHEDULE => {
            Ok(builtin_history())
        }
        Err(e) => {
            Err(e).with_context(|| format!("no schedule {name}: cannot read {}", path.display()))
        }
    }
}

/// What the schedule folder holds: the valid schedules and the errors of the invalid files.
#[derive(Debug, Default)]
pub struct Loaded {
    pub schedules: Vec<(Schedule, String)>,
    pub errors: Vec<ScheduleError>,
}

/// Reads and checks every `*.toml` in `dir`, in name order, then adds the built-in schedules no file
/// replaces. Each schedule comes with its file's text.
pub fn load_dir(dir: &Path) -> anyhow::Result<Loaded> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the schedule folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    paths.sort();
    let mut loaded = Loaded::default();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                loaded.errors.push(ScheduleError {
                    file: path.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match schedule::parse(&path, &text) {
            Ok(s) => loaded.schedules.push((s, text)),
            Err(e) => loaded.errors.push(e),
        }
    }
    let replaced = |name: &str| {
        let stem = |p: &Path| p.file_stem().is_some_and(|s| s == name);
        loaded.schedules.iter().any(|(s, _)| s.name == name)
            || loaded.errors.iter().any(|e| stem(&e.file))
    };
    if !replaced(history::SCHEDULE) {
        loaded
            .schedules
            .push((builtin_history(), history::BUILTIN.to_owned()));
    }
    Ok(loaded)
}
