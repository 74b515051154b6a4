//! The desired settings file (`pgconf/archiving.conf`, postgresql.conf syntax): parsed, every problem named
//! with its line. Pure: the caller reads nothing but the file itself.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// One setting of the desired file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    /// Lowercase, as PostgreSQL folds it.
    pub name: String,
    /// The value as written, without its quotes.
    pub value: String,
    /// 1-based line in the file.
    pub line: usize,
}

/// A problem on one line of the desired file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The desired file: where it is and what it asks for.
#[derive(Debug, Clone)]
pub struct DesiredFile {
    pub path: PathBuf,
    pub settings: Vec<Desired>,
}

impl DesiredFile {
    /// Reads and parses `path`; every problem is named with the file and its line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the desired settings {}", path.display()))?;
        let settings = parse(&text).map_err(|errors| file_errors(path, &errors))?;
        Ok(Self {
            path: path.to_owned(),
            settings,
        })
    }
}

/// The errors of one file as one error, a line each (`file:line: message`).
pub fn file_errors(path: &Path, errors: &[LineError]) -> anyhow::Error {
    let lines: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{}: {}", path.display(), e.line, e.message))
        .collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

/// Parses postgresql.conf syntax: `name = value` or `name value`, `#` comments, values bare or in single
/// quotes (`''` or `\'` for a quote). `include` directives are refused: everything is in this one file.
/// Every problem is reported, each with its line; a setting given twice is a problem too.
pub fn parse(text: &str) -> Result<Vec<Desired>, Vec<LineError>> {
    let mut settings: Vec<Desired> = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        match parse_line(line) {
            Ok(None) => {}
            Ok(Some((name, value))) => {
                if let Some(first) = settings.iter().find(|s| s.name == name) {
                    errors.push(LineError {
                        line: number,
                        message: format!("{name} is already set on line {}", first.line),
                    });
                    continue;
                }
                settings.push(Desired {
                    name,
                    value,
                    line: number,
                });
            }
            Err(message) => errors.push(LineError {
                line: number,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

/// One line: `None` for a blank or comment line.
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    let name = rest[..name_end].to_ascii_lowercase();
    if !is_setting_name(&name) {
        let word: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        return Err(format!("expected a setting name, found `{word}`"));
    }
    if matches!(
        name.as_str(),
        "include" | "include_dir" | "include_if_exists"
    ) {
        return Err(format!(
            "`{name}` is not supported here: list every setting in this file"
        ));
    }
    let mut rest = rest[name_end..].trim_start();
    if let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start();
    }
    if rest.is_empty() || rest.starts_with('#') {
        return Err(format!("{name} has no value"));
    }
    let (value, after) = match rest.strip_prefix('\'') {
        Some(quoted) => parse_quoted(quoted)?,
        None => {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '#')
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if let Some(bad) = word
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || "-._:/+".contains(*c)))
            {
                return Err(format!(
                    "the value of {name} has `{bad}`, which needs quotes: write '{word}'"
                ));
            }
            (word.to_owned(), &rest[end..])
        }
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return Err(format!("unexpected `{after}` after the value of {name}"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "the value of {name} has a control character, which ALTER SYSTEM cannot write"
        ));
    }
    Ok(Some((name, value)))
}

/// A quoted value after its opening quote: the value, and the text after the closing quote.
fn parse_quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' => {
                if let Some((_, '\'')) = chars.peek() {
                    chars.next();
                    value.push('\'');
                } else {
                    return Ok((value, &text[at + 1..]));
                }
            }
            '\\' => match chars.next() {
                Some((_, 'b')) => value.push('\u{8}'),
                Some((_, 'f')) => value.push('\u{c}'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, 't')) => value.push('\t'),
                Some((_, digit @ '0'..='7')) => {
                    let mut code = digit.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match chars.peek() {
                            Some((_, d @ '0'..='7')) => {
                                code = code * 8 + d.to_digit(8).unwrap_or(0);
                                chars.next();
                            }
                            _ => break,
                        }
                    }
                    value.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
                Some((_, other)) => value.push(other),
                None => break,
            },
            other => value.push(other),
        }
    }
    Err("the quoted value has no closing quote".into())
}

/// A setting name as PostgreSQL has them, lowercase: `name` or `class.name`, letters, digits and `_`.
/// Only such names are ever written into SQL text.
pub fn is_setting_name(name: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let mut parts = name.split('.');
    let first = parts.next().is_some_and(part);
    let second = parts.next().is_none_or(part);
    first && second && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_parse(text: &str, expected: &[(&str, &str, usize)]) {
        let settings = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
        let got: Vec<(&str, &str, usize)> = settings
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str(), s.line))
            .collect();
        assert_eq!(got, expected, "{text:?}");
    }

    fn check_parse_error(text: &str, expected: &[&str]) {
        let errors: Vec<String> = parse(text)
            .expect_err("the text is invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors, expected, "{text:?}");
    }

    #[test]
    fn parses_postgresql_conf_syntax() {
        check_parse(
            "# comment\n\nwal_level = replica  # trailing\nArchive_Mode on\narchive_command = 'cp %p ''/a b/%f'' # not a comment'\narchive_timeout=60s\nmax_wal_senders = 10\n",
            &[
                ("wal_level", "replica", 3),
                ("archive_mode", "on", 4),
                ("archive_command", "cp %p '/a b/%f' # not a comment", 5),
                ("archive_timeout", "60s", 6),
                ("max_wal_senders", "10", 7),
            ],
        );
        check_parse(
            "a.b = 'x\\'y\\\\z\\101'\nlog_line_prefix = ''\n",
            &[("a.b", "x'y\\zA", 1), ("log_line_prefix", "", 2)],
        );
    }

    #[test]
    fn the_shipped_file_parses() {
        let settings = parse(include_str!("../../../pgconf/archiving.conf")).unwrap();
        let names: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "wal_level",
                "archive_mode",
                "archive_command",
                "archive_timeout",
                "max_wal_senders"
            ]
        );
        assert_eq!(
            settings[2].value,
            "/etc/userpipe/pgconf/archive-wal.sh %p /var/lib/postgresql/wal-archive/%f"
        );
        assert_eq!(settings[3].value, "60s");
    }

    #[test]
    fn errors_name_their_lines_and_all_are_reported() {
        check_parse_error(
            "wal_level = replica\narchive_command = 'cp %p\n= on\narchive_mode on off\ninclude 'x.conf'\nwal_level = logical\narchive_timeout\nmax_wal_senders = 1$\n",
            &[
                "line 2: the quoted value has no closing quote",
                "line 3: expected a setting name, found `=`",
                "line 4: unexpected `off` after the value of archive_mode",
                "line 5: `include` is not supported here: list every setting in this file",
                "line 6: wal_level is already set on line 1",
                "line 7: archive_timeout has no value",
                "line 8: the value of max_wal_senders has `$`, which needs quotes: write '1$'",
            ],
        );
        check_parse_error(
            "archive_command = 'a\\nb'\n",
            &[
                "line 1: the value of archive_command has a control character, which ALTER SYSTEM cannot write",
            ],
        );
    }
}
