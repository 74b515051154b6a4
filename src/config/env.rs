//! Settings from the environment, by one rule: key `section.key` is variable `USERPIPE_SECTION__KEY`, and
//! `<VARIABLE>_FILE` names a file holding the value (Docker secrets); today's older names still work. Each
//! value is checked against the configuration's own types as it is laid over the file, so a wrong one is
//! named by its variable, and an unknown `USERPIPE_` variable is refused as an unknown key in the file is.
//! Pure, but for reading the `_FILE` files through the function it is given.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The prefix of every variable of the rule.
pub const PREFIX: &str = "USERPIPE_";

/// Between the parts of a key in a variable's name (`USERPIPE_SINK__BATCH_SIZE`).
const SEPARATOR: &str = "__";

/// The suffix of a variable naming a file that holds the value.
const FILE_SUFFIX: &str = "_FILE";

/// Older names, kept working, with the key each sets. The rule's own name wins when both are set.
pub const ENV_OVERRIDES: [(&str, &str); 12] = [
    ("USERPIPE_KAFKA_BROKERS", "kafka.brokers"),
    ("USERPIPE_KAFKA_COMPRESSION", "kafka.compression"),
    ("DATABASE_URL", "database.url"),
    ("USERPIPE_SOURCE", "fetch.source"),
    ("USERPIPE_GROUP_PREFIX", "kafka.group_prefix"),
    ("USERPIPE_SCHEDULES", "scheduler.dir"),
    ("USERPIPE_HTTP_ADDR", "http.listen"),
    ("USERPIPE_BACKUP_DIR", "backup.dir"),
    ("USERPIPE_WAL_ARCHIVE", "backup.wal_archive"),
    ("USERPIPE_PG_BIN", "backup.pg_bin"),
    ("USERPIPE_PGCONF", "pgconf.file"),
    ("USERPIPE_NOTIFY_URL", "notify.url"),
];

/// `USERPIPE_` variables that are not keys of the configuration: the process reads them itself.
pub const PROCESS_VARIABLES: [&str; 3] = ["USERPIPE_CONFIG", "USERPIPE_LOG", "USERPIPE_LOG_FORMAT"];

/// Prefixes of `USERPIPE_` variables that belong to others and are left alone: the local stack's
/// (`scripts/stack`).
const FOREIGN_PREFIXES: [&str; 1] = ["USERPIPE_STACK_"];

/// Keys for which an empty variable is a value; for every other key an empty variable counts as unset.
const EMPTY_IS_A_VALUE: [&str; 1] = ["http.listen"];

/// The variable of `key` by the rule: `sink.batch_size` -> `USERPIPE_SINK__BATCH_SIZE`.
pub fn variable_of(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('.', SEPARATOR).to_uppercase())
}

/// Whether environment variable `name` may set a key, and so is read with the configuration: one of the
/// rule's (`USERPIPE_...`, the process's own among them, which [`apply`] passes over), an older name, or an
/// older name's `_FILE` form.
pub fn is_setting_variable(name: &str) -> bool {
    let older = |n: &str| ENV_OVERRIDES.iter().any(|(older, _)| *older == n);
    name.starts_with(PREFIX) || older(name) || name.strip_suffix(FILE_SUFFIX).is_some_and(older)
}

/// The older name of `key`, if it has one.
pub fn older_name_of(key: &str) -> Option<&'static str> {
    ENV_OVERRIDES
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(name, _)| *name)
}

/// Where a value of the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// The configuration file, at this line.
    File { path: PathBuf, line: usize },
    /// An environment variable.
    Env { variable: String },
    /// The file an environment variable `..._FILE` names.
    EnvFile { variable: String, path: PathBuf },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Origin::Env { variable } => write!(f, "environment {variable}"),
            Origin::EnvFile { variable, path } => {
                write!(f, "environment {variable} ({})", path.display())
            }
        }
    }
}

/// Where each key's value came from, by dotted key; a key not in it has its default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// Where `key`'s value came from.
    pub fn of(&self, key: &str) -> &Origin {
        self.0.get(key).unwrap_or(&Origin::Default)
    }

    pub fn set(&mut self, key: &str, origin: Origin) {
        self.0.insert(key.to_owned(), origin);
    }

    /// The keys given in `file` (text read from `path`), each with its line.
    pub fn of_file(path: &Path, text: &str) -> Self {
        let mut origins = Self::default();
        if let Ok(table) = toml::de::DeTable::parse(text) {
            origins.add_file_keys(path, text, "", table.get_ref());
        }
        origins
    }

    fn add_file_keys(&mut self, path: &Path, text: &str, prefix: &str, table: &toml::de::DeTable) {
        for (key, value) in table {
            let dotted = format!("{prefix}{}", key.get_ref());
            match value.get_ref() {
                toml::de::DeValue::Table(inner) => {
                    self.add_file_keys(path, text, &format!("{dotted}."), inner)
                }
                _ => {
                    let at = key.span().start.min(text.len());
                    let line = text[..at].matches('\n').count() + 1;
                    let origin = Origin::File {
                        path: path.to_owned(),
                        line,
                    };
                    self.set(&dotted, origin);
                }
            }
        }
    }
}

