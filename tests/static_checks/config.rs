//! The configuration against README.md and the sources: every key in the table with its variables, and no
//! `USERPIPE_` variable read by the code that the configuration would refuse as unknown.

use std::collections::BTreeSet;
use std::path::Path;

use userpipe::config::{self, Config, ENV_OVERRIDES, PROCESS_VARIABLES, variable_of};

use crate::cli::{readme_section, table_rows};

/// The keys of the configuration that have a default (an optional key without one is not among them).
fn keys_with_defaults() -> BTreeSet<String> {
    let defaults = toml::Table::try_from(Config::default()).expect("the defaults as a table");
    let mut keys = BTreeSet::new();
    for (section, table) in &defaults {
        for key in table.as_table().expect("a section").keys() {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

/// Whether `key` is a key of the configuration: setting it by its variable is not refused as unknown.
fn is_a_key(key: &str) -> bool {
    let vars = [(variable_of(key), "1".to_owned())];
    match Config::resolve(None, &vars, |_| unreachable!()) {
        Ok(_) => true,
        Err(error) => !format!("{error:#}").contains("unknown field"),
    }
}

#[test]
fn the_configuration_table_names_every_key_with_its_variables() {
    let rows = table_rows(&readme_section("Configuration"));
    let documented: BTreeSet<String> = rows.iter().map(|row| row[0].clone()).collect();
    let missing: Vec<String> = keys_with_defaults()
        .difference(&documented)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's configuration table lacks {missing:?}"
    );
    for row in &rows {
        let key = &row[0];
        assert!(
            is_a_key(key),
            "README.md documents `{key}`, which is no key of the configuration"
        );
        let variables: Vec<&str> = row[1].split(", ").collect();
        let mut expected = vec![variable_of(key)];
        expected.extend(config::env::older_name_of(key).map(str::to_owned));
        assert_eq!(variables, expected, "the environment column of `{key}`");
    }
    assert!(
        !is_a_key("sink.batch_siz"),
        "the check sees a key that is not one"
    );
}

#[test]
fn every_userpipe_variable_the_code_names_is_one_the_configuration_accepts() {
    let keys = keys_with_defaults();
    let accepted = |name: &str| {
        PROCESS_VARIABLES.contains(&name)
            || ENV_OVERRIDES.iter().any(|(older, _)| *older == name)
            || keys.iter().any(|key| variable_of(key) == name)
    };
    let mut refused = BTreeSet::new();
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        // Unit tests (a file's last module, or a `tests.rs`) name variables only to set them.
        let text = match file.file_name().is_some_and(|name| name == "tests.rs") {
            true => "",
            false => text.split("#[cfg(test)]").next().unwrap_or_default(),
        };
        for literal in text.split('"').skip(1).step_by(2) {
            let is_name = literal.len() > config::env::PREFIX.len()
                && literal.starts_with(config::env::PREFIX)
                && !literal.ends_with('_')
                && literal
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_name && !accepted(literal) {
                refused.insert(format!("{literal} ({})", file.display()));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "the code reads {refused:?}, which the configuration would refuse as an unknown variable: add it \
         to config::PROCESS_VARIABLES, or make it a key"
    );
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read a source folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
