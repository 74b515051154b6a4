//! WAL-archiving settings kept in force: the desired file (`pgconf/archiving.conf`, postgresql.conf
//! syntax) compared with the running server, applied with ALTER SYSTEM and `pg_reload_conf()`, and the
//! archiver's health from `pg_stat_archiver`. Parsing, value normalisation, comparison, rendering and the
//! health judgement are pure and tested here; the rest talks to the server.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tracing::info;

use crate::config::{Config, redact_url};
use crate::scheduler::runner::JobFailure;

/// How long `apply` waits for the reloaded configuration to reach its own session.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

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
fn file_errors(path: &Path, errors: &[LineError]) -> anyhow::Error {
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

/// The type of a setting, from `pg_settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingType {
    /// `bool`, `enum`, `integer`, `real` or `string`.
    pub vartype: String,
    /// The unit of `setting`: `s`, `ms`, `min`, `kB`, `8kB`, `MB`, ...
    pub unit: Option<String>,
    /// The values an enum takes.
    pub enumvals: Vec<String>,
}

/// A value in the form `pg_settings.setting` has it, to compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Canonical {
    Text(String),
    Number(f64),
}

impl Canonical {
    fn same(&self, other: &Canonical) -> bool {
        match (self, other) {
            (Canonical::Number(a), Canonical::Number(b)) => {
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            (a, b) => a == b,
        }
    }
}

/// `value` as `pg_settings.setting` would show it: booleans as on/off, enums lowercase, numbers in the
/// setting's own unit (`60s` for a setting in seconds is 60, `1GB` for one in 8kB blocks is 131072).
pub fn canonical(value: &str, ty: &SettingType) -> Result<Canonical, String> {
    match ty.vartype.as_str() {
        "bool" => parse_bool(value)
            .map(|b| Canonical::Text(if b { "on" } else { "off" }.into()))
            .ok_or_else(|| format!("`{value}` is not a boolean (on, off, true, false, yes, no)")),
        "enum" => {
            let lower = value.to_ascii_lowercase();
            if ty.enumvals.contains(&lower) {
                return Ok(Canonical::Text(lower));
            }
            let has = |v: &str| ty.enumvals.iter().any(|e| e == v);
            match parse_bool(value) {
                // Enums such as archive_mode also take the boolean spellings of on and off.
                Some(b) if has("on") && has("off") => {
                    Ok(Canonical::Text(if b { "on" } else { "off" }.into()))
                }
                _ => Err(format!(
                    "`{value}` is not one of {}",
                    ty.enumvals.join(", ")
                )),
            }
        }
        "integer" | "real" => {
            let number = number_in_unit(value, ty.unit.as_deref())?;
            Ok(Canonical::Number(if ty.vartype == "integer" {
                number.round()
            } else {
                number
            }))
        }
        _ => Ok(Canonical::Text(value.to_owned())),
    }
}

/// PostgreSQL's booleans: on, off, true, false, yes, no, 1, 0, and unique prefixes, in any case.
fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(&v);
    if prefix_of("true", 1) || prefix_of("yes", 1) || v == "1" || v == "on" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || v == "0" || prefix_of("off", 2) {
        Some(false)
    } else {
        None
    }
}

/// The factor of a memory unit in bytes, or of a time unit in microseconds, and which it is.
fn unit_factor(unit: &str) -> Option<(bool, f64)> {
    let memory = |f: f64| Some((true, f));
    let time = |f: f64| Some((false, f));
    match unit {
        "B" => memory(1.0),
        "kB" => memory(1024.0),
        "MB" => memory(1024.0 * 1024.0),
        "GB" => memory(1024.0 * 1024.0 * 1024.0),
        "TB" => memory(1024.0 * 1024.0 * 1024.0 * 1024.0),
        "us" => time(1.0),
        "ms" => time(1e3),
        "s" => time(1e6),
        "min" => time(60e6),
        "h" => time(3600e6),
        "d" => time(86400e6),
        _ => None,
    }
}

