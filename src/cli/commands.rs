//! What each command does: load the configuration, call the library, print through [`super::output`], and
//! say what it found as an [`Outcome`] (the exit code is decided from it in [`super::exit`]).

use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::args::{
    BackupCommand, Cli, Command, ConfigCommand, DbCommand, JobsCommand, JobsList, PgconfCommand,
    SchedulesCommand,
};
use super::exit::{Outcome, success_if};
use super::output;
use super::process::{shutdown_on_signal, until_signal};
use crate::app::{self, Role};
use crate::bench::{self, BenchOptions};
use crate::config::Config;
use crate::pg::{backup, conf, drill};
use crate::pipeline::{fetch, topics};
use crate::scheduler::journal::{self, Journal, RunFilter, Status, Trigger};
use crate::{db, kafka, scheduler};

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run { roles } => {
            let roles = if roles.is_empty() {
                Role::ALL.to_vec()
            } else {
                roles
            };
            app::run(&config, &roles, shutdown_on_signal()).await?;
        }
        Command::Fetch {
            count,
            source,
            seed,
        } => {
            if let Some(source) = source {
                config.fetch.source = source;
            }
            if seed.is_some() {
                config.fetch.seed = seed;
            }
            config.validate()?;
            topics::ensure(&config, &config.topics).await?;
            let producer = kafka::producer(&config.kafka)?;
            let report = fetch::run(&config, &producer, count, Uuid::new_v4()).await?;
            print!("{}", output::fetch_report(&report, &config.topics.users));
        }
        Command::Db {
            command: DbCommand::Migrate,
        } => {
            let pool = db::connect(config.database.url.expose(), 1).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Bench {
            users,
            rate,
            preload,
        } => {
            let options = BenchOptions {
                users,
                rate,
                preload,
            };
            let report = bench::run(&config, &options).await?;
            println!("{report}");
        }
        Command::Config {
            command: ConfigCommand::Show,
        } => print!("{}", config.to_redacted_toml()),
        Command::Health => return health(&config).await,
        Command::Schedules {
            command: SchedulesCommand::Check { dir },
        } => {
            let dir = dir.unwrap_or_else(|| config.scheduler.dir.clone());
            return check_schedules(&dir);
        }
        Command::Pgconf { command } => return pgconf(&config, command).await,
        Command::Backup { command } => return backups(&config, command).await,
        Command::Jobs {
            command: None,
            list,
        } => list_jobs(&config, &list).await?,
        Command::Jobs {
            command: Some(JobsCommand::Show { run_id, json }),
            ..
        } => {
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
        }
        Command::Jobs {
            command: Some(JobsCommand::Run { schedule }),
            ..
        } => return run_now(&config, &schedule).await,
    }
    Ok(Outcome::Success)
}

/// `schedules check`: fails when any file is invalid.
fn check_schedules(dir: &Path) -> anyhow::Result<Outcome> {
    let loaded = scheduler::load_dir(dir)?;
    print!(
        "{}",
        output::schedules_check(&loaded, dir, chrono::Utc::now())
    );
    for error in &loaded.errors {
        eprintln!("error: {error}");
    }
    Ok(success_if(loaded.errors.is_empty()))
}

