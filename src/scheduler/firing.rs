//! The scheduler role: the journal, the runner, and the firing loop over the schedule folder.
//!
//! tokio-cron-scheduler's cron jobs pin a timezone's UTC offset when the job is made (so a daylight-saving
//! change moves the firing by an hour) and have been seen to stop when a tick falls into the past. So each
//! firing here is a one-shot job for the next fire time, computed by [`super::cron::next_fires`] in the
//! schedule's own timezone; when it fires, the run is spawned apart and the next firing is added at once,
//! after the planned time (firings missed by less than a minute of delay are made up, later ones skipped).
//! A run that outlasts its interval delays nothing. (Its timer also counts whole seconds from the current
//! whole second; `State::plan` sets the delay accordingly.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::files::load_dir;
use super::freshness;
use super::journal::Trigger;
use super::runner::{Runner, Service};
use super::schedule::Schedule;
use crate::config::Config;

/// How often the schedule folder is read for changes (the issue asks for 5 seconds at most).
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// How far behind the scheduler may fall and still make up the firings it missed, one after another; past
/// this (the process was paused, the machine slept) it skips to the next firing from now.
const CATCH_UP: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// After the shutdown grace, how long the clean-ups of the cancelled runs (a restore drill's scratch
/// folder) may take; with the grace it keeps a stop inside 10 seconds.
const CLEANUP_GRACE: Duration = Duration::from_secs(3);

/// `run`, or nothing once `stop` fires (it is then dropped).
async fn stoppable<T>(stop: CancellationToken, run: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        _ = stop.cancelled() => None,
        out = run => Some(out),
    }
}

/// Where to look for the next firing after the one planned at `planned` came due at `now`.
fn next_after(planned: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if now - planned > CATCH_UP {
        warn!(
            message = "the scheduler fell behind; skipping the firings it missed",
            behind_s = (now - planned).num_seconds()
        );
        now
    } else {
        planned
    }
}

/// Where a schedule's new version looks for its first firing when the old version's next one was planned
/// at `planned`. A firing that came due just before the reload may not have been handled yet (its timer
/// is removed with the old version, a message it sent is dropped as the old version's): the new version
/// takes it over instead of losing it. A firing already handled moved `planned` on, so it is not run
/// again. Pure.
fn takeover_from(planned: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    planned.map_or(now, |planned| {
        (planned - chrono::TimeDelta::seconds(1)).min(now)
    })
}

/// The scheduler's clock: the system's, or (tests) the system's shifted by whole seconds, so the loop can be
/// run at a chosen moment such as a daylight-saving change while the timer still waits real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset_s: i64,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `at` now (to the second) and runs at the system clock's pace from there.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self {
            offset_s: at.timestamp() - Utc::now().timestamp(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::TimeDelta::seconds(self.offset_s)
    }
}

/// A firing that came due: which schedule (and which version of it), and the planned time.
struct Fired {
    name: String,
    generation: u64,
    planned: DateTime<Utc>,
}

/// A schedule in force.
struct Entry {
    schedule: Arc<Schedule>,
    text: String,
    generation: u64,
    /// The timer job of the next firing, and when that firing is planned.
    pending: Option<Uuid>,
    planned: Option<DateTime<Utc>>,
}

/// The scheduler role on its own: a runner and journal of its own, and the schedules in `scheduler.dir`,
/// until `shutdown`.
pub async fn serve(
    config: &Config,
    pool: Option<PgPool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let service = Service::start(config, pool, &shutdown)?;
    let result = serve_with(config, service.runner.clone(), shutdown.clone()).await;
    // Messages of the last runs get a moment; the journal writer has its own grace.
    service.finish(Duration::from_secs(1), &shutdown).await?;
    result
}

/// The scheduler role of `userpipe run`: the schedules in `scheduler.dir`, run by `runner`, until
/// `shutdown`.
pub async fn serve_with(
    config: &Config,
    runner: Arc<Runner>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Scratch folders that drills of a process gone left behind (each a full database copy).
    if let Err(e) = crate::pg::drill::sweep_leftovers(config).await {
        warn!(message = "cannot look for leftover scratch folders", error = %format!("{e:#}"));
    }
    run(&config.scheduler.dir, runner, shutdown, Clock::system()).await
}

