//! The `jobs` commands: list recent runs, show one run's attempts, print (and follow) a run's log, and
//! run a schedule now. What they print is in [`super::output`].

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::args::{JobsCommand, JobsList};
use super::exit::{Outcome, success_if};
use super::output;
use crate::config::Config;
use crate::db;
use crate::scheduler::journal::{self, RunFilter, Status, Trigger};
use crate::scheduler::{self, runlog};

/// How often `jobs logs --follow` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Lines read per query.
const PAGE: i64 = 5000;

/// `jobs [list flags] | show | logs | run`.
pub async fn run(
    config: &Config,
    command: Option<JobsCommand>,
    list: &JobsList,
) -> anyhow::Result<Outcome> {
    match command {
        None => list_runs(config, list).await,
        Some(JobsCommand::Show { run_id, json }) => show(config, run_id, json).await,
        Some(JobsCommand::Logs {
            run_id,
            follow,
            json,
        }) => logs(config, run_id, follow, json).await,
        Some(JobsCommand::Run { schedule }) => run_now(config, &schedule).await,
    }
}

async fn list_runs(config: &Config, list: &JobsList) -> anyhow::Result<Outcome> {
    let since = match &list.since {
        None => None,
        Some(since) => Some(
            since
                .at(Utc::now())
                .context("--since reaches back too far")?,
        ),
    };
    let filter = RunFilter {
        schedule: list.schedule.clone(),
        status: list.status,
        since,
        limit: list.limit,
    };
    let pool = db::connect(config.database.url.expose(), 1).await?;
    let records = journal::list(&pool, &filter).await?;
    if list.json {
        for record in &records {
            println!("{}", serde_json::to_string(record)?);
        }
    } else {
        print!("{}", output::runs_table(&records));
    }
    Ok(Outcome::Success)
}

async fn show(config: &Config, run_id: Uuid, json: bool) -> anyhow::Result<Outcome> {
    let pool = db::connect(config.database.url.expose(), 1).await?;
    let records = journal::show(&pool, run_id).await?;
    if records.is_empty() {
        anyhow::bail!("no job run {run_id}");
    }
    for record in &records {
        if json {
            println!("{}", serde_json::to_string(record)?);
        } else {
            print!("{}", output::describe_run(record));
        }
    }
    Ok(Outcome::Success)
}

/// `jobs logs`: the run's kept lines; with `follow`, new ones as they come until the run is over.
async fn logs(config: &Config, run_id: Uuid, follow: bool, json: bool) -> anyhow::Result<Outcome> {
    let pool = db::connect(config.database.url.expose(), 1).await?;
    let mut after = 0;
    loop {
        // The run's state before its lines: the journal writes a run's lines before the record that
        // ends it, so once it is over, the lines read next are the last.
        let attempts = journal::show(&pool, run_id).await?;
        let over = journal::run_over(&attempts);
        let lines = runlog::read(&pool, run_id, after, PAGE).await?;
        if after == 0 && attempts.is_empty() && lines.is_empty() {
            anyhow::bail!("no job run {run_id}");
        }
        let full_page = lines.len() as i64 == PAGE;
        for entry in runlog::entries(after, lines) {
            after = entry.line.seq;
            if json {
                println!("{}", serde_json::to_string(&entry)?);
            } else {
                print!("{}", output::log_entry(&entry));
            }
        }
        if full_page {
            continue;
        }
        if !follow || over {
            return Ok(Outcome::Success);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// `jobs run`: one run of a schedule in this process, recorded, logged and notified like any other; it
/// fails unless the run succeeded.
async fn run_now(config: &Config, name: &str) -> anyhow::Result<Outcome> {
    let schedule = scheduler::find(&config.scheduler.dir, name)?;
    let pool = db::lazy_pool(config.database.url.expose(), 2)?;
    let shutdown = CancellationToken::new();
    let jobs = scheduler::Service::start(config, Some(pool), &shutdown)?;
    let status = jobs.runner.fire(&schedule, Trigger::Manual, None).await;
    // Its notification may still be on its way: three attempts within their timeouts.
    let settle = config.notify.timeout * 3 + Duration::from_secs(5);
    jobs.finish(settle, &shutdown).await?;
    Ok(success_if(status == Some(Status::Succeeded)))
}
