//! The command line: [`args`] (clap), [`help`] (examples, completions, manual pages), [`commands`] (what
//! each command does; the `jobs` family in [`jobs`]), [`output`] (what it prints), [`exit`] (exit codes,
//! decided in one place), [`process`] (logging and the shutdown signal).

pub mod args;
pub mod commands;
pub mod exit;
pub mod help;
pub mod jobs;
pub mod letters;
pub mod output;
pub mod process;

use std::process::ExitCode;

/// The binary's entry: parses arguments, runs the command, prints an error chain and sets the exit code.
pub fn main() -> ExitCode {
    let cli = help::parse();
    process::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("userpipe: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = exit::exit_code(runtime.block_on(commands::run(cli)));
    // A restore drill cut off by its run's timeout cleans up in the background: let it finish.
    runtime.block_on(crate::pg::drill::cleanups_finished(crate::SHUTDOWN_GRACE));
    // Blocking work left behind at shutdown (a consumer closing against a gone broker, a drill's copy)
    // must not hold the exit: give it a moment, then leave.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}
