//! The running server's settings (`pg_settings`, `pg_file_settings`), and writing the desired ones with
//! ALTER SYSTEM and `pg_reload_conf()`. Never restarts PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection};
use tracing::info;

use super::compare::{Comparison, Live, Outcome, State, compare};
use super::file::{DesiredFile, file_errors, is_setting_name};
use super::value::{ListKind, SettingType, canonical, list_elements};

/// How long `apply` waits for the reloaded configuration to reach its own session.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// The ALTER SYSTEM statement that writes `value` for `name`.
///
/// ALTER SYSTEM is a utility statement: it takes no bound parameters, and `set_config()` changes only
/// the session, not the server's configuration. So the statement is text, made safe here: the name must
/// be a plain lowercase identifier (and the caller takes it from `pg_settings`); the value is a string
/// literal with its quotes doubled, sent on a session with `standard_conforming_strings = on` so a
/// backslash stays a backslash, and control characters (which could end the literal's line) are refused.
/// A string literal is accepted for settings of every type. A list of quoted elements (`QUOTED_LISTS`)
/// is written as one literal per element, which PostgreSQL quotes each as needed; an empty one is reset
/// (ALTER SYSTEM cannot write an empty list: it would write `""`, an element with no name).
pub fn alter_system_sql(name: &str, value: &str) -> anyhow::Result<String> {
    if !is_setting_name(name) {
        bail!("`{name}` is not a valid setting name");
    }
    if value.chars().any(char::is_control) {
        bail!("the value of {name} has a control character");
    }
    let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let Some(kind) = ListKind::of(name) else {
        return Ok(format!("ALTER SYSTEM SET {name} = {}", literal(value)));
    };
    let elements =
        list_elements(value, kind).map_err(|error| anyhow::anyhow!("{name}: {error}"))?;
    if elements.is_empty() {
        return Ok(format!("ALTER SYSTEM RESET {name}"));
    }
    let literals: Vec<String> = elements.iter().map(|e| literal(e)).collect();
    Ok(format!("ALTER SYSTEM SET {name} = {}", literals.join(", ")))
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
/// `pg_file_settings` (a superuser's, or granted as deploy/postgres/initdb.d/20-roles.sh does).
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
    .context("cannot read pg_file_settings: pgconf needs a superuser, or a role granted SELECT on it (README.md, docker compose)")?;
    let files: HashMap<String, Option<String>> = files.into_iter().collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let live = Live {
                file_value: files.get(&r.name).cloned().flatten(),
                setting: r.setting.unwrap_or_default(),
                shown: r.shown.unwrap_or_default(),
                ty: SettingType {
                    list: ListKind::of(&r.name),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alter_system_text_is_quoted_and_names_are_checked() {
        assert_eq!(
            alter_system_sql("archive_command", "cp %p '/a b/%f' \\x").unwrap(),
            "ALTER SYSTEM SET archive_command = 'cp %p ''/a b/%f'' \\x'"
        );
        assert!(alter_system_sql("wal_level; DROP TABLE x", "replica").is_err());
        assert!(alter_system_sql("Wal_Level", "replica").is_err());
        assert!(alter_system_sql("archive_command", "a\nb").is_err());
        assert_eq!(
            alter_system_sql(
                "shared_preload_libraries",
                "pg_stat_statements,auto_explain"
            )
            .unwrap(),
            "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', 'auto_explain'"
        );
        assert_eq!(
            alter_system_sql("search_path", "\"$user\", Public, \"it's\"").unwrap(),
            "ALTER SYSTEM SET search_path = '$user', 'public', 'it''s'"
        );
        assert_eq!(
            alter_system_sql("local_preload_libraries", " ").unwrap(),
            "ALTER SYSTEM RESET local_preload_libraries"
        );
        let error = alter_system_sql("temp_tablespaces", "a,,b")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "temp_tablespaces: `a,,b` is not a valid list: an element is empty"
        );
        assert!(is_setting_name("auto_explain.log_min_duration"));
        assert!(!is_setting_name("a.b.c") && !is_setting_name("") && !is_setting_name("1a"));
    }
}