/// Runs the schedules in `dir` until `shutdown`, reloading the folder as it changes; fire times are read
/// on `clock`.
pub async fn run(
    dir: &Path,
    runner: Arc<Runner>,
    shutdown: CancellationToken,
    clock: Clock,
) -> anyhow::Result<()> {
    let timer = JobScheduler::new()
        .await
        .context("cannot create the job timer")?;
    timer.start().await.context("cannot start the job timer")?;
    let (fired_tx, mut fired_rx) = mpsc::unbounded_channel::<Fired>();
    let mut state = State {
        dir: dir.to_owned(),
        entries: HashMap::new(),
        reported: HashMap::new(),
        next_generation: 0,
        timer: timer.clone(),
        fired_tx,
        clock,
    };
    let runs = tokio_util::task::TaskTracker::new();
    // Cancels the runs still going when the shutdown grace is over.
    let stop_runs = CancellationToken::new();

    let started = state.reload().await;
    if let Some(pool) = runner.pool().cloned() {
        let names: Vec<String> = state.entries.keys().cloned().collect();
        tokio::spawn(async move { freshness::read_back(&pool, &names).await });
    }
    for schedule in started.iter().filter(|s| s.enabled && s.run_on_start) {
        let (runner, schedule) = (runner.clone(), schedule.clone());
        runs.spawn(stoppable(stop_runs.clone(), async move {
            runner.fire(&schedule, Trigger::Start, None).await
        }));
    }
    info!(message = "scheduler started", dir = %dir.display(), schedules = state.entries.len());

    let mut reload = tokio::time::interval(RELOAD_EVERY);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = reload.tick() => { state.reload().await; }
            Some(fired) = fired_rx.recv() => {
                let Some(entry) = state.entries.get(&fired.name).filter(|e| e.generation == fired.generation) else {
                    continue; // a firing of a version that was replaced or removed meanwhile
                };
                let schedule = entry.schedule.clone();
                let (runner, planned) = (runner.clone(), fired.planned);
                runs.spawn(stoppable(stop_runs.clone(), async move {
                    // Never start before the planned time, whatever the timer's rounding.
                    if let Ok(early) = (planned - clock.now()).to_std() {
                        tokio::time::sleep(early).await;
                    }
                    runner.fire(&schedule, Trigger::Schedule, Some(planned)).await
                }));
                state.plan(&fired.name, next_after(planned, clock.now())).await;
            }
        }
    }

    let mut timer = timer;
    if let Err(e) = timer.shutdown().await {
        warn!(message = "cannot stop the job timer", error = %e);
    }
    runs.close();
    if tokio::time::timeout(crate::SHUTDOWN_GRACE, runs.wait())
        .await
        .is_err()
    {
        warn!(message = "job runs still going at shutdown are abandoned");
        // Dropped, a restore drill stops its copy and cleans up in the background: wait for that.
        stop_runs.cancel();
        runs.wait().await;
        if !crate::pg::drill::cleanups_finished(CLEANUP_GRACE).await {
            warn!(
                message = "a restore drill's clean-up is still going at shutdown; the next start removes its scratch folder"
            );
        }
    }
    info!(message = "scheduler stopped");
    Ok(())
}

struct State {
    dir: PathBuf,
    entries: HashMap<String, Entry>,
    /// The text of each file whose error was already reported, so it is reported once per edit.
    reported: HashMap<PathBuf, String>,
    next_generation: u64,
    timer: JobScheduler,
    fired_tx: mpsc::UnboundedSender<Fired>,
    clock: Clock,
}

