//! The command line: arguments, logging, the runtime, and the shutdown signal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

use crate::app::{self, Role};
use crate::bench::{self, BenchOptions};
use crate::config::Config;
use crate::journal::{self, Journal, RunRecord, Status, Trigger};
use crate::{backup, db, fetch, pgconf, scheduler};

/// userpipe: the user-data pipeline on Kafka and PostgreSQL, and its operations.
#[derive(Debug, Parser)]
#[command(name = "userpipe", version)]
pub struct Cli {
    /// Configuration file [default: $USERPIPE_CONFIG, else ./userpipe.toml when it exists]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format: `text` for people, `json` for machines
    #[arg(
        long,
        global = true,
        value_enum,
        env = "USERPIPE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline roles until SIGTERM or SIGINT
    Run {
        /// Roles to run, comma separated: timestamp, tags, sink [default: all]
        #[arg(long, value_delimiter = ',')]
        roles: Vec<Role>,
    },
    /// Fetch users once and publish them to the users topic
    Fetch {
        /// How many users (1 to 5000)
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// A randomuser.me-compatible URL, or `generator` [default: fetch.source]
        #[arg(long)]
        source: Option<String>,
        /// Seed of the generator, for repeatable runs
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The database schema
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Measure the pipeline end to end against the running stack
    Bench {
        /// Users to push through
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Publish at this steady rate (users per second) instead of as fast as possible
        #[arg(long, conflicts_with = "preload")]
        rate: Option<u64>,
        /// Publish every user first, then time only the pipeline draining them (its capacity)
        #[arg(long)]
        preload: bool,
    },
    /// Exit 0 when the running `userpipe run` on `http.listen` says it is ready (the container's HEALTHCHECK)
    Health,
    /// The configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Schedule files
    Schedules {
        #[command(subcommand)]
        command: SchedulesCommand,
    },
    /// The WAL-archiving settings of pgconf.file against the running PostgreSQL
    Pgconf {
        #[command(subcommand)]
        command: PgconfCommand,
    },
    /// Base backups: take, list, verify, prune, and prove one restores
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Job runs: list the recent ones (default), show one, or run a schedule now
    #[command(args_conflicts_with_subcommands = true)]
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
        #[command(flatten)]
        list: JobsList,
    },
}