/// `text` (a number, perhaps with a unit) in `base`, the setting's unit (`8kB` is 8 kB blocks).
fn number_in_unit(text: &str, base: Option<&str>) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, unit) = (text[..split].trim(), text[split..].trim());
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if unit.is_empty() {
        return Ok(number);
    }
    let units = "B, kB, MB, GB, TB for memory; us, ms, s, min, h, d for time";
    let Some(base) = base.filter(|b| !b.is_empty()) else {
        return Err(format!("`{text}`: this setting takes no unit"));
    };
    let digits = base
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(base.len());
    let multiple: f64 = if digits == 0 {
        1.0
    } else {
        base[..digits].parse().unwrap_or(1.0)
    };
    let (base_memory, base_factor) = unit_factor(&base[digits..])
        .ok_or_else(|| format!("the server reports an unknown unit `{base}`"))?;
    match unit_factor(unit) {
        Some((memory, factor)) if memory == base_memory => {
            Ok(number * factor / (multiple * base_factor))
        }
        _ => Err(format!(
            "`{text}` has an invalid unit: valid units are {units}"
        )),
    }
}

/// One setting as the running server has it.
#[derive(Debug, Clone)]
pub struct Live {
    pub name: String,
    /// `pg_settings.setting`, in the setting's unit.
    pub setting: String,
    /// As `SHOW` shows it, with its unit.
    pub shown: String,
    pub ty: SettingType,
    /// `postmaster` settings change only with a restart.
    pub context: String,
    /// The value the configuration files give it now (the last one of `pg_file_settings`), which the
    /// next reload or restart puts in force; `None` when no file sets it.
    pub file_value: Option<String>,
}

/// Where one desired setting stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The running server has the desired value.
    InForce,
    /// The configuration files have it; it takes effect when PostgreSQL restarts.
    RestartNeeded,
    /// Neither: `apply` writes it.
    Drift,
}

/// One desired setting next to the server's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    /// As written in the desired file.
    pub wanted: String,
    /// As the server shows it.
    pub live: String,
    /// As the configuration files have it (the next reload or restart's value).
    pub file: Option<String>,
    pub state: State,
    pub line: usize,
}

/// Compares the desired settings with the server's; an unknown setting or a value of the wrong type is a
/// problem on its line.
pub fn compare(
    desired: &[Desired],
    live: &HashMap<String, Live>,
) -> Result<Vec<Comparison>, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for d in desired {
        let Some(l) = live.get(&d.name) else {
            errors.push(LineError {
                line: d.line,
                message: format!("unknown setting {}", d.name),
            });
            continue;
        };
        let wanted = match canonical(&d.value, &l.ty) {
            Ok(w) => w,
            Err(message) => {
                errors.push(LineError {
                    line: d.line,
                    message: format!("{}: {message}", d.name),
                });
                continue;
            }
        };
        let is_wanted = |v: &str| canonical(v, &l.ty).is_ok_and(|c| c.same(&wanted));
        let in_file = l.file_value.as_deref().is_some_and(is_wanted);
        // archive_command shows `(disabled)` while archive_mode is off: it follows archive_mode's restart.
        let waits_for_archive_mode = d.name == "archive_command" && l.setting == "(disabled)";
        let state = if is_wanted(&l.setting) {
            State::InForce
        } else if in_file && (l.context == "postmaster" || waits_for_archive_mode) {
            State::RestartNeeded
        } else {
            State::Drift
        };
        out.push(Comparison {
            name: d.name.clone(),
            wanted: d.value.clone(),
            live: l.shown.clone(),
            file: l.file_value.clone(),
            state,
            line: d.line,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The verdict on a whole comparison, and `check`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InForce,
    Drift,
    RestartNeeded,
}

impl Outcome {
    /// Drift wins over a pending restart: `apply` comes first, then perhaps the restart.
    pub fn of(comparisons: &[Comparison]) -> Self {
        if comparisons.iter().any(|c| c.state == State::Drift) {
            Outcome::Drift
        } else if comparisons.iter().any(|c| c.state == State::RestartNeeded) {
            Outcome::RestartNeeded
        } else {
            Outcome::InForce
        }
    }

    /// 0 in force, 1 drift, 2 a restart is needed.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::InForce => 0,
            Outcome::Drift => 1,
            Outcome::RestartNeeded => 2,
        }
    }
}

fn names_in(comparisons: &[Comparison], state: State) -> Vec<String> {
    comparisons
        .iter()
        .filter(|c| c.state == state)
        .map(|c| c.name.clone())
        .collect()
}

