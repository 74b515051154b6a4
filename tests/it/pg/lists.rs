//! `pgconf apply` with the settings PostgreSQL reads as lists of quoted elements: each is written element
//! by element, the server starts again after a restart with every list in force, and a second apply
//! writes nothing.

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use userpipe::cli::exit;

use super::helpers::*;
use crate::support::cluster::TestCluster;

async fn show(conn: &mut PgConnection, setting: &str) -> String {
    sqlx::query_scalar("SELECT current_setting($1)")
        .bind(setting)
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_settings_are_applied_as_lists_and_the_server_starts_with_them() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    let mut conn = cluster.connect().await;
    for (name, folder) in [("fast", "fast"), ("Temp Space", "temp-space")] {
        let location = cluster.make_dir(folder);
        // Names and folders made here: no quote in them.
        let sql = format!(
            "CREATE TABLESPACE \"{name}\" LOCATION '{}'",
            location.display()
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.ok();

    config.pgconf.file = dir.path().join("lists.conf");
    std::fs::write(
        &config.pgconf.file,
        "shared_preload_libraries = 'pg_stat_statements,auto_explain'\n\
         session_preload_libraries = 'auto_explain'\n\
         local_preload_libraries = ''\n\
         search_path = '\"$user\", public, \"Audit Log\"'\n\
         temp_tablespaces = 'fast, \"Temp Space\"'\n",
    )
    .unwrap();

    let apply = userpipe(&config, dir.path(), &["pgconf", "apply"]);
    let said = stdout(&apply);
    assert_eq!(code(&apply), i32::from(exit::RESTART_NEEDED), "{said}");
    assert!(
        said.contains("RESTART NEEDED: shared_preload_libraries"),
        "{said}"
    );
    let auto = std::fs::read_to_string(format!("{}/postgresql.auto.conf", cluster.data())).unwrap();
    for line in [
        "shared_preload_libraries = 'pg_stat_statements, auto_explain'",
        "session_preload_libraries = 'auto_explain'",
        "search_path = '\"$user\", public, \"Audit Log\"'",
        "temp_tablespaces = 'fast, \"Temp Space\"'",
    ] {
        assert!(auto.lines().any(|l| l == line), "{line:?} not in\n{auto}");
    }
    assert!(
        !auto.contains("local_preload_libraries"),
        "an empty list is reset\n{auto}"
    );

    // With `"pg_stat_statements,auto_explain"` (one library of that name) PostgreSQL would not start.
    cluster.restart();
    let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
    assert_eq!(code(&check), 0, "{}", stdout(&check));

    let mut conn = cluster.connect().await;
    assert_eq!(
        show(&mut conn, "shared_preload_libraries").await,
        "pg_stat_statements, auto_explain"
    );
    assert_eq!(
        show(&mut conn, "search_path").await,
        "\"$user\", public, \"Audit Log\""
    );
    assert_eq!(
        show(&mut conn, "temp_tablespaces").await,
        "fast, \"Temp Space\""
    );
    // pg_stat_statements answers only when it was preloaded.
    sqlx::raw_sql("CREATE EXTENSION pg_stat_statements")
        .execute(&mut conn)
        .await
        .unwrap();
    let statements: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_statements")
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_statements is loaded");
    assert!(statements > 0);
    let loaded: bool = sqlx::query_scalar(
        "SELECT current_setting('auto_explain.log_min_duration', true) IS NOT NULL",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(loaded, "auto_explain is loaded into each session");

    // In force: a second apply (as pgconf-enforce runs every 5 minutes) writes nothing.
    let again = userpipe(&config, dir.path(), &["pgconf", "apply"]);
    assert_eq!(code(&again), 0, "{}", stdout(&again));
    assert!(
        !stdout(&again).contains("ALTER SYSTEM"),
        "{}",
        stdout(&again)
    );
}