#[derive(Debug, Subcommand)]
enum SchedulesCommand {
    /// Check every schedule file and show each one's next three fire times; exit 1 if any is invalid
    Check {
        /// The schedule folder [default: scheduler.dir]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct JobsList {
    /// Only this schedule
    #[arg(long)]
    schedule: Option<String>,
    /// Only this status: running, succeeded, failed, timed_out, skipped, abandoned
    #[arg(long)]
    status: Option<String>,
    /// Only runs started since then: a duration back from now (`2h`, `3d`) or an RFC 3339 time
    #[arg(long)]
    since: Option<String>,
    /// At most this many
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// JSON lines instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Every attempt of one run
    Show {
        run_id: Uuid,
        /// JSON lines instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run a schedule now (trigger `manual`), under the same overlap guard as scheduled runs
    Run { schedule: String },
}

#[derive(Debug, Subcommand)]
enum PgconfCommand {
    /// Compare with the server; exit 0 when in force, 1 on drift, 2 when a restart is needed
    Check,
    /// Show the settings that differ, server first
    Diff,
    /// Write the differences with ALTER SYSTEM and reload; exit 2 when a restart is still needed
    Apply,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Take a base backup now, verify it, then apply retention
    Run,
    /// The backups in backup.dir, oldest first
    List {
        /// JSON lines instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Check a backup again with pg_verifybackup; exit 1 when it fails
    Verify { id: String },
    /// Delete what retention chooses: all but the newest backup.keep verified backups
    Prune,
    /// Restore a backup (default: the newest verified) into a throwaway server from the WAL archive
    RestoreTest { id: Option<String> },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Apply the schema migrations
    Migrate,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted
    Show,
}

/// The binary's entry: parses arguments, runs the command, prints an error chain and sets the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("userpipe: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("userpipe: {error:#}");
            ExitCode::FAILURE
        }
    };
    // Blocking work left behind at shutdown (a consumer closing against a gone broker, a drill's copy)
    // must not hold the exit: give it a moment, then leave.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run { roles } => {
            let roles = if roles.is_empty() {
                Role::ALL.to_vec()
            } else {
                roles
            };
            let shutdown = shutdown_on_signal();
            app::run(&config, &roles, shutdown).await?;
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
            kafka_topics(&config).await?;
            let producer = crate::kafka::producer(&config.kafka.brokers)?;
            let report = fetch::run(&config, &producer, count, Uuid::new_v4()).await?;
            println!(
                "published {} of {} users to {} (skipped {}, run {})",
                report.published,
                report.received,
                config.topics.users,
                report.skipped,
                report.run_id
            );
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
        Command::Pgconf { command } => return pgconf_command(&config, command).await,
        Command::Backup { command } => return backup_command(&config, command).await,
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
                    print!("{}", describe_run(record));
                }
            }
        }
        Command::Jobs {
            command: Some(JobsCommand::Run { schedule }),
            ..
        } => return run_now(&config, &schedule).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn check_schedules(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let loaded = scheduler::load_dir(dir)?;
    let now = chrono::Utc::now();
    for (schedule, _) in &loaded.schedules {
        let state = if schedule.enabled { "" } else { " (disabled)" };
        println!(
            "{}: {} at `{}` in {}{state}",
            schedule.name,
            schedule.job.kind(),
            schedule.cron_text,
            schedule.timezone
        );
        for fire in schedule.next_fires(now, 3) {
            println!("    {}", fire.format("%a %Y-%m-%d %H:%M:%S %Z"));
        }
    }
    for error in &loaded.errors {
        eprintln!("error: {error}");
    }
    println!(
        "{} valid, {} invalid schedule file(s) in {}",
        loaded.schedules.len(),
        loaded.errors.len(),
        dir.display()
    );
    Ok(if loaded.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn list_jobs(config: &Config, list: &JobsList) -> anyhow::Result<()> {
    let since = match &list.since {
        None => None,
        Some(text) => Some(parse_since(text, chrono::Utc::now())?),
    };
    let filter = journal::RunFilter {
        schedule: list.schedule.clone(),
        status: list.status.clone(),
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
        print!("{}", runs_table(&records));
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

/// Run attempts as an aligned table, one line each.
fn runs_table(records: &[RunRecord]) -> String {
    let mut rows = vec![[
        "STARTED".to_owned(),
        "SCHEDULE".into(),
        "JOB".into(),
        "TRIGGER".into(),
        "TRY".into(),
        "STATUS".into(),
        "DURATION".into(),
        "RUN ID".into(),
        "NOTE".into(),
    ]];
    for r in records {
        let note = r
            .error
            .as_deref()
            .or(r.reason.as_deref())
            .map(str::to_owned)
            .unwrap_or_else(|| r.detail.as_ref().map(|d| d.to_string()).unwrap_or_default());
        rows.push([
            r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.schedule.clone(),
            r.job.clone(),
            r.trigger.clone(),
            r.attempt.to_string(),
            r.status.clone(),
            r.duration_ms
                .map(|ms| format!("{ms}ms"))
                .unwrap_or_else(|| "-".into()),
            r.run_id.to_string(),
            note.chars().take(80).collect(),
        ]);
    }
    crate::table::render(&rows)
}

fn describe_run(r: &RunRecord) -> String {
    let mut text = format!(
        "run {} attempt {}\n  schedule  {}\n  job       {}\n  trigger   {}\n  status    {}\n  started   {}\n",
        r.run_id,
        r.attempt,
        r.schedule,
        r.job,
        r.trigger,
        r.status,
        r.started_at.to_rfc3339()
    );
    let optional = [
        ("scheduled", r.scheduled_for.map(|t| t.to_rfc3339())),
        ("finished", r.finished_at.map(|t| t.to_rfc3339())),
        ("duration", r.duration_ms.map(|ms| format!("{ms} ms"))),
        ("reason", r.reason.clone()),
        ("error", r.error.clone()),
        ("detail", r.detail.as_ref().map(|d| d.to_string())),
        ("instance", Some(r.instance.clone())),
    ];
    for (label, value) in optional {
        if let Some(value) = value {
            text.push_str(&format!("  {label:<9} {value}\n"));
        }
    }
    text
}

/// `jobs run`: one run of a schedule in this process, recorded like any other; exit 0 when it succeeded.
async fn run_now(config: &Config, name: &str) -> anyhow::Result<ExitCode> {
    let path = config.scheduler.dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no schedule {name}: cannot read {}", path.display()))?;
    let schedule = scheduler::schedule::parse(&path, &text)?;
    kafka_topics(config).await?;
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
    Ok(match status {
        Some(Status::Succeeded) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// `pgconf check | diff | apply`.
async fn pgconf_command(config: &Config, command: PgconfCommand) -> anyhow::Result<ExitCode> {
    let file = pgconf::DesiredFile::load(&config.pgconf.file)?;
    let mut conn = pgconf::connect(config.database.url.expose()).await?;
    let outcome = match command {
        PgconfCommand::Check => {
            let comparisons = pgconf::check(&mut conn, &file).await?;
            print!("{}", pgconf::render_check(&file.path, &comparisons));
            pgconf::Outcome::of(&comparisons)
        }
        PgconfCommand::Diff => {
            let comparisons = pgconf::check(&mut conn, &file).await?;
            print!("{}", pgconf::render_diff(&file.path, &comparisons));
            pgconf::Outcome::InForce
        }
        PgconfCommand::Apply => {
            let applied = pgconf::apply(&mut conn, &file).await?;
            print!("{}", pgconf::render_applied(&applied));
            pgconf::Outcome::of(&applied.after)
        }
    };
    Ok(ExitCode::from(outcome.exit_code()))
}

/// `backup run | list | verify | prune | restore-test`. Runs and drills stop cleanly on SIGINT/SIGTERM:
/// dropping them kills pg_basebackup or the throwaway server and removes what they left.
async fn backup_command(config: &Config, command: BackupCommand) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Run => {
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = until_signal(backup::run(config, progress)).await?;
            println!(
                "backup {} verified: {} at {} (WAL {} to {}), took {} ms",
                report.id,
                backup::human_bytes(report.bytes),
                report.path.display(),
                report.start_lsn,
                report.end_lsn,
                report.duration_ms
            );
            if !report.pruned.is_empty() {
                println!("retention deleted {}", report.pruned.join(", "));
            }
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
                print!("{}", backup::render_list(&listed));
            }
        }
        BackupCommand::Verify { id } => {
            let verification = backup::verify(config, &id).await?;
            if !verification.ok {
                println!("backup {id} FAILED verification:");
                for problem in &verification.problems {
                    println!("  {problem}");
                }
                return Ok(ExitCode::FAILURE);
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
            let report = until_signal(backup::drill::run(config, id.as_deref())).await?;
            let newest = report
                .newest_commit_time
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "none replayed".into());
            println!(
                "backup {} restores: {} rows in random_users, recovery took {:.1} s ({} WAL segments from the archive), newest commit {newest}",
                report.backup_id,
                report.rows,
                report.recovery_seconds,
                report.wal_segments_restored
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` until it ends or SIGINT/SIGTERM comes; then it is dropped (its clean-up runs) and this
/// fails.
async fn until_signal<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let shutdown = shutdown_on_signal();
    tokio::select! {
        result = work => result,
        _ = shutdown.cancelled() => anyhow::bail!("stopped by a signal; nothing was kept"),
    }
}

async fn kafka_topics(config: &Config) -> anyhow::Result<()> {
    crate::kafka::ensure_topics(
        &config.kafka.brokers,
        &app::topic_specs(config, &config.topics),
    )
    .await
    .context("cannot prepare the topics")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USERPIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A token cancelled at the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!(message = "SIGINT received, stopping"),
            _ = terminate => info!(message = "SIGTERM received, stopping"),
        }
        cancel.cancel();
    });
    token
}

/// `userpipe health`: asks the local `/readyz` and prints its verdict.
async fn health(config: &Config) -> anyhow::Result<ExitCode> {
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
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