/// `pgconf check`: one line per setting and a verdict.
pub fn render_check(file: &Path, comparisons: &[Comparison]) -> String {
    let width = comparisons.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in comparisons {
        let state = match c.state {
            State::InForce => format!("in force: {}", c.live),
            State::RestartNeeded => format!(
                "waits for a restart: {} now, {} after the restart",
                c.live, c.wanted
            ),
            State::Drift => format!("drift: {} now, {} wanted", c.live, c.wanted),
        };
        out.push_str(&format!("{:<width$}  {state}\n", c.name));
    }
    out.push_str(&match Outcome::of(comparisons) {
        Outcome::InForce => format!("every setting of {} is in force\n", file.display()),
        Outcome::Drift => format!(
            "drift: {} differ from {}; `userpipe pgconf apply` writes them\n",
            names_in(comparisons, State::Drift).join(", "),
            file.display()
        ),
        Outcome::RestartNeeded => format!(
            "restart needed: {} take effect when PostgreSQL restarts\n",
            names_in(comparisons, State::RestartNeeded).join(", ")
        ),
    });
    out
}

/// `pgconf diff`: the settings that differ, server first (`-`), desired second (`+`).
pub fn render_diff(file: &Path, comparisons: &[Comparison]) -> String {
    let mut out = format!("--- the running server\n+++ {}\n", file.display());
    for c in comparisons.iter().filter(|c| c.state != State::InForce) {
        out.push_str(&format!("-{} = {}\n", c.name, quote_conf(&c.live)));
        let note = match c.state {
            State::RestartNeeded => "    # written; waits for a restart",
            _ => "",
        };
        out.push_str(&format!("+{} = {}{note}\n", c.name, quote_conf(&c.wanted)));
    }
    out
}

/// A value in postgresql.conf quoting.
fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The ALTER SYSTEM statement that writes `value` for `name`.
///
/// ALTER SYSTEM is a utility statement: it takes no bound parameters, and `set_config()` changes only
/// the session, not the server's configuration. So the statement is text, made safe here: the name must
/// be a plain lowercase identifier (and the caller takes it from `pg_settings`); the value is a string
/// literal with its quotes doubled, sent on a session with `standard_conforming_strings = on` so a
/// backslash stays a backslash, and control characters (which could end the literal's line) are refused.
/// A string literal is accepted for settings of every type.
pub fn alter_system_sql(name: &str, value: &str) -> anyhow::Result<String> {
    if !is_setting_name(name) {
        bail!("`{name}` is not a valid setting name");
    }
    if value.chars().any(char::is_control) {
        bail!("the value of {name} has a control character");
    }
    Ok(format!(
        "ALTER SYSTEM SET {name} = '{}'",
        value.replace('\'', "''")
    ))
}

/// Opens one connection to `url` (the password never appears in an error).
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .context("the database url is not a valid postgres url")?;
    PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot connect to postgresql at {}", redact_url(url)))
}

#[derive(sqlx::FromRow)]
struct SettingRow {
    name: String,
    setting: Option<String>,
    shown: Option<String>,
    unit: Option<String>,
    vartype: String,
    context: String,
    enumvals: Vec<String>,
}

/// The server's view of `names`: `pg_settings`, and the configuration files' values from
/// `pg_file_settings` (which needs a superuser, as ALTER SYSTEM does).
pub async fn read_live(
    conn: &mut PgConnection,
    names: &[String],
) -> anyhow::Result<HashMap<String, Live>> {
    let rows: Vec<SettingRow> = sqlx::query_as(
        "SELECT name, setting, current_setting(name) AS shown, unit, vartype, context, \
         coalesce(enumvals, '{}') AS enumvals FROM pg_settings WHERE name = ANY($1)",
    )
    .bind(names)
    .fetch_all(&mut *conn)
    .await
    .context("cannot read pg_settings")?;
    let files: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (name) name, setting FROM pg_file_settings \
         WHERE name = ANY($1) ORDER BY name, seqno DESC",
    )
    .bind(names)
    .fetch_all(&mut *conn)
    .await
    .context("cannot read pg_file_settings (userpipe needs a superuser connection for pgconf)")?;
    let files: HashMap<String, Option<String>> = files.into_iter().collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let live = Live {
                file_value: files.get(&r.name).cloned().flatten(),
                setting: r.setting.unwrap_or_default(),
                shown: r.shown.unwrap_or_default(),
                ty: SettingType {
                    vartype: r.vartype,
                    unit: r.unit,
                    enumvals: r.enumvals,
                },
                context: r.context,
                name: r.name.clone(),
            };
            (r.name, live)
        })
        .collect())
}

