//! The command line, checked without the stack: exit codes against README.md's table, clap's usage error,
//! `config show` and the environment.

use std::process::{Command, Output};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use userpipe::cli::exit;

use crate::deploy::markdown_section;

pub(crate) fn readme_section(title: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    markdown_section(&readme, title)
        .unwrap_or_else(|| panic!("README.md has no section whose heading contains {title:?}"))
}

/// The body rows of the tables in `section`, each as the text of its cells (code spans included).
pub(crate) fn table_rows(section: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut in_head, mut row, mut cell) = (false, Vec::new(), String::new());
    for event in Parser::new_ext(section, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::TableHead) => in_head = true,
            Event::End(TagEnd::TableHead) => {
                in_head = false;
                row.clear();
            }
            Event::Start(Tag::TableCell) => cell.clear(),
            Event::Text(text) | Event::Code(text) => cell.push_str(&text),
            Event::End(TagEnd::TableCell) => row.push(cell.trim().to_owned()),
            Event::End(TagEnd::TableRow) if !in_head => rows.push(std::mem::take(&mut row)),
            _ => {}
        }
    }
    rows
}

/// Runs the binary with `args`, with no configuration from the environment.
pub(crate) fn userpipe(args: &[&str]) -> Output {
    userpipe_with(args, &[])
}

/// Runs the binary with `args` and, of the configuration's variables, only `vars`.
pub(crate) fn userpipe_with(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_userpipe"));
    for (name, _) in std::env::vars() {
        if name.starts_with("USERPIPE_") || name.starts_with("DATABASE_URL") {
            command.env_remove(name);
        }
    }
    command
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("run userpipe")
}

#[test]
fn the_readme_lists_exactly_the_exit_codes_of_the_code() {
    let listed: Vec<String> = table_rows(&readme_section("Exit codes"))
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let coded: Vec<String> = exit::CODES.iter().map(|(c, _)| c.to_string()).collect();
    assert_eq!(
        listed, coded,
        "README.md's exit codes differ from cli::exit::CODES"
    );
}

#[test]
fn a_usage_error_exits_with_clap_s_code_and_says_what_was_wrong() {
    for args in [
        &["--no-such-flag"][..],
        &["pgconf", "bogus"],
        &["jobs", "--limit", "many"],
    ] {
        let out = userpipe(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(exit::USAGE)),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    }
    assert_ne!(exit::DRIFT, exit::USAGE);
    assert_ne!(exit::RESTART_NEEDED, exit::USAGE);
}