async fn list_jobs(config: &Config, list: &JobsList) -> anyhow::Result<()> {
    let since = match &list.since {
        None => None,
        Some(text) => Some(parse_since(text, chrono::Utc::now())?),
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
    Ok(())
}

/// `--since`: a duration back from `now`, or an RFC 3339 time.
fn parse_since(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(duration) = humantime::parse_duration(text) {
        return Ok(now - chrono::Duration::from_std(duration)?);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .with_context(|| {
            format!("--since {text:?} is neither a duration (2h, 3d) nor an RFC 3339 time")
        })
}

/// `jobs run`: one run of a schedule in this process, recorded like any other; it fails unless the run
/// succeeded.
async fn run_now(config: &Config, name: &str) -> anyhow::Result<Outcome> {
    let path = config.scheduler.dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no schedule {name}: cannot read {}", path.display()))?;
    let schedule = scheduler::schedule::parse(&path, &text)?;
    topics::ensure(config, &config.topics).await?;
    let pool = db::lazy_pool(config.database.url.expose(), 2)?;
    let shutdown = CancellationToken::new();
    let (journal, writer) = Journal::start(Some(pool.clone()), shutdown.clone());
    let runner = scheduler::Runner::new(config.clone(), Some(pool), journal)?;
    let status = runner.fire(&schedule, Trigger::Manual, None).await;
    drop(runner);
    shutdown.cancel();
    if let Some(writer) = writer {
        writer.await.context("the journal writer panicked")?;
    }
    Ok(success_if(status == Some(Status::Succeeded)))
}

/// `pgconf check | diff | apply`.
async fn pgconf(config: &Config, command: PgconfCommand) -> anyhow::Result<Outcome> {
    let file = conf::DesiredFile::load(&config.pgconf.file)?;
    let mut conn = db::connect_one(config.database.url.expose()).await?;
    let outcome = match command {
        PgconfCommand::Check => {
            let comparisons = conf::check(&mut conn, &file).await?;
            print!("{}", conf::render_check(&file.path, &comparisons));
            conf::Outcome::of(&comparisons)
        }
        PgconfCommand::Diff => {
            let comparisons = conf::check(&mut conn, &file).await?;
            print!("{}", conf::render_diff(&file.path, &comparisons));
            conf::Outcome::InForce
        }
        PgconfCommand::Apply => {
            let applied = conf::apply(&mut conn, &file).await?;
            print!("{}", conf::render_applied(&applied));
            conf::Outcome::of(&applied.after)
        }
    };
    Ok(Outcome::Pgconf(outcome))
}

/// `backup run | list | verify | prune | restore-test`. Runs and drills stop cleanly on SIGINT/SIGTERM:
/// dropping them kills pg_basebackup or the throwaway server and removes what they left.
async fn backups(config: &Config, command: BackupCommand) -> anyhow::Result<Outcome> {
    match command {
        BackupCommand::Run => {
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = until_signal(backup::run(config, progress)).await?;
            print!("{}", output::backup_report(&report));
            if let Some(error) = report.prune_error {
                eprintln!("userpipe: retention failed: {error}");
            }
        }
        BackupCommand::List { json } => {
            let listed = backup::list(&config.backup.dir)?;
            if json {
                for backup in &listed {
                    println!("{}", serde_json::to_string(backup)?);
                }
            } else {
                print!("{}", output::backups_table(&listed));
            }
        }
        BackupCommand::Verify { id } => {
            let verification = backup::verify(config, &id).await?;
            if !verification.ok {
                println!("backup {id} FAILED verification:");
                for problem in &verification.problems {
                    println!("  {problem}");
                }
                return Ok(Outcome::Failed);
            }
            println!("backup {id} verified");
        }
        BackupCommand::Prune => {
            let pruned = backup::prune(&config.backup.dir, config.backup.keep)?;
            if pruned.is_empty() {
                println!("nothing to delete (keep {})", config.backup.keep);
            } else {
                println!("deleted {}", pruned.join(", "));
            }
        }
        BackupCommand::RestoreTest { id } => {
            let report = until_signal(drill::run(config, id.as_deref())).await?;
            print!("{}", output::drill_report(&report));
        }
    }
    Ok(Outcome::Success)
}

/// `userpipe health`: asks the local `/readyz` and prints its verdict.
async fn health(config: &Config) -> anyhow::Result<Outcome> {
    let url = readyz_url(&config.http.listen)?;
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let ready = response.status().is_success();
    println!("{}", response.text().await.unwrap_or_default().trim());
    Ok(success_if(ready))
}

/// The `/readyz` URL of a process listening on `listen`; an all-interfaces address is asked on loopback.
fn readyz_url(listen: &str) -> anyhow::Result<String> {
    let address: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("http.listen {listen:?} is not an address with a port"))?;
    let host = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(format!("http://{host}:{}/readyz", address.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_asks_loopback_for_an_all_interfaces_listener() {
        assert_eq!(
            readyz_url("0.0.0.0:8080").unwrap(),
            "http://127.0.0.1:8080/readyz"
        );
        assert_eq!(readyz_url("[::]:9000").unwrap(), "http://[::1]:9000/readyz");
        assert_eq!(
            readyz_url("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/readyz"
        );
        assert!(readyz_url("localhost").is_err());
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now: chrono::DateTime<chrono::Utc> = "2026-01-02T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since("2h", now).unwrap().to_rfc3339(),
            "2026-01-02T10:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