/// What was wrong with the environment: one line per variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid environment:\n  {}", .problems.join("\n  "))]
pub struct EnvError {
    pub problems: Vec<String>,
}

/// One variable to lay over the configuration.
#[derive(Debug)]
struct Setting {
    variable: String,
    key: String,
    value: String,
    origin: Origin,
}

impl Setting {
    /// Whether it comes by an older name (those are laid first, so the rule's own name wins).
    fn by_older_name(&self) -> bool {
        let name = self
            .variable
            .strip_suffix(FILE_SUFFIX)
            .unwrap_or(&self.variable);
        ENV_OVERRIDES.iter().any(|(older, _)| *older == name)
    }
}

/// Lays the environment `vars` over `table` (the file's keys), checking after each variable that the
/// whole still reads as a `T`; `defaults` is `T::default()` as a table. `read` reads the files that
/// `_FILE` variables name. Records in `origins` where each value came from. Every problem is reported,
/// not only the first.
pub fn apply<T: DeserializeOwned>(
    table: &mut Table,
    defaults: &Table,
    vars: &[(String, String)],
    read: impl Fn(&Path) -> std::io::Result<String>,
    origins: &mut Origins,
) -> Result<(), EnvError> {
    let mut problems = Vec::new();
    let mut settings = Vec::new();
    for (variable, value) in vars {
        match setting(variable, value, vars, defaults, &read) {
            Ok(Some(setting)) => settings.push(setting),
            Ok(None) => {}
            Err(problem) => problems.push(problem),
        }
    }
    settings
        .sort_by(|a, b| (!a.by_older_name(), &a.variable).cmp(&(!b.by_older_name(), &b.variable)));
    for setting in settings {
        match lay::<T>(table, &setting) {
            Ok(()) => origins.set(&setting.key, setting.origin),
            Err(problem) => problems.push(format!("{}: {problem}", setting.variable)),
        }
    }
    problems.sort();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EnvError { problems })
    }
}

/// What `variable` sets: `None` for a variable that is not a setting (another program's, the process's
/// own) and for an empty one.
fn setting(
    variable: &str,
    value: &str,
    vars: &[(String, String)],
    defaults: &Table,
    read: &impl Fn(&Path) -> std::io::Result<String>,
) -> Result<Option<Setting>, String> {
    if PROCESS_VARIABLES.contains(&variable)
        || FOREIGN_PREFIXES.iter().any(|p| variable.starts_with(p))
    {
        return Ok(None);
    }
    let file_form = variable
        .strip_suffix(FILE_SUFFIX)
        .and_then(|name| key_of(name).map(|key| (name, key)));
    // `..._FILE` names a file, unless the whole name is a key's own (one ending in `_file`).
    let direct =
        key_of(variable).filter(|key| file_form.is_none() || lookup(defaults, key).is_some());
    match (direct, file_form) {
        (Some(key), _) => {
            if value.is_empty() && !EMPTY_IS_A_VALUE.contains(&key.as_str()) {
                return Ok(None);
            }
            let origin = Origin::Env {
                variable: variable.to_owned(),
            };
            Ok(Some(Setting {
                variable: variable.to_owned(),
                key,
                value: value.to_owned(),
                origin,
            }))
        }
        (None, Some((name, key))) => {
            if vars.iter().any(|(n, v)| n == name && !v.is_empty()) {
                return Err(format!(
                    "{name} and {variable} are both set: set one of them"
                ));
            }
            if value.is_empty() {
                return Ok(None);
            }
            let path = PathBuf::from(value);
            let content = read(&path)
                .map_err(|e| format!("{variable}: cannot read {}: {e}", path.display()))?;
            let origin = Origin::EnvFile {
                variable: variable.to_owned(),
                path,
            };
            Ok(Some(Setting {
                variable: variable.to_owned(),
                key,
                value: content.trim_end_matches(['\n', '\r']).to_owned(),
                origin,
            }))
        }
        (None, None) if !variable.starts_with(PREFIX) => Ok(None),
        (None, None) => Err(format!(
            "{variable}: unknown variable: a key `section.key` is set by {PREFIX}SECTION__KEY (e.g. \
             {} for sink.batch_size), or from a file by the same name ending in {FILE_SUFFIX}",
            variable_of("sink.batch_size")
        )),
    }
}

/// The key a variable names, by its older name or by the rule; `None` when it names none.
fn key_of(variable: &str) -> Option<String> {
    if let Some((_, key)) = ENV_OVERRIDES.iter().find(|(name, _)| *name == variable) {
        return Some((*key).to_owned());
    }
    let rest = variable.strip_prefix(PREFIX)?;
    let parts: Vec<String> = rest.split(SEPARATOR).map(str::to_lowercase).collect();
    let well_formed = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('_')
                && !p.ends_with('_')
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    well_formed.then(|| parts.join("."))
}

