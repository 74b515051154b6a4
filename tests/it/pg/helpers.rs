//! What the PostgreSQL operations tests share: a private cluster with a journal database beside it,
//! running userpipe as a process, WAL switches that wait for the archive, and rows in `random_users`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use userpipe::config::{Config, Secret};
use userpipe::scheduler::journal::{self, Journal, RunFilter, RunRecord, Status, Trigger};
use userpipe::scheduler::{Runner, schedule};

use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::{TestDb, TestKafka, config_for, unique, wait_for};

/// What an operations test works with besides its cluster: a journal database, a temporary folder, and a
/// configuration pointing userpipe at the cluster with its backups in `<dir>/backups`.
pub struct Ops {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub backups: PathBuf,
    pub config: Config,
}

pub async fn ops(cluster: &TestCluster) -> Ops {
    let (kafka, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let backups = dir.path().join("backups");
    let config = cluster_config(cluster, &kafka, &db, &backups);
    Ops {
        db,
        dir,
        backups,
        config,
    }
}

/// A configuration whose database is `cluster`, whose backups go to `backups`, and whose journal and
/// guards use the stack database `db`.
pub fn cluster_config(
    cluster: &TestCluster,
    kafka: &TestKafka,
    db: &TestDb,
    backups: &Path,
) -> Config {
    let mut config = config_for(kafka, &db.url());
    config.database.url = Secret::new(cluster.url());
    config.backup.dir = backups.to_owned();
    config.backup.wal_archive = cluster.archive();
    config.backup.pg_bin = PathBuf::from(
        std::env::var("USERPIPE_PG_BIN").expect("USERPIPE_PG_BIN from `scripts/stack env`"),
    );
    config.backup.scratch = cluster.make_dir("scratch");
    config.backup.keep = 4;
    config
}

/// Fires a one-off schedule `text` (named `name`) and returns its finished journal record.
pub async fn fire(config: &Config, db: &TestDb, name: &str, text: &str) -> RunRecord {
    userpipe::db::migrate(&db.pool).await.expect("migrate");
    let schedule = schedule::parse(Path::new(&format!("{name}.toml")), text).expect("a schedule");
    let (journal, _writer) = Journal::start(Some(db.pool.clone()), CancellationToken::new());
    let runner = Runner::new(config.clone(), Some(db.pool.clone()), journal).unwrap();
    let status = runner.fire(&schedule, Trigger::Manual, None).await;
    assert!(status.is_some(), "a manual run always runs");
    let filter = RunFilter {
        schedule: Some(name.into()),
        limit: 10,
        ..Default::default()
    };
    wait_for(
        "the run's journal record",
        Duration::from_secs(10),
        || async {
            journal::list(&db.pool, &filter)
                .await
                .expect("read the journal")
                .into_iter()
                .find(|r| r.status != Status::Running)
        },
    )
    .await
}

/// Runs `userpipe --config <file> ARGS` with `config` (the environment's overrides removed).
pub fn userpipe(config: &Config, dir: &Path, args: &[&str]) -> Output {
    userpipe_as(
        None,
        Path::new(env!("CARGO_BIN_EXE_userpipe")),
        config,
        dir,
        args,
    )
}

/// Runs `binary --config <file> ARGS`, as `user` when given, in `dir`, where the configuration file goes.
pub fn userpipe_as(
    user: Option<&str>,
    binary: &Path,
    config: &Config,
    dir: &Path,
    args: &[&str],
) -> Output {
    let file = dir.join(format!("{}.toml", unique("userpipe")));
    std::fs::write(&file, toml::to_string(config).unwrap()).unwrap();
    let mut command = match user {
        None => Command::new(binary),
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(binary);
            c
        }
    };
    command
        .current_dir(dir)
        .arg("--config")
        .arg(&file)
        .args(args);
    for (name, _) in userpipe::config::ENV_OVERRIDES {
        command.env_remove(name);
    }
    command
        .env("USERPIPE_LOG", "warn")
        .output()
        .expect("run userpipe")
}

pub fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Switches to a new WAL segment and waits until the one switched away from is archived.
pub async fn switch_and_wait_for_the_archive(
    cluster: &TestCluster,
    conn: &mut PgConnection,
) -> String {
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_switch_wal()")
        .execute(&mut *conn)
        .await
        .unwrap();
    let archived = cluster.archive().join(&segment);
    wait_for(
        &format!("{segment} in the archive"),
        Duration::from_secs(30),
        || {
            let there = archived.exists().then_some(());
            async move { there }
        },
    )
    .await;
    segment
}

/// Switches to a new WAL segment and waits until the server counts a failed attempt to archive; returns
/// the segment switched away from.
pub async fn switch_and_wait_for_an_archiving_failure(cluster: &TestCluster) -> String {
    let mut conn = cluster.connect().await;
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_switch_wal()")
        .execute(&mut conn)
        .await
        .unwrap();
    wait_for("an archiving failure", Duration::from_secs(30), || async {
        let mut conn = cluster.connect().await;
        let failed: i64 = sqlx::query_scalar("SELECT failed_count FROM pg_stat_archiver")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (failed > 0).then_some(())
    })
    .await;
    segment
}

/// Inserts `n` users into `random_users`; returns the transaction's start time (its commit is later).
pub async fn insert_users(conn: &mut PgConnection, n: i32) -> DateTime<Utc> {
    let mut tx = conn.begin().await.unwrap();
    let at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO random_users (id, first_name, last_name, gender, address, post_code, email, username, \
         dob, registered_date, phone, picture, majors, hobbies, enriched_at) \
         SELECT gen_random_uuid(), 'Ada', 'Lovelace', 'female', '1 Main St, Town, State, Country', '12345', \
                'ada' || i || '@example.com', 'ada' || i, now() - interval '30 years', now(), '555-0100', \
                'https://example.com/p.jpg', 'Mathematics', 'Reading', now() \
         FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    at
}

pub async fn count_users(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM random_users")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Processes whose command line mentions `needle` (a scratch or partial folder).
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid = e.ok()?.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// The desired-settings file for `cluster`: archiving into its archive with its copy of the script.
pub fn desired_archiving(cluster: &TestCluster, dir: &Path, archive_timeout: &str) -> PathBuf {
    let file = dir.join("archiving.conf");
    std::fs::write(
        &file,
        format!(
            "# test settings\nwal_level = replica\narchive_mode = on\narchive_command = '{} %p {}/%f'\narchive_timeout = {archive_timeout}\nmax_wal_senders = 10\n",
            cluster.archive_script().display(),
            cluster.archive().display()
        ),
    )
    .unwrap();
    file
}

// ---- the restore drill --------------------------------------------------------------------------------

/// A cluster archiving WAL, with the userpipe schema in its `postgres` database.
pub async fn archiving_cluster_with_schema() -> (TestCluster, PgConnection) {
    let cluster = TestCluster::start_with(ClusterOptions {
        archiving: true,
        ..Default::default()
    });
    let pool = userpipe::db::connect(&cluster.url(), 1).await.unwrap();
    userpipe::db::migrate(&pool).await.unwrap();
    pool.close().await;
    let conn = cluster.connect().await;
    (cluster, conn)
}

/// The names in `dir`.
pub fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
