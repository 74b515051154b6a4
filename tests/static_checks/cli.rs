//! The command line, checked without the stack: exit codes against README.md's table, clap's usage error.

use std::process::{Command, Output};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use userpipe::cli::exit;

use crate::deploy::markdown_section;

fn readme_section(title: &str) -> String {
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
    let mut command = Command::new(env!("CARGO_BIN_EXE_userpipe"));
    for (name, _) in std::env::vars() {
        if name.starts_with("USERPIPE_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }
    command.args(args).output().expect("run userpipe")
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