#[test]
fn config_show_says_where_each_value_came_from_and_never_shows_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("userpipe.toml");
    std::fs::write(&file, "# mine\n[kafka]\npartitions = 6\n").unwrap();
    let secret = dir.path().join("database_url");
    std::fs::write(&secret, "postgres://u:hunter2@db:5432/x\n").unwrap();
    let (file, secret) = (file.to_str().unwrap(), secret.to_str().unwrap());
    let out = userpipe_with(
        &["--config", file, "config", "show"],
        &[
            ("USERPIPE_SINK__BATCH_SIZE", "77"),
            ("USERPIPE_DATABASE__URL_FILE", secret),
            ("USERPIPE_KAFKA_BROKERS", "kafka:9092"),
            ("USERPIPE_STACK_DIR", "/not/a/key"),
        ],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {key} in\n{shown}"))
    };
    assert_eq!(
        line("partitions"),
        format!("partitions = 6 # file {file}:3")
    );
    let ends = |start: &str, end: &str| {
        shown
            .lines()
            .any(|l| l.starts_with(start) && l.ends_with(end))
    };
    assert!(ends("linger = \"20ms\"", "# default"), "{shown}");
    assert!(
        shown.lines().any(|l| l.starts_with("batch_size = 77")
            && l.ends_with("# environment USERPIPE_SINK__BATCH_SIZE")),
        "{shown}"
    );
    assert_eq!(
        line("brokers"),
        "brokers = \"kafka:9092\" # environment USERPIPE_KAFKA_BROKERS"
    );
    assert_eq!(
        line("url"),
        format!(
            "url = \"postgres://u:***@db:5432/x\" # environment USERPIPE_DATABASE__URL_FILE ({secret})"
        )
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        userpipe::config::Config::parse(&shown).is_ok(),
        "what it shows reads as a configuration file"
    );

    let out = userpipe_with(
        &["--config", file, "config", "show"],
        &[
            ("USERPIPE_SINK__BATCHSIZE", "77"),
            ("USERPIPE_DATABASE__URL", "postgres://u:hunter2@db/x"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("USERPIPE_SINK__BATCHSIZE: unknown field `batchsize`"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn bash_completes_commands_and_flags_from_the_script_userpipe_prints() {
    // A broken configuration does not stand in the way: completions need none.
    let out = userpipe_with(
        &["completions", "bash"],
        &[("USERPIPE_SINK__BATCHSIZE", "1")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("userpipe.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash offers after each line, as it does when Tab is pressed.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; \
             _userpipe userpipe '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = Command::new("bash")
            .args(["-c", &program])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(complete("userpipe dlq re"), ["replay"]);
    assert!(complete("userpipe dlq replay --d").contains(&"--dry-run".to_owned()));
    assert!(complete("userpipe comp").contains(&"completions".to_owned()));
    for shell in ["zsh", "fish"] {
        let out = userpipe(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            script.contains("dry-run") && script.contains("replay"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn the_manual_pages_describe_every_command_with_its_example() {
    let out = userpipe(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(page.contains(".TH userpipe 1"), "{page}");
    assert!(page.contains("dlq"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = userpipe(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = std::fs::read_to_string(dir.path().join("userpipe-dlq-replay.1")).unwrap();
    assert!(replay.contains("\\-\\-dry\\-run"), "{replay}");
    assert!(
        replay.contains("userpipe dlq replay enriched_users_info_randomtopics.dlq"),
        "{replay}"
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.lines().count() >= 30,
        "a page per command:\n{listed}"
    );
}

#[test]
fn every_command_s_help_ends_with_an_example() {
    for args in [
        &["--help"][..],
        &["dlq", "show", "--help"],
        &["backup", "run", "--help"],
    ] {
        let out = userpipe(args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        let last = help.trim_end().lines().rev().take(2).collect::<Vec<_>>();
        assert_eq!(last[1], "Example:", "{args:?}:\n{help}");
        assert!(
            last[0].trim_start().starts_with("userpipe "),
            "{args:?}:\n{help}"
        );
    }
}

#[test]
fn out_of_range_input_is_refused_with_its_limit_and_never_panics() {
    let refused = |args: &[&str], vars: &[(&str, &str)], code: u8, says: &str| {
        let out = userpipe_with(args, vars);
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!said.contains("panicked"), "{args:?}: {said}");
        assert_eq!(out.status.code(), Some(i32::from(code)), "{args:?}: {said}");
        assert!(said.contains(says), "{args:?} should say {says:?}: {said}");
    };
    refused(
        &["jobs", "--since", "300000y"],
        &[],
        exit::USAGE,
        "invalid value '300000y' for '--since <SINCE>': a duration back from now can reach at most 100 years",
    );
    refused(
        &["jobs", "--since", "18446744073709551615s"],
        &[],
        exit::USAGE,
        "at most 100 years",
    );
    refused(&["jobs", "--limit=-1"], &[], exit::USAGE, "--limit");
    refused(&["fetch", "--count", "0"], &[], exit::USAGE, "1..=5000");
    refused(&["bench", "--users", "0"], &[], exit::USAGE, "--users");
    refused(
        &["dlq", "show", "users_info", "--limit", "0"],
        &[],
        exit::USAGE,
        "--limit",
    );

    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("forever.toml");
    std::fs::write(
        &schedule,
        "job = \"fetch-users\"\ncron = \"*/5 * * * *\"\nretries = 4294967295\n",
    )
    .unwrap();
    let folder = dir.path().to_str().unwrap();
    refused(
        &["schedules", "check", folder],
        &[],
        1,
        &format!(
            "{}:3:11: retries must be at most 100, not 4294967295",
            schedule.display()
        ),
    );
    let file = dir.path().join("userpipe.toml");
    std::fs::write(&file, "[backup]\ntimeout = \"300000y\"\n").unwrap();
    refused(
        &["--config", file.to_str().unwrap(), "config", "show"],
        &[],
        1,
        &format!(
            "backup.timeout must be at most 7days, not 300000years (from file {}:2)",
            file.display()
        ),
    );
    refused(
        &["config", "show"],
        &[("USERPIPE_STAGES__BATCH_SIZE", "9223372036854775807")],
        1,
        "stages.batch_size must be at most 1000000, not 9223372036854775807 \
         (from environment USERPIPE_STAGES__BATCH_SIZE)",
    );
}