/// Compares `file` with the server.
pub async fn check(conn: &mut PgConnection, file: &DesiredFile) -> anyhow::Result<Vec<Comparison>> {
    let names: Vec<String> = file.settings.iter().map(|d| d.name.clone()).collect();
    let live = read_live(conn, &names).await?;
    compare(&file.settings, &live).map_err(|errors| file_errors(&file.path, &errors))
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Settings written with ALTER SYSTEM.
    pub altered: Vec<String>,
    /// Whether the configuration was reloaded.
    pub reloaded: bool,
    /// The comparison afterwards.
    pub after: Vec<Comparison>,
}

/// Writes every drifting setting with ALTER SYSTEM, reloads the configuration, and compares again once
/// the reload has reached this session. Settings that need a restart are left for the operator.
pub async fn apply(conn: &mut PgConnection, file: &DesiredFile) -> anyhow::Result<Applied> {
    let before = check(conn, file).await?;
    let drifting: Vec<&Comparison> = before.iter().filter(|c| c.state == State::Drift).collect();
    if drifting.is_empty() {
        return Ok(Applied {
            altered: Vec::new(),
            reloaded: false,
            after: before,
        });
    }
    sqlx::query("SET standard_conforming_strings = on")
        .execute(&mut *conn)
        .await
        .context("cannot prepare the session for ALTER SYSTEM")?;
    let mut altered = Vec::new();
    for c in &drifting {
        // Already in the files (only a reload is missing): nothing to write.
        let names = [c.name.clone()];
        let live = read_live(conn, &names).await?;
        let in_file = live.get(&c.name).is_some_and(|l| {
            let wanted = canonical(&c.wanted, &l.ty);
            let file = l.file_value.as_deref().map(|v| canonical(v, &l.ty));
            matches!((wanted, file), (Ok(w), Some(Ok(f))) if w.same(&f))
        });
        if in_file {
            continue;
        }
        let sql = alter_system_sql(&c.name, &c.wanted)?;
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("cannot write {} with ALTER SYSTEM", c.name))?;
        // The value is not logged: an archive_command may carry credentials.
        info!(message = "setting written with ALTER SYSTEM", setting = %c.name);
        altered.push(c.name.clone());
    }
    let _: bool = sqlx::query_scalar("SELECT pg_reload_conf()")
        .fetch_one(&mut *conn)
        .await
        .context("cannot reload the configuration (pg_reload_conf)")?;
    info!(message = "configuration reloaded", altered = ?altered);
    // The reload is a signal: poll until this session has read the files again.
    let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
    let after = loop {
        let after = check(conn, file).await?;
        if Outcome::of(&after) != Outcome::Drift || tokio::time::Instant::now() >= deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(Applied {
        altered,
        reloaded: true,
        after,
    })
}

/// `pgconf apply`: what was written, what is in force, what waits for a restart.
pub fn render_applied(applied: &Applied) -> String {
    let mut out = String::new();
    for name in &applied.altered {
        let wanted = applied
            .after
            .iter()
            .find(|c| &c.name == name)
            .map(|c| c.wanted.as_str())
            .unwrap_or_default();
        out.push_str(&format!(
            "wrote {name} = {} (ALTER SYSTEM)\n",
            quote_conf(wanted)
        ));
    }
    if applied.reloaded {
        out.push_str("reloaded the configuration (pg_reload_conf)\n");
    }
    let in_force = names_in(&applied.after, State::InForce);
    if !in_force.is_empty() {
        out.push_str(&format!("in force: {}\n", in_force.join(", ")));
    }
    let restart = names_in(&applied.after, State::RestartNeeded);
    if !restart.is_empty() {
        out.push_str(&format!(
            "RESTART NEEDED: {} take effect only when PostgreSQL restarts; userpipe does not restart it\n",
            restart.join(", ")
        ));
    }
    let drift = names_in(&applied.after, State::Drift);
    if !drift.is_empty() {
        out.push_str(&format!(
            "still not in force after the reload: {}\n",
            drift.join(", ")
        ));
    }
    out
}

