//! What each command does: load the configuration, call the library, print through [`super::output`], and
//! say what it found as an [`Outcome`] (the exit code is decided from it in [`super::exit`]).

use std::path::Path;

use anyhow::Context;
use uuid::Uuid;

use super::args::{
    BackupCommand, Cli, Command, ConfigCommand, DbCommand, DlqCommand, PgconfCommand,
    SchedulesCommand,
};
use super::exit::{Outcome, success_if};
use super::process::{shutdown_on_signal, until_signal};
use super::{help, jobs, letters, output};
use crate::app::{self, Role};
use crate::bench::{self, BenchOptions};
use crate::config::Config;
use crate::pg::restore::{self, Target};
use crate::pg::{backup, conf, drill};
use crate::pipeline::{dlq, fetch, topics};
use crate::{db, kafka, scheduler};

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    // What is made from the command line alone needs no configuration.
    match &cli.command {
        Command::Completions { shell } => {
            help::completions(*shell, &mut std::io::stdout())?;
            return Ok(Outcome::Success);
        }
        Command::Man { dir } => {
            help::man(dir.as_deref(), &mut std::io::stdout())?;
            return Ok(Outcome::Success);
        }
        _ => {}
    }
    let (mut config, origins) = Config::load_with_origins(cli.config.as_deref())?;
    match cli.command {
        Command::Completions { .. } | Command::Man { .. } => {}
        Command::Dlq { command } => dead_letters(&config, command).await?,
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
            let report = fetch::run(&config, &producer, count as usize, Uuid::new_v4()).await?;
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
            replicas,
            kill_one,
            ceiling_rows,
        } => {
            let options = BenchOptions {
                users: users as usize,
                rate,
                preload,
                replicas: usize::from(replicas),
                kill_one,
                ceiling_rows,
            };
            let figures = bench::run(&config, &options).await?;
            println!("{figures}");
        }
        Command::Config {
            command: ConfigCommand::Show,
        } => print!("{}", output::config_show(&config, &origins)),
        Command::Health => return health(&config).await,
        Command::Schedules {
            command: SchedulesCommand::Check { dir },
        } => {
            let dir = dir.unwrap_or_else(|| config.scheduler.dir.clone());
            return check_schedules(&dir);
        }
        Command::Pgconf { command } => return pgconf(&config, command).await,
        Command::Backup { command } => return backups(&config, command).await,
        Command::Jobs { command, list } => return jobs::run(&config, command, &list).await,
    }
    Ok(Outcome::Success)
}

/// `dlq list | show | replay`.
async fn dead_letters(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let terminal = |stream: &dyn std::io::IsTerminal| stream.is_terminal();
    match command {
        DlqCommand::List => {
            let (summaries, unrecorded) = dlq::list(config).await?;
            print!("{}", letters::dlq_list(&summaries));
            if let Some(error) = unrecorded {
                eprintln!("userpipe: replays not shown, the replay record cannot be read: {error}");
            }
        }
        DlqCommand::Show {
            topic,
            reason,
            limit,
            json,
        } => {
            let (shown, total, unrecorded) =
                dlq::show(config, &topic, reason.as_deref(), limit as usize).await?;
            let excerpt = !json || terminal(&std::io::stdout());
            for letter in &shown {
                if json {
                    println!("{}", letters::dlq_letter_json(letter, excerpt));
                } else {
                    print!("{}", letters::dlq_letter(letter));
                }
            }
            if !json {
                println!("{} of {total} letter(s) of {topic}", shown.len());
            }
            if let Some(error) = unrecorded {
                eprintln!("userpipe: replays not shown, the replay record cannot be read: {error}");
            }
        }
        DlqCommand::Replay {
            topic,
            reason,
            dry_run,
        } => {
            let progress = terminal(&std::io::stderr());
            let shutdown = shutdown_on_signal();
            let report = dlq::replay(
                config,
                &topic,
                reason.as_deref(),
                dry_run,
                progress,
                &shutdown,
            )
            .await?;
            print!("{}", letters::dlq_replay(&report));
            if shutdown.is_cancelled() {
                anyhow::bail!(
                    "stopped by a signal; what was sent is recorded, run again for the rest"
                );
            }
        }
    }
    Ok(())
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

/// `pgconf check | diff | apply`.
async fn pgconf(config: &Config, command: PgconfCommand) -> anyhow::Result<Outcome> {
    let file = conf::DesiredFile::load(&config.pgconf.file)?;
    let mut conn = db::connect_one(config.database.url.expose()).await?;
    let outcome = match command {
        PgconfCommand::Check { archive } => {
            let comparisons = conf::check(&mut conn, &file).await?;
            print!("{}", conf::render_check(&file.path, &comparisons));
            let outcome = conf::Outcome::of(&comparisons);
            if archive {
                let (folder, wait) = (&config.backup.wal_archive, config.backup.archive_wait);
                let check = conf::check_archive(&mut conn, folder, wait).await?;
                print!("{}", output::archive_check(&check, folder));
                if check.problem.is_some() && outcome == conf::Outcome::InForce {
                    return Ok(Outcome::Failed);
                }
            }
            outcome
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
            if let Some(error) = report.compress_error {
                eprintln!("userpipe: the backup is kept plain: {error}");
                return Ok(Outcome::Failed);
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
        BackupCommand::Prune { dry_run } => {
            let (dir, archive) = (&config.backup.dir, &config.backup.wal_archive);
            let pruned = backup::prune(dir, archive, config.backup.keep, dry_run)?;
            print!("{}", output::prune_report(&pruned, config.backup.keep));
        }
        BackupCommand::Check => {
            let (dir, archive) = (&config.backup.dir, &config.backup.wal_archive);
            let coverage = backup::check_archive(dir, archive)?;
            print!("{}", output::archive_coverage(coverage.as_ref(), archive));
            return Ok(success_if(coverage.is_none_or(|c| c.problem().is_none())));
        }
        BackupCommand::RestoreTest { id } => {
            let report = until_signal(drill::run(config, id.as_deref())).await?;
            print!("{}", output::drill_report(&report));
        }
        BackupCommand::Restore {
            target_time,
            target_lsn,
            latest: _,
            to,
            verify,
        } => {
            let target = match (target_time, target_lsn) {
                (Some(time), _) => Target::time(&time),
                (None, Some(lsn)) => Target::lsn(&lsn),
                (None, None) => Ok(Target::Latest),
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let report = until_signal(restore::restore(config, target, &to, verify)).await?;
            print!("{}", output::restore_report(&report));
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
}
