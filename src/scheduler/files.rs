//! The schedule folder: every `*.toml` in it read and checked, valid schedules apart from the errors of the
//! invalid files.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::schedule::{self, Schedule, ScheduleError};

/// What the schedule folder holds: the valid schedules and the errors of the invalid files.
#[derive(Debug, Default)]
pub struct Loaded {
    pub schedules: Vec<(Schedule, String)>,
    pub errors: Vec<ScheduleError>,
}

/// Reads and checks every `*.toml` in `dir`, in name order. Each schedule comes with its file's text.
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
    Ok(loaded)
}