/// The archiver's account, from `pg_stat_archiver` and `pg_wal/archive_status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArchiverStats {
    pub archive_mode: String,
    /// `archive_timeout` in seconds (0: off).
    pub archive_timeout_seconds: i64,
    pub archived_count: i64,
    pub failed_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    /// Seconds since the last segment was archived, by the server's clock.
    pub last_archived_age_seconds: Option<f64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// Finished segments waiting for the archive (`.ready` files).
    pub waiting_segments: i64,
    /// Seconds the oldest of them has waited.
    pub oldest_waiting_age_seconds: Option<f64>,
    /// The server's time of the reading.
    pub checked_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ArchiverRow {
    archived_count: i64,
    failed_count: i64,
    last_archived_wal: Option<String>,
    last_archived_time: Option<DateTime<Utc>>,
    last_failed_wal: Option<String>,
    last_failed_time: Option<DateTime<Utc>>,
    archive_mode: String,
    archive_timeout: i64,
    waiting: i64,
    oldest_waiting: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

/// Reads the archiver's statistics (`pg_ls_archive_statusdir` needs a superuser or `pg_monitor`).
pub async fn archiver(conn: &mut PgConnection) -> anyhow::Result<ArchiverStats> {
    let row: ArchiverRow = sqlx::query_as(
        "SELECT a.archived_count, a.failed_count, a.last_archived_wal, a.last_archived_time, \
                a.last_failed_wal, a.last_failed_time, \
                current_setting('archive_mode') AS archive_mode, \
                (SELECT setting::bigint FROM pg_settings WHERE name = 'archive_timeout') AS archive_timeout, \
                r.waiting, r.oldest_waiting, now() AS now \
         FROM pg_stat_archiver a, \
              (SELECT count(*) AS waiting, min(modification) AS oldest_waiting \
               FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') r",
    )
    .fetch_one(&mut *conn)
    .await
    .context("cannot read pg_stat_archiver")?;
    let age = |t: Option<DateTime<Utc>>| {
        t.map(|t| (row.now - t).num_milliseconds().max(0) as f64 / 1000.0)
    };
    Ok(ArchiverStats {
        last_archived_age_seconds: age(row.last_archived_time),
        oldest_waiting_age_seconds: age(row.oldest_waiting),
        archive_mode: row.archive_mode,
        archive_timeout_seconds: row.archive_timeout,
        archived_count: row.archived_count,
        failed_count: row.failed_count,
        last_archived_wal: row.last_archived_wal,
        last_archived_time: row.last_archived_time,
        last_failed_wal: row.last_failed_wal,
        last_failed_time: row.last_failed_time,
        waiting_segments: row.waiting,
        checked_at: row.now,
    })
}

/// What is wrong with archiving, if anything: it is off; its latest attempt failed; or segments have
/// waited longer than twice `archive_timeout` while nothing was archived for as long.
pub fn archiving_problem(stats: &ArchiverStats) -> Option<String> {
    if stats.archive_mode == "off" {
        return Some("archiving is off (archive_mode = off)".into());
    }
    if let Some(failed_at) = stats.last_failed_time
        && stats.last_archived_time.is_none_or(|ok| failed_at >= ok)
    {
        return Some(format!(
            "archiving fails: the last attempt, for {} at {}, failed ({} failures counted); see the postgresql log",
            stats.last_failed_wal.as_deref().unwrap_or("?"),
            failed_at.to_rfc3339(),
            stats.failed_count
        ));
    }
    let limit = 2.0 * stats.archive_timeout_seconds as f64;
    if limit > 0.0
        && let Some(waited) = stats.oldest_waiting_age_seconds
        && waited > limit
        && stats
            .last_archived_age_seconds
            .is_none_or(|age| age > limit)
    {
        let last = match stats.last_archived_age_seconds {
            Some(age) => format!("the last segment was archived {age:.0}s ago"),
            None => "no segment was ever archived".into(),
        };
        return Some(format!(
            "archiving is behind: {} segment(s) wait, the oldest for {waited:.0}s, and {last}, more than twice archive_timeout ({limit:.0}s)",
            stats.waiting_segments
        ));
    }
    None
}

/// The `pgconf-enforce` job: compare, apply when `apply` (and something drifts), and read the archiver.
/// Fails, with the detail, when a setting is not in force (drift, or a restart pending) or archiving
/// fails or lags.
pub async fn enforce(config: &Config, apply_changes: bool) -> anyhow::Result<serde_json::Value> {
    let file = DesiredFile::load(&config.pgconf.file)?;
    let mut conn = connect(config.database.url.expose()).await?;
    let (altered, comparisons) = if apply_changes {
        let applied = apply(&mut conn, &file).await?;
        (applied.altered, applied.after)
    } else {
        (Vec::new(), check(&mut conn, &file).await?)
    };
    let stats = archiver(&mut conn).await?;
    conn.close().await.ok();
    let drift = names_in(&comparisons, State::Drift);
    let restart = names_in(&comparisons, State::RestartNeeded);
    let detail = serde_json::json!({
        "file": file.path,
        "in_force": names_in(&comparisons, State::InForce),
        "restart_needed": restart,
        "drift": drift,
        "applied": altered,
        "archiver": stats,
    });
    let mut problems = Vec::new();
    if !drift.is_empty() {
        let how = if apply_changes {
            "still differ after apply"
        } else {
            "differ (this schedule does not apply)"
        };
        problems.push(format!("{} {how}", drift.join(", ")));
    }
    if !restart.is_empty() {
        problems.push(format!(
            "{} wait for a postgresql restart",
            restart.join(", ")
        ));
    }
    if let Some(problem) = archiving_problem(&stats) {
        problems.push(problem);
    }
    if problems.is_empty() {
        Ok(detail)
    } else {
        Err(JobFailure {
            message: problems.join("; "),
            detail,
        }
        .into())
    }
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
        let settings = parse(include_str!("../pgconf/archiving.conf")).unwrap();
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

    fn ty(vartype: &str, unit: Option<&str>, enumvals: &[&str]) -> SettingType {
        SettingType {
            vartype: vartype.into(),
            unit: unit.map(Into::into),
            enumvals: enumvals.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn number(value: &str, unit: Option<&str>) -> Result<f64, String> {
        match canonical(value, &ty("integer", unit, &[]))? {
            Canonical::Number(n) => Ok(n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_normalised_to_the_settings_unit() {
        assert_eq!(number("60s", Some("s")), Ok(60.0));
        assert_eq!(number("1min", Some("s")), Ok(60.0));
        assert_eq!(number("60", Some("s")), Ok(60.0));
        assert_eq!(number("1h", Some("min")), Ok(60.0));
        assert_eq!(number("1500ms", Some("s")), Ok(2.0), "integers round");
        assert_eq!(number("1GB", Some("8kB")), Ok(131072.0));
        assert_eq!(number("128MB", Some("8kB")), Ok(16384.0));
        assert_eq!(number("1GB", Some("MB")), Ok(1024.0));
        assert_eq!(number("-1", Some("ms")), Ok(-1.0));
        assert_eq!(number("10", None), Ok(10.0));
        assert!(number("10s", None).unwrap_err().contains("takes no unit"));
        assert!(
            number("1GB", Some("s"))
                .unwrap_err()
                .contains("invalid unit")
        );
        assert!(
            number("1 sec", Some("s"))
                .unwrap_err()
                .contains("invalid unit")
        );
        assert!(
            number("soon", Some("s"))
                .unwrap_err()
                .contains("not a number")
        );
        let real = canonical("0.9", &ty("real", None, &[])).unwrap();
        assert!(real.same(&Canonical::Number(0.9)));
    }

    #[test]
    fn booleans_and_enums() {
        let t = |v: &str| canonical(v, &ty("bool", None, &[]));
        for on in ["on", "ON", "true", "t", "yes", "y", "1"] {
            assert_eq!(t(on), Ok(Canonical::Text("on".into())), "{on}");
        }
        for off in ["off", "false", "f", "no", "0", "of"] {
            assert_eq!(t(off), Ok(Canonical::Text("off".into())), "{off}");
        }
        assert!(t("o").is_err() && t("maybe").is_err());
        let mode = ty("enum", None, &["always", "on", "off"]);
        assert_eq!(canonical("On", &mode), Ok(Canonical::Text("on".into())));
        assert_eq!(canonical("true", &mode), Ok(Canonical::Text("on".into())));
        let level = ty("enum", None, &["minimal", "replica", "logical"]);
        assert_eq!(
            canonical("archive", &level),
            Err("`archive` is not one of minimal, replica, logical".into())
        );
    }

    fn live(name: &str, setting: &str, file: Option<&str>, ty: SettingType, context: &str) -> Live {
        Live {
            name: name.into(),
            setting: setting.into(),
            shown: setting.into(),
            ty,
            context: context.into(),
            file_value: file.map(Into::into),
        }
    }

    fn desired(text: &str) -> Vec<Desired> {
        parse(text).unwrap()
    }

    fn states(desired_text: &str, lives: Vec<Live>) -> Vec<(String, State)> {
        let live: HashMap<String, Live> = lives.into_iter().map(|l| (l.name.clone(), l)).collect();
        compare(&desired(desired_text), &live)
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.state))
            .collect()
    }

    #[test]
    fn comparison_tells_in_force_from_restart_needed_from_drift() {
        let mode = || ty("enum", None, &["always", "on", "off"]);
        let got = states(
            "archive_timeout = 60s\narchive_mode = on\nwal_level = replica\narchive_command = 'x %p'\nmax_wal_senders = 10\n",
            vec![
                live(
                    "archive_timeout",
                    "60",
                    Some("1min"),
                    ty("integer", Some("s"), &[]),
                    "sighup",
                ),
                live("archive_mode", "off", Some("on"), mode(), "postmaster"),
                live(
                    "wal_level",
                    "minimal",
                    Some("minimal"),
                    ty("enum", None, &["minimal", "replica", "logical"]),
                    "postmaster",
                ),
                live(
                    "archive_command",
                    "(disabled)",
                    Some("x %p"),
                    ty("string", None, &[]),
                    "sighup",
                ),
                live(
                    "max_wal_senders",
                    "10",
                    None,
                    ty("integer", None, &[]),
                    "postmaster",
                ),
            ],
        );
        assert_eq!(
            got,
            [
                ("archive_timeout".into(), State::InForce),
                ("archive_mode".into(), State::RestartNeeded),
                ("wal_level".into(), State::Drift),
                ("archive_command".into(), State::RestartNeeded),
                ("max_wal_senders".into(), State::InForce),
            ]
        );
        // A reloadable setting written to the files but not reloaded is drift: apply reloads it.
        let got = states(
            "archive_timeout = 60s\n",
            vec![live(
                "archive_timeout",
                "0",
                Some("60s"),
                ty("integer", Some("s"), &[]),
                "sighup",
            )],
        );
        assert_eq!(got, [("archive_timeout".into(), State::Drift)]);
    }

    #[test]
    fn unknown_settings_and_bad_values_name_their_lines() {
        let live: HashMap<String, Live> = [live(
            "archive_timeout",
            "0",
            None,
            ty("integer", Some("s"), &[]),
            "sighup",
        )]
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
        let errors: Vec<String> = compare(
            &desired("archive_timeout = 1GB\nwal_levl = replica\n"),
            &live,
        )
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            errors,
            [
                "line 1: archive_timeout: `1GB` has an invalid unit: valid units are B, kB, MB, GB, TB for memory; us, ms, s, min, h, d for time",
                "line 2: unknown setting wal_levl",
            ]
        );
    }

    #[test]
    fn outcome_and_exit_codes() {
        let c = |state| Comparison {
            name: "x".into(),
            wanted: "1".into(),
            live: "0".into(),
            file: None,
            state,
            line: 1,
        };
        assert_eq!(Outcome::of(&[c(State::InForce)]).exit_code(), 0);
        assert_eq!(
            Outcome::of(&[c(State::InForce), c(State::Drift), c(State::RestartNeeded)]).exit_code(),
            1
        );
        assert_eq!(
            Outcome::of(&[c(State::InForce), c(State::RestartNeeded)]).exit_code(),
            2
        );
    }

    #[test]
    fn alter_system_text_is_quoted_and_names_are_checked() {
        assert_eq!(
            alter_system_sql("archive_command", "cp %p '/a b/%f' \\x").unwrap(),
            "ALTER SYSTEM SET archive_command = 'cp %p ''/a b/%f'' \\x'"
        );
        assert!(alter_system_sql("wal_level; DROP TABLE x", "replica").is_err());
        assert!(alter_system_sql("Wal_Level", "replica").is_err());
        assert!(alter_system_sql("archive_command", "a\nb").is_err());
        assert!(is_setting_name("auto_explain.log_min_duration"));
        assert!(!is_setting_name("a.b.c") && !is_setting_name("") && !is_setting_name("1a"));
    }

    fn stats() -> ArchiverStats {
        let now: DateTime<Utc> = "2026-01-03T02:00:00Z".parse().unwrap();
        ArchiverStats {
            archive_mode: "on".into(),
            archive_timeout_seconds: 60,
            archived_count: 10,
            failed_count: 0,
            last_archived_wal: Some("000000010000000000000009".into()),
            last_archived_time: Some(now - chrono::Duration::seconds(30)),
            last_archived_age_seconds: Some(30.0),
            last_failed_wal: None,
            last_failed_time: None,
            waiting_segments: 0,
            oldest_waiting_age_seconds: None,
            checked_at: now,
        }
    }

    #[test]
    fn archiving_health() {
        assert_eq!(archiving_problem(&stats()), None);
        let off = ArchiverStats {
            archive_mode: "off".into(),
            ..stats()
        };
        assert!(
            archiving_problem(&off)
                .unwrap()
                .starts_with("archiving is off")
        );
        // The last attempt failed: failing.
        let s = stats();
        let failing = ArchiverStats {
            failed_count: 3,
            last_failed_wal: Some("00000001000000000000000A".into()),
            last_failed_time: Some(s.checked_at - chrono::Duration::seconds(5)),
            ..s.clone()
        };
        let problem = archiving_problem(&failing).unwrap();
        assert!(
            problem.starts_with("archiving fails: the last attempt, for 00000001000000000000000A"),
            "{problem}"
        );
        // A failure that a success followed: healthy.
        let recovered = ArchiverStats {
            last_failed_time: Some(s.checked_at - chrono::Duration::seconds(50)),
            ..failing
        };
        assert_eq!(archiving_problem(&recovered), None);
        // Idle for an hour, nothing waiting: healthy.
        let idle = ArchiverStats {
            last_archived_age_seconds: Some(3600.0),
            ..s.clone()
        };
        assert_eq!(archiving_problem(&idle), None);
        // Idle for an hour, a segment finished a moment ago: not yet behind.
        let fresh = ArchiverStats {
            waiting_segments: 1,
            oldest_waiting_age_seconds: Some(2.0),
            ..idle.clone()
        };
        assert_eq!(archiving_problem(&fresh), None);
        // A segment has waited more than twice archive_timeout and nothing was archived since: behind.
        let stuck = ArchiverStats {
            waiting_segments: 2,
            oldest_waiting_age_seconds: Some(120.4),
            last_archived_age_seconds: Some(500.0),
            ..s.clone()
        };
        let problem = archiving_problem(&stuck).unwrap();
        assert!(problem.starts_with("archiving is behind: 2 segment(s) wait, the oldest for 120s, and the last segment was archived 500s ago"), "{problem}");
        // Exactly twice archive_timeout is not yet behind.
        let edge = ArchiverStats {
            oldest_waiting_age_seconds: Some(120.0),
            ..stuck.clone()
        };
        assert_eq!(archiving_problem(&edge), None);
        let never = ArchiverStats {
            last_archived_age_seconds: None,
            last_archived_time: None,
            ..stuck
        };
        assert!(
            archiving_problem(&never)
                .unwrap()
                .contains("no segment was ever archived")
        );
    }

    #[test]
    fn rendering() {
        let c = |name: &str, wanted: &str, live: &str, state| Comparison {
            name: name.into(),
            wanted: wanted.into(),
            live: live.into(),
            file: None,
            state,
            line: 1,
        };
        let comparisons = [
            c("wal_level", "replica", "replica", State::InForce),
            c("archive_mode", "on", "off", State::RestartNeeded),
            c("archive_timeout", "60s", "0", State::Drift),
        ];
        let file = Path::new("pgconf/archiving.conf");
        assert_eq!(
            render_check(file, &comparisons),
            "wal_level        in force: replica\n\
             archive_mode     waits for a restart: off now, on after the restart\n\
             archive_timeout  drift: 0 now, 60s wanted\n\
             drift: archive_timeout differ from pgconf/archiving.conf; `userpipe pgconf apply` writes them\n"
        );
        assert_eq!(
            render_diff(file, &comparisons),
            "--- the running server\n+++ pgconf/archiving.conf\n\
             -archive_mode = 'off'\n+archive_mode = 'on'    # written; waits for a restart\n\
             -archive_timeout = '0'\n+archive_timeout = '60s'\n"
        );
    }
}
