//! Hardening (issue 10): faults, hostile input and daylight saving, each against the real stack. What the
//! tests here share: schedule files written as an editor writes them, and the journal's runs.

mod abandoned;
mod behind;
mod campaign;
mod dst;
mod guards;
mod http;
mod kafka_down;

use std::path::Path;

use sqlx::PgPool;
use userpipe::scheduler::journal::{self, RunFilter, RunRecord};

/// Writes `<dir>/<name>.toml` (write, then rename, so the scheduler never reads half a file).
pub fn write_schedule(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write a schedule");
    std::fs::rename(&tmp, dir.join(format!("{name}.toml"))).expect("rename a schedule");
}

/// Every attempt of `schedule` in the journal, oldest first.
pub async fn runs(pool: &PgPool, schedule: &str) -> Vec<RunRecord> {
    try_runs(pool, schedule).await.expect("read the journal")
}

/// Every attempt of `schedule` in the journal, oldest first; an error (no table yet, the server away) as
/// it is.
pub async fn try_runs(pool: &PgPool, schedule: &str) -> anyhow::Result<Vec<RunRecord>> {
    let filter = RunFilter {
        schedule: Some(schedule.into()),
        limit: 100_000,
        ..Default::default()
    };
    let mut runs = journal::list(pool, &filter).await?;
    runs.reverse();
    Ok(runs)
}