/// The value at dotted `key` in `table`.
fn lookup<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// Sets `setting` in `table` if the whole then reads as a `T`: as text, or else as the TOML value the
/// text spells (`4000`, `true`, `["a", "b"]`). Otherwise `table` is left as it was and the error says why.
fn lay<T: DeserializeOwned>(table: &mut Table, setting: &Setting) -> Result<(), String> {
    let parts: Vec<&str> = setting.key.split('.').collect();
    let (last, sections) = parts.split_last().expect("a key has two parts or more");
    let mut path = String::new();
    let mut candidates = vec![Value::String(setting.value.clone())];
    if let Ok(spelled) = setting.value.parse::<Value>()
        && !spelled.is_str()
    {
        candidates.push(spelled);
    }
    let mut error = String::new();
    for candidate in candidates {
        let mut trial = table.clone();
        let mut at = &mut trial;
        for section in sections {
            path = if path.is_empty() {
                section.to_string()
            } else {
                format!("{path}.{section}")
            };
            let entry = at
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            at = match entry {
                Value::Table(inner) => inner,
                _ => return Err(format!("{path} is a value, not a section")),
            };
        }
        at.insert(last.to_string(), candidate);
        match trial.clone().try_into::<T>() {
            Ok(_) => {
                *table = trial;
                return Ok(());
            }
            Err(e) => error = e.to_string().trim().replace('\n', " "),
        }
    }
    if matches!(setting.origin, Origin::EnvFile { .. }) {
        // The content of a file may be a secret: say what is wrong without it.
        return Err(format!(
            "the file's content is not a valid {} (not shown)",
            setting.key
        ));
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Tls {
        cert_file: String,
        key: String,
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        tls: Tls,
    }

    #[test]
    fn a_variable_is_its_key_in_capitals_with_two_underscores_between_the_parts() {
        assert_eq!(variable_of("sink.batch_size"), "USERPIPE_SINK__BATCH_SIZE");
        assert_eq!(
            key_of("USERPIPE_SINK__BATCH_SIZE").as_deref(),
            Some("sink.batch_size")
        );
        assert_eq!(key_of("DATABASE_URL").as_deref(), Some("database.url"));
        assert_eq!(key_of("USERPIPE_HTTP_ADDR").as_deref(), Some("http.listen"));
        for not_a_key in [
            "USERPIPE_SINK",
            "USERPIPE___X",
            "USERPIPE_SINK__",
            "USERPIPE_A__B-C",
            "PATH",
        ] {
            assert_eq!(key_of(not_a_key), None, "{not_a_key}");
        }
        assert_eq!(older_name_of("backup.dir"), Some("USERPIPE_BACKUP_DIR"));
        assert_eq!(older_name_of("sink.linger"), None);
    }

    #[test]
    fn file_is_a_file_s_name_unless_the_key_itself_ends_in_file() {
        let defaults = Table::try_from(Conf::default()).unwrap();
        let vars = [
            (
                "USERPIPE_TLS__CERT_FILE".to_owned(),
                "/etc/tls/cert.pem".to_owned(),
            ),
            (
                "USERPIPE_TLS__KEY_FILE".to_owned(),
                "/run/secrets/key".to_owned(),
            ),
        ];
        let read = |path: &Path| {
            assert_eq!(
                path,
                Path::new("/run/secrets/key"),
                "only the secret is read"
            );
            Ok("s3cret\r\n".to_owned())
        };
        let (mut table, mut origins) = (Table::new(), Origins::default());
        apply::<Conf>(&mut table, &defaults, &vars, read, &mut origins).unwrap();
        let conf: Conf = table.try_into().unwrap();
        assert_eq!(conf.tls.cert_file, "/etc/tls/cert.pem");
        assert_eq!(conf.tls.key, "s3cret", "trailing line breaks are dropped");
        assert_eq!(
            origins.of("tls.key"),
            &Origin::EnvFile {
                variable: "USERPIPE_TLS__KEY_FILE".into(),
                path: "/run/secrets/key".into()
            }
        );
    }

    #[test]
    fn a_value_is_text_unless_only_its_toml_spelling_fits() {
        #[derive(Debug, Default, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, default)]
        struct Kinds {
            text: String,
            number: u32,
            flag: bool,
            list: Vec<String>,
        }
        #[derive(Debug, Default, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, default)]
        struct Conf {
            k: Kinds,
        }
        let vars: Vec<(String, String)> = [
            ("USERPIPE_K__TEXT", "123"),
            ("USERPIPE_K__NUMBER", "123"),
            ("USERPIPE_K__FLAG", "true"),
            ("USERPIPE_K__LIST", r#"["a", "b"]"#),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let defaults = Table::try_from(Conf::default()).unwrap();
        let mut table = Table::new();
        apply::<Conf>(
            &mut table,
            &defaults,
            &vars,
            |_| unreachable!(),
            &mut Origins::default(),
        )
        .unwrap();
        let conf: Conf = table.try_into().unwrap();
        assert_eq!(conf.k.text, "123");
        assert_eq!(conf.k.number, 123);
        assert!(conf.k.flag);
        assert_eq!(conf.k.list, ["a", "b"]);
    }
}
