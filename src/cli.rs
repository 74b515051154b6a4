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
use crate::{db, fetch, sink};

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
        #[arg(long)]
        rate: Option<u64>,
    },
    /// The configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
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
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("userpipe: {error:#}");
            ExitCode::FAILURE
        }
    }
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
            app::run(&config, &config.topics, &roles, shutdown).await?;
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
            let report = fetch::run(&config, &config.topics, count, Uuid::new_v4()).await?;
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
            sink::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Bench { users, rate } => {
            let report = bench::run(&config, &BenchOptions { users, rate }).await?;
            println!("{report}");
        }
        Command::Config {
            command: ConfigCommand::Show,
        } => print!("{}", config.to_redacted_toml()),
    }
    Ok(ExitCode::SUCCESS)
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
        .with_writer(std::io::stderr);
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
