//! The command line as clap describes it, with one example in every command's `--help`; and what is made
//! from it by clap's own generators: shell completions (clap_complete) and manual pages (clap_mangen).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use super::args::Cli;

/// Examples of each command, by the command's path: shown at the end of its `--help` and in its manual
/// page. A test checks that every command has one and that each parses as that command.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("", "userpipe --config /etc/userpipe/userpipe.toml run"),
    ("run", "userpipe run --roles sink"),
    (
        "fetch",
        "userpipe fetch --count 100 --source generator --seed 7",
    ),
    ("db", "userpipe db migrate"),
    ("db migrate", "userpipe db migrate"),
    ("bench", "userpipe bench --users 100000 --preload"),
    ("health", "userpipe health"),
    ("config", "userpipe config show"),
    (
        "config show",
        "USERPIPE_SINK__BATCH_SIZE=8000 userpipe config show",
    ),
    ("schedules", "userpipe schedules check"),
    (
        "schedules check",
        "userpipe schedules check /etc/userpipe/schedules",
    ),
    ("pgconf", "userpipe pgconf check"),
    ("pgconf check", "userpipe pgconf check --archive"),
    ("pgconf diff", "userpipe pgconf diff"),
    ("pgconf apply", "userpipe pgconf apply"),
    ("backup", "userpipe backup list"),
    ("backup run", "userpipe backup run"),
    ("backup list", "userpipe backup list --json"),
    ("backup verify", "userpipe backup verify 20260103T020000Z"),
    ("backup prune", "userpipe backup prune --dry-run"),
    ("backup check", "userpipe backup check"),
    (
        "backup restore",
        "userpipe backup restore --target-time 2026-01-03T10:15:00Z --to /var/lib/postgresql/restored --verify",
    ),
    ("backup restore-test", "userpipe backup restore-test"),
    ("jobs", "userpipe jobs --status failed --since 1d"),
    (
        "jobs",
        "userpipe jobs --schedule base-backup --json | jq .error",
    ),
    (
        "jobs show",
        "userpipe jobs show 0b7e6c1a-3f2d-4c55-9a51-2f0e4d8c9b10",
    ),
    (
        "jobs logs",
        "userpipe jobs logs --follow 0b7e6c1a-3f2d-4c55-9a51-2f0e4d8c9b10",
    ),
    ("jobs run", "userpipe jobs run fetch-users"),
    ("dlq", "userpipe dlq list"),
    ("dlq list", "userpipe dlq list"),
    (
        "dlq show",
        "userpipe dlq show users_info.dlq --reason 'missing field' --limit 5",
    ),
    (
        "dlq replay",
        "userpipe dlq replay enriched_users_info_randomtopics.dlq --dry-run",
    ),
    (
        "completions",
        "userpipe completions bash > /etc/bash_completion.d/userpipe",
    ),
    ("man", "userpipe man --dir /usr/local/share/man/man1"),
];

/// The command line, each command with its example after its help.
pub fn command() -> clap::Command {
    with_examples(Cli::command(), "")
}

fn with_examples(mut command: clap::Command, path: &str) -> clap::Command {
    let examples: Vec<&str> = EXAMPLES
        .iter()
        .filter(|(p, _)| *p == path)
        .map(|(_, example)| *example)
        .collect();
    if !examples.is_empty() {
        let title = if examples.len() == 1 {
            "Example"
        } else {
            "Examples"
        };
        command = command.after_help(format!("{title}:\n  {}", examples.join("\n  ")));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let inner = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        command = command.mut_subcommand(&name, |sub| with_examples(sub, &inner));
    }
    command
}

/// The arguments of this process; a usage error (or `--help`, `--version`) ends it as clap does.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// `completions`: the completion script of `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> anyhow::Result<()> {
    // Made in memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "userpipe", &mut script);
    out.write_all(&script)
        .context("cannot write the completion script")
}

/// `man`: the manual page of `userpipe` on `out`, or with `dir` one page per command written there
/// (`userpipe.1`, `userpipe-dlq-replay.1`, ...), whose names are printed.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    match dir {
        None => clap_mangen::Man::new(command())
            .render(out)
            .context("cannot write the manual page"),
        Some(dir) => {
            clap_mangen::generate_to(command(), dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
            let mut written: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with("userpipe") && name.ends_with(".1"))
                .collect();
            written.sort();
            for name in written {
                writeln!(out, "{}", dir.join(name).display())?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's path, the top one as "".
    fn paths(command: &clap::Command, path: &str, out: &mut Vec<String>) {
        out.push(path.to_owned());
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let inner = if path.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{path} {}", sub.get_name())
            };
            paths(sub, &inner, out);
        }
    }

    #[test]
    fn every_command_has_an_example_and_each_parses_as_that_command() {
        let mut all = Vec::new();
        paths(&Cli::command(), "", &mut all);
        for path in &all {
            let examples: Vec<&str> = EXAMPLES
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(_, e)| *e)
                .collect();
            assert!(
                !examples.is_empty(),
                "`userpipe {path}` needs an example in EXAMPLES"
            );
            for example in examples {
                check_example(path, example);
            }
        }
        for (path, _) in EXAMPLES {
            assert!(
                all.contains(&path.to_string()),
                "EXAMPLES names `{path}`, no command"
            );
        }
    }

    /// `example` parses, and runs the command `path` (or, for a command with commands, one of them).
    fn check_example(path: &str, example: &str) {
        // The words as a shell reads them, without an environment assignment, a redirection or a pipe.
        let words: Vec<String> = shlex::split(example)
            .expect("an example a shell can read")
            .into_iter()
            .skip_while(|w| w.contains('='))
            .take_while(|w| w != ">" && w != "|")
            .collect();
        let parsed = command().try_get_matches_from(&words);
        assert!(parsed.is_ok(), "{example:?}: {}", parsed.unwrap_err());
        let mut matches = parsed.unwrap();
        let mut used = Vec::new();
        while let Some((name, sub)) = matches.remove_subcommand() {
            used.push(name);
            matches = sub;
        }
        let used = used.join(" ");
        assert!(
            used == path || path.is_empty() || used.starts_with(&format!("{path} ")),
            "the example of `{path}` runs `{used}`"
        );
    }

    #[test]
    fn help_ends_with_the_example() {
        let mut command = command();
        let help = command
            .find_subcommand_mut("dlq")
            .and_then(|dlq| dlq.find_subcommand_mut("replay"))
            .unwrap()
            .render_help()
            .to_string();
        assert!(
            help.trim_end().ends_with(
                "Example:\n  userpipe dlq replay enriched_users_info_randomtopics.dlq --dry-run"
            ),
            "{help}"
        );
    }
}