impl State {
    /// Applies the folder's current contents; returns the schedules that were (re)loaded.
    async fn reload(&mut self) -> Vec<Arc<Schedule>> {
        let loaded = match load_dir(&self.dir) {
            Ok(loaded) => loaded,
            Err(e) => {
                if self
                    .reported
                    .insert(self.dir.clone(), e.to_string())
                    .is_none()
                {
                    error!(message = "cannot read the schedules; the ones in force keep running", error = %format!("{e:#}"));
                }
                return Vec::new();
            }
        };
        self.reported.remove(&self.dir);
        let mut present: Vec<String> = Vec::new();
        let mut changed = Vec::new();
        for error in &loaded.errors {
            let name = error
                .file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            present.push(name.clone());
            let text = std::fs::read_to_string(&error.file).unwrap_or_default();
            if self.reported.get(&error.file) != Some(&text) {
                let keeps = if self.entries.contains_key(&name) {
                    "; its previous version keeps running"
                } else {
                    ""
                };
                error!(message = format!("invalid schedule file{keeps}"), file = %error.file.display(), line = error.line, column = error.column, error = %error.message);
                self.reported.insert(error.file.clone(), text);
            }
        }
        for (schedule, text) in loaded.schedules {
            let name = schedule.name.clone();
            present.push(name.clone());
            let path = self.dir.join(format!("{name}.toml"));
            self.reported.remove(&path);
            if self.entries.get(&name).is_some_and(|e| e.text == text) {
                continue;
            }
            let schedule = Arc::new(schedule);
            let now = self.clock.now();
            let from = takeover_from(self.entries.get(&name).and_then(|e| e.planned), now);
            let replaced = self.remove(&name).await;
            self.next_generation += 1;
            self.entries.insert(
                name.clone(),
                Entry {
                    schedule: schedule.clone(),
                    text,
                    generation: self.next_generation,
                    pending: None,
                    planned: None,
                },
            );
            let next = schedule.next_fires(now, 1).first().map(|t| t.to_rfc3339());
            info!(
                message = if replaced { "schedule reloaded" } else { "schedule loaded" },
                schedule = %name,
                job = schedule.job.kind(),
                cron = %schedule.cron_text,
                timezone = %schedule.timezone,
                enabled = schedule.enabled,
                next = next.as_deref()
            );
            freshness::loaded(&name, None);
            self.plan(&name, from).await;
            changed.push(schedule);
        }
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name).await;
            freshness::removed(&name);
            info!(message = "schedule removed", schedule = %name);
        }
        changed
    }

    /// Removes a schedule's pending firing and entry; `true` if it was there.
    async fn remove(&mut self, name: &str) -> bool {
        let Some(entry) = self.entries.remove(name) else {
            return false;
        };
        if let Some(job) = entry.pending
            && let Err(e) = self.timer.remove(&job).await
        {
            warn!(message = "cannot remove a pending firing", schedule = name, error = %e);
        }
        true
    }

    /// Adds the schedule's next firing strictly after `after` to the timer.
    async fn plan(&mut self, name: &str, after: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        entry.pending = None;
        entry.planned = None;
        freshness::next_fire(name, None);
        if !entry.schedule.enabled {
            return;
        }
        let Some(next) = entry.schedule.next_fires(after, 1).into_iter().next() else {
            warn!(message = "schedule has no future firing", schedule = name);
            return;
        };
        let planned = next.with_timezone(&Utc);
        freshness::next_fire(name, Some(planned));
        // The timer counts in whole seconds from the current whole second: this delay makes it fire at
        // `planned`, not up to a second before it.
        let delay =
            Duration::from_secs((planned.timestamp() - self.clock.now().timestamp()).max(0) as u64);
        let tx = self.fired_tx.clone();
        let (name_owned, generation) = (name.to_owned(), entry.generation);
        let job = Job::new_one_shot_async(delay, move |_id, _timer| {
            let fired = Fired {
                name: name_owned.clone(),
                generation,
                planned,
            };
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(fired);
            })
        });
        match job {
            Ok(job) => match self.timer.add(job).await {
                Ok(id) => {
                    entry.pending = Some(id);
                    entry.planned = Some(planned);
                }
                Err(e) => {
                    error!(message = "cannot plan the next firing", schedule = name, error = %e)
                }
            },
            Err(e) => error!(message = "cannot plan the next firing", schedule = name, error = %e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_takes_over_a_due_firing_and_never_plans_a_handled_one_again() {
        let every_second = crate::scheduler::schedule::parse(
            std::path::Path::new("tick.toml"),
            "job = \"fetch-users\"\ncron = \"* * * * * *\"\n",
        )
        .unwrap();
        let first = |from| every_second.next_fires(from, 1)[0].with_timezone(&Utc);
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        // Due at :05, not handled when the reload came at :05.3 (or at :07, later still): taken over.
        let due = at("2026-01-01T00:00:05Z");
        assert_eq!(
            first(takeover_from(Some(due), at("2026-01-01T00:00:05.3Z"))),
            due
        );
        assert_eq!(
            first(takeover_from(Some(due), at("2026-01-01T00:00:07Z"))),
            due
        );
        // Handled: the next one, at :06, was planned; the reload at :05.3 does not run :05 again.
        let next = at("2026-01-01T00:00:06Z");
        assert_eq!(
            first(takeover_from(Some(next), at("2026-01-01T00:00:05.3Z"))),
            next
        );
        // A new file, or one not firing soon: from now.
        assert_eq!(
            first(takeover_from(None, at("2026-01-01T00:00:05.3Z"))),
            next
        );
        let later = at("2026-01-01T01:00:00Z");
        assert_eq!(
            first(takeover_from(Some(later), at("2026-01-01T00:00:05.3Z"))),
            next
        );
    }

    #[test]
    fn a_late_firing_plans_from_its_planned_time_unless_far_behind() {
        let planned: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let late = planned + chrono::TimeDelta::seconds(3);
        assert_eq!(
            next_after(planned, late),
            planned,
            "three seconds late: the missed firings are made up"
        );
        let asleep = planned + chrono::TimeDelta::minutes(10);
        assert_eq!(
            next_after(planned, asleep),
            asleep,
            "ten minutes behind: skip to now"
        );
    }
}
