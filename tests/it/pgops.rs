//! PostgreSQL operations on private throwaway clusters: the archive script, `pgconf` check and apply,
//! the pgconf-enforce job, verified base backups and retention, failed backups, and the restore drill.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use userpipe::backup;
use userpipe::config::{Config, Secret};
use userpipe::journal::{self, Journal, RunFilter, RunRecord, Trigger};
use userpipe::scheduler::{Runner, schedule};

use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::{TestDb, TestKafka, config_for, unique, wait_for};

// ---- the archive script -------------------------------------------------------------------------------

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pgconf/archive-wal.sh")
}

/// `sh archive-wal.sh SOURCE TARGET`, as the server runs it (POSIX sh).
fn archive(source: &Path, target: &Path) -> Output {
    Command::new("sh")
        .arg(script())
        .arg(source)
        .arg(target)
        .output()
        .expect("run archive-wal.sh")
}

/// The names in `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn segment_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn archive_script_accepts_an_identical_target_and_refuses_a_different_one() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    std::fs::create_dir(&archive_dir).unwrap();
    let source = dir.path().join("000000010000000000000001");
    let target = archive_dir.join("000000010000000000000001");
    let first = segment_bytes(1, 256 * 1024);
    std::fs::write(&source, &first).unwrap();

    let out = archive(&source, &target);
    assert!(out.status.success(), "first archive: {out:?}");
    assert_eq!(std::fs::read(&target).unwrap(), first);
    assert_eq!(
        names(&archive_dir),
        BTreeSet::from(["000000010000000000000001".to_owned()]),
        "no temporary file is left"
    );

    // Archived again after a crash: the same bytes are already there, which is success.
    let out = archive(&source, &target);
    assert!(out.status.success(), "identical re-archive: {out:?}");
    assert_eq!(std::fs::read(&target).unwrap(), first);

    // Different bytes under the same name: refused, and the archived file is untouched.
    std::fs::write(&source, segment_bytes(2, 256 * 1024)).unwrap();
    let out = archive(&source, &target);
    assert!(!out.status.success(), "a different target must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists with different contents"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), first);
    assert_eq!(names(&archive_dir).len(), 1);
}

#[test]
fn archive_script_fails_when_the_target_folder_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("000000010000000000000001");
    std::fs::write(&source, segment_bytes(1, 1024)).unwrap();
    let missing = dir.path().join("not-mounted");
    let out = archive(&source, &missing.join("000000010000000000000001"));
    assert!(!out.status.success(), "a missing folder must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!missing.exists(), "the script never creates the folder");
}

#[tokio::test]
async fn archive_script_never_shows_a_partial_file_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    std::fs::create_dir(&archive_dir).unwrap();
    // The source is a FIFO: the copy can only go as far as the test has written, so the test can look
    // at the folder while the copy is half done.
    let fifo = dir.path().join("000000010000000000000002");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let target = archive_dir.join("000000010000000000000002");
    let data = segment_bytes(3, 4 * 1024 * 1024);
    let half = data.len() / 2;

    // Watch the final name for the whole run: whenever it exists it must hold everything.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, target, full) = (watching.clone(), target.clone(), data.len() as u64);
        std::thread::spawn(move || {
            let mut partial_sightings = 0;
            while watching.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::metadata(&target)
                    && meta.len() != full
                {
                    partial_sightings += 1;
                }
            }
            partial_sightings
        })
    };

    let mut child = Command::new("sh")
        .arg(script())
        .arg(&fifo)
        .arg(&target)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the fifo (the script's cp opens the other end)");
    writer.write_all(&data[..half]).unwrap();
    writer.flush().unwrap();

    let temporary = wait_for(
        "the first half in a temporary file",
        Duration::from_secs(10),
        || {
            let found = names(&archive_dir).into_iter().find(|n| {
                n.starts_with(".000000010000000000000002.tmp")
                    && std::fs::metadata(archive_dir.join(n)).is_ok_and(|m| m.len() == half as u64)
            });
            async move { found }
        },
    )
    .await;
    assert!(
        !target.exists(),
        "half copied ({temporary}), the final name must not exist yet"
    );

    writer.write_all(&data[half..]).unwrap();
    drop(writer);
    let status = child.wait().unwrap();
    watching.store(false, Ordering::Relaxed);
    assert!(status.success(), "archive-wal.sh failed: {status}");
    assert_eq!(
        watcher.join().unwrap(),
        0,
        "a partial file was seen under the final name"
    );
    assert_eq!(std::fs::read(&target).unwrap(), data);
    assert_eq!(
        names(&archive_dir),
        BTreeSet::from(["000000010000000000000002".to_owned()]),
        "the temporary file is gone"
    );
}

// ---- helpers for cluster tests ------------------------------------------------------------------------

/// A configuration whose database is `cluster`, whose backups go to `backups`, and whose journal and
/// guards use the stack database `db`.
/// What an operations test works with besides its cluster: a journal database, a temporary folder, and a
/// configuration pointing userpipe at the cluster with its backups in `<dir>/backups`.
struct Ops {
    db: TestDb,
    dir: tempfile::TempDir,
    backups: PathBuf,
    config: Config,
}

async fn ops(cluster: &TestCluster) -> Ops {
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

fn cluster_config(cluster: &TestCluster, kafka: &TestKafka, db: &TestDb, backups: &Path) -> Config {
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
async fn fire(config: &Config, db: &TestDb, name: &str, text: &str) -> RunRecord {
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
                .find(|r| r.status != "running")
        },
    )
    .await
}

/// Runs `userpipe --config <file> ARGS` with `config` (the environment's overrides removed).
fn userpipe(config: &Config, dir: &Path, args: &[&str]) -> Output {
    userpipe_as(
        None,
        Path::new(env!("CARGO_BIN_EXE_userpipe")),
        config,
        dir,
        args,
    )
}

/// Runs `binary --config <file> ARGS`, as `user` when given, in `dir`, where the configuration file goes.
fn userpipe_as(
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

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Switches to a new WAL segment and waits until the one switched away from is archived.
async fn switch_and_wait_for_the_archive(cluster: &TestCluster, conn: &mut PgConnection) -> String {
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

/// Inserts `n` users into `random_users`; returns the transaction's start time (its commit is later).
async fn insert_users(conn: &mut PgConnection, n: i32) -> DateTime<Utc> {
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

async fn count_users(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM random_users")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Processes whose command line mentions `needle` (a scratch or partial folder).
fn processes_mentioning(needle: &Path) -> Vec<String> {
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
fn desired_archiving(cluster: &TestCluster, dir: &Path, archive_timeout: &str) -> PathBuf {
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

// ---- pgconf -------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgconf_apply_turns_archiving_on_and_check_exits_0_then_1_after_a_manual_drift() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "60s");

    let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
    assert_eq!(
        code(&check),
        1,
        "archiving is off: drift\n{}",
        stdout(&check)
    );
    assert!(
        stdout(&check).contains("archive_mode     drift: off now, on wanted"),
        "{}",
        stdout(&check)
    );

    let apply = userpipe(&config, dir.path(), &["pgconf", "apply"]);
    let said = stdout(&apply);
    assert_eq!(code(&apply), 2, "a restart is needed\n{said}");
    assert!(
        said.contains("wrote archive_mode = 'on' (ALTER SYSTEM)"),
        "{said}"
    );
    assert!(said.contains("reloaded the configuration"), "{said}");
    assert!(
        said.contains("in force: wal_level, archive_timeout"),
        "{said}"
    );
    assert!(
        said.contains("RESTART NEEDED: archive_mode, archive_command, max_wal_senders take effect only when PostgreSQL restarts"),
        "{said}"
    );
    let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
    assert_eq!(code(&check), 2, "{}", stdout(&check));

    cluster.restart();
    let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
    assert_eq!(code(&check), 0, "{}", stdout(&check));

    // WAL now reaches the archive, without failures.
    let mut conn = cluster.connect().await;
    sqlx::query("CREATE TABLE filler AS SELECT generate_series(1, 10000) AS n")
        .execute(&mut conn)
        .await
        .unwrap();
    let segment = switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let (archived, failed, last): (i64, i64, Option<String>) = wait_for(
        "pg_stat_archiver to count the segment",
        Duration::from_secs(10),
        || async {
            let mut conn = cluster.connect().await;
            let row: (i64, i64, Option<String>) = sqlx::query_as(
                "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            (row.2.as_deref() >= Some(segment.as_str())).then_some(row)
        },
    )
    .await;
    assert!(archived >= 1 && last.is_some());
    assert_eq!(failed, 0, "no archiving failure");
    assert_eq!(
        std::fs::read(cluster.archive().join(&segment))
            .unwrap()
            .len(),
        16 * 1024 * 1024,
        "a whole segment"
    );

    // Someone changes a setting by hand: check sees the drift.
    sqlx::query("ALTER SYSTEM SET archive_timeout = '120s'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await
        .unwrap();
    let check = wait_for("check to see the drift", Duration::from_secs(10), || {
        let check = userpipe(&config, dir.path(), &["pgconf", "check"]);
        async move { (code(&check) == 1).then_some(check) }
    })
    .await;
    assert!(
        stdout(&check).contains("archive_timeout  drift: 2min now, 60s wanted"),
        "{}",
        stdout(&check)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgconf_enforce_records_the_archiver_and_fails_when_archiving_fails() {
    let cluster = TestCluster::start_with(ClusterOptions {
        archiving: true,
        ..Default::default()
    });
    let Ops {
        db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    // max_wal_senders differs from the cluster's 4: the run writes it and then waits for a restart.
    config.pgconf.file = desired_archiving(&cluster, dir.path(), "60s");
    let mut conn = cluster.connect().await;
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let text = "job = \"pgconf-enforce\"\ncron = \"@yearly\"\n";

    let run = fire(&config, &db, "enforce_restart", text).await;
    assert_eq!(run.status, "failed");
    let error = run.error.clone().unwrap();
    assert_eq!(error, "max_wal_senders wait for a postgresql restart");
    let detail = run.detail.expect("a failed enforce run keeps its detail");
    assert_eq!(
        detail["applied"],
        serde_json::json!(["archive_timeout", "max_wal_senders"])
    );
    assert_eq!(
        detail["restart_needed"],
        serde_json::json!(["max_wal_senders"])
    );

    cluster.restart();
    let run = fire(&config, &db, "enforce_ok", text).await;
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    let detail = run.detail.unwrap();
    assert_eq!(detail["applied"], serde_json::json!([]));
    let archiver = &detail["archiver"];
    assert!(
        archiver["archived_count"].as_i64().unwrap() >= 1,
        "{archiver}"
    );
    assert_eq!(archiver["failed_count"], 0);
    assert!(
        archiver["last_archived_age_seconds"].as_f64().is_some(),
        "{archiver}"
    );
    assert_eq!(archiver["archive_timeout_seconds"], 60);

    // The archive volume goes missing: the script fails, the server counts failures, the run fails.
    std::fs::rename(cluster.archive(), cluster.root().join("archive-gone")).unwrap();
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
    let run = fire(&config, &db, "enforce_failing", text).await;
    assert_eq!(run.status, "failed");
    let error = run.error.unwrap();
    assert!(
        error.starts_with(&format!("archiving fails: the last attempt, for {segment}")),
        "{error}"
    );
    let archiver = &run.detail.unwrap()["archiver"];
    assert_eq!(archiver["last_failed_wal"], segment.as_str());
    assert!(archiver["failed_count"].as_i64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgconf_enforce_fails_when_wal_waits_longer_than_twice_archive_timeout() {
    // An archive command that hangs (a stalled network mount) while the hold file exists: nothing fails,
    // nothing is archived, segments wait.
    let root = tempfile::tempdir().unwrap();
    let hold = root.path().join("hold");
    std::fs::write(&hold, "").unwrap();
    let command = format!(
        "while [ -e {} ]; do sleep 0.1; done; exit 1",
        hold.display()
    );
    let cluster = TestCluster::start_with(ClusterOptions {
        archiving: true,
        archive_command: Some(command.clone()),
        ..Default::default()
    });
    let Ops {
        db,
        dir,
        mut config,
        ..
    } = ops(&cluster).await;
    config.pgconf.file = dir.path().join("archiving.conf");
    std::fs::write(
        &config.pgconf.file,
        format!("archive_mode = on\narchive_command = '{command}'\narchive_timeout = 1s\n"),
    )
    .unwrap();
    let mut conn = cluster.connect().await;
    sqlx::query("SELECT pg_switch_wal()")
        .execute(&mut conn)
        .await
        .unwrap();
    wait_for(
        "a segment waiting more than 2s",
        Duration::from_secs(30),
        || async {
            let mut conn = cluster.connect().await;
            let waited: Option<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM now() - min(modification))::float8 \
                 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            waited.filter(|w| *w > 2.5).map(|_| ())
        },
    )
    .await;

    let run = fire(
        &config,
        &db,
        "enforce_behind",
        "job = \"pgconf-enforce\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, "failed", "{:?}", run.detail);
    let error = run.error.unwrap();
    assert!(
        error.starts_with("archiving is behind: 1 segment(s) wait, the oldest for"),
        "{error}"
    );
    assert!(
        error.ends_with("no segment was ever archived, more than twice archive_timeout (2s)"),
        "{error}"
    );
    let archiver = &run.detail.unwrap()["archiver"];
    assert_eq!(archiver["waiting_segments"], 1);
    assert_eq!(archiver["failed_count"], 0);
    assert_eq!(archiver["archive_timeout_seconds"], 1);
    std::fs::remove_file(&hold).unwrap();
}

// ---- base backups -------------------------------------------------------------------------------------

/// A file of the backup with at least 8 kB, from its manifest.
fn a_data_file(folder: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("backup_manifest")).unwrap()).unwrap();
    manifest["Files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["Size"].as_u64().unwrap_or(0) >= 8192)
        .filter_map(|f| f["Path"].as_str())
        .find(|p| p.starts_with("base/"))
        .expect("a data file in the manifest")
        .to_owned()
}

/// Flips one byte in the middle of `file`.
fn damage(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

fn backup_ids(dir: &Path) -> Vec<String> {
    backup::list(dir)
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_verified_and_damage_to_one_file_is_named() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir,
        backups,
        config,
        ..
    } = ops(&cluster).await;

    let report = backup::run(&config, false).await.expect("a backup");
    assert!(report.verified && report.bytes > 1024 * 1024, "{report:?}");
    assert_eq!(
        names(&backups),
        BTreeSet::from([report.id.clone()]),
        "no partial folder left"
    );
    let listed = backup::list(&backups).unwrap();
    let metadata = listed[0].metadata.clone().expect("backup.json");
    assert_eq!(metadata.id, report.id);
    assert!(metadata.verification.ok && metadata.verification.problems.is_empty());
    let major = (metadata.server_version_num / 10_000).to_string();
    assert!(metadata.server_version.starts_with(&major), "{metadata:?}");
    assert!(metadata.start_lsn.contains('/') && metadata.end_lsn.contains('/'));
    assert!(metadata.finished_at >= metadata.started_at);
    assert_eq!(metadata.bytes, report.bytes);
    assert!(metadata.start_wal.is_some());

    let verify = userpipe(&config, dir.path(), &["backup", "verify", &report.id]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));

    let file = a_data_file(&report.path);
    damage(&report.path.join(&file));
    let verify = userpipe(&config, dir.path(), &["backup", "verify", &report.id]);
    assert_eq!(code(&verify), 1, "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains(&format!("checksum mismatch for file \"{file}\"")),
        "{}",
        stdout(&verify)
    );
    let metadata = backup::read_metadata(&report.path).unwrap();
    assert!(!metadata.verification.ok, "the failure is recorded");
    assert_eq!(
        metadata.verification.problems,
        [format!("checksum mismatch for file \"{file}\"")]
    );
    let list = userpipe(&config, dir.path(), &["backup", "list"]);
    assert!(
        stdout(&list).contains("FAILED: checksum mismatch"),
        "{}",
        stdout(&list)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_verified_backups_and_never_the_last_verified_one() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir: _dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    config.backup.keep = 2;

    let a = backup::run(&config, false).await.unwrap();
    let b = backup::run(&config, false).await.unwrap();
    assert!(a.pruned.is_empty() && b.pruned.is_empty());
    let c = backup::run(&config, false).await.unwrap();
    assert_eq!(c.pruned, [a.id], "keep 2: the oldest goes");
    assert_eq!(backup_ids(&backups), [b.id.clone(), c.id.clone()]);

    // The newest stops verifying. With keep 1, b is the only verified backup: it stays, and so does c
    // (newer, kept for a look).
    damage(&c.path.join(a_data_file(&c.path)));
    assert!(!backup::verify(&config, &c.id).await.unwrap().ok);
    assert!(backup::prune(&backups, 1).unwrap().is_empty());
    assert_eq!(backup_ids(&backups), [b.id.clone(), c.id.clone()]);

    // A new verified backup with keep 1: it is the one kept; everything older goes.
    config.backup.keep = 1;
    let d = backup::run(&config, false).await.unwrap();
    assert_eq!(d.pruned, [b.id.clone(), c.id.clone()]);
    assert_eq!(backup_ids(&backups), [d.id.as_str()]);
    assert_eq!(
        names(&backups),
        BTreeSet::from([d.id.clone()]),
        "nothing else is left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_stopped_server_is_a_failed_run_and_leaves_no_partial_folder() {
    let cluster = TestCluster::start();
    let Ops {
        db,
        dir: _dir,
        backups,
        config,
        ..
    } = ops(&cluster).await;
    cluster.stop();
    let run = fire(
        &config,
        &db,
        "backup_down",
        "job = \"base-backup\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, "failed");
    let error = run.error.unwrap();
    assert!(
        error.starts_with("cannot connect to postgresql at"),
        "{error}"
    );
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_a_wrong_password_is_a_failed_run_that_does_not_print_it() {
    let right = format!("right-{}", unique("pw").replace('_', "-"));
    let cluster = TestCluster::start_with(ClusterOptions {
        replication_password: Some(right.clone()),
        ..Default::default()
    });
    let Ops {
        db,
        dir: _dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    let text = "job = \"base-backup\"\ncron = \"@yearly\"\n";

    // Ordinary connections are trusted; replication (pg_basebackup) needs the password.
    let wrong = format!("wrong-{}", unique("pw").replace('_', "-"));
    config.database.url = Secret::new(format!(
        "postgres://postgres:{wrong}@127.0.0.1:{}/postgres",
        cluster.port
    ));
    let run = fire(&config, &db, "backup_wrong", text).await;
    assert_eq!(run.status, "failed");
    let error = run.error.unwrap();
    assert!(error.starts_with("pg_basebackup failed"), "{error}");
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!error.contains(&wrong), "the password is printed: {error}");
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));

    // The right one reaches pg_basebackup (through PGPASSWORD) and the backup is taken.
    config.database.url = Secret::new(format!(
        "postgres://postgres:{right}@127.0.0.1:{}/postgres",
        cluster.port
    ));
    let run = fire(&config, &db, "backup_right", text).await;
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    let detail = run.detail.unwrap();
    assert_eq!(detail["verified"], true);
    assert!(!detail.to_string().contains(&right));
    assert_eq!(backup_ids(&backups), [detail["id"].as_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_into_an_unwritable_folder_fails_and_leaves_no_partial_folder() {
    let cluster = TestCluster::start();
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    // userpipe runs as postgres here (as it runs as a non-root user in its container); the backup folder
    // belongs to root, mode 0755.
    let backups = cluster.root().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let work = cluster.make_dir("work");
    let config = cluster_config(&cluster, &kafka, &db, &backups);
    // The checkout may be out of postgres's reach: then it runs a copy of the binary.
    let mut binary = PathBuf::from(env!("CARGO_BIN_EXE_userpipe"));
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(&binary)
        .status()
        .unwrap()
        .success();
    if !reachable {
        std::fs::copy(&binary, work.join("userpipe")).expect("copy the binary");
        binary = work.join("userpipe");
    }
    let out = userpipe_as(
        Some("postgres"),
        &binary,
        &config,
        &work,
        &["backup", "run"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot create {}", backups.display()))
            && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_cut_off_by_its_timeout_leaves_no_partial_folder_and_no_process() {
    let cluster = TestCluster::start();
    let Ops {
        db: _db,
        dir: _dir,
        backups,
        mut config,
        ..
    } = ops(&cluster).await;
    // At 32 kB/s the backup would take minutes: it is killed part way, its forked WAL streamer too.
    config.backup.max_rate = "32k".into();
    config.backup.timeout = Duration::from_secs(2);
    let error = backup::run(&config, false).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "pg_basebackup did not finish within 2s (backup.timeout)"
    );
    assert!(names(&backups).is_empty(), "{:?}", names(&backups));
    wait_for(
        "no pg_basebackup writing there",
        Duration::from_secs(10),
        || {
            let left = processes_mentioning(&backups);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
}

// ---- the restore drill --------------------------------------------------------------------------------

/// A cluster archiving WAL, with the userpipe schema in its `postgres` database.
async fn archiving_cluster_with_schema() -> (TestCluster, PgConnection) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_restores_every_row_from_the_backup_and_the_archive() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db,
        dir: _dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;

    insert_users(&mut conn, 100).await;
    let report = backup::run(&config, false).await.expect("a backup");
    // Rows the backup does not hold: only the archive has them.
    let last_insert = insert_users(&mut conn, 50).await;
    assert_eq!(count_users(&mut conn).await, 150);
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;

    let run = fire(
        &config,
        &db,
        "drill",
        "job = \"restore-drill\"\ncron = \"@yearly\"\n",
    )
    .await;
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    let detail = run.detail.unwrap();
    assert_eq!(detail["backup_id"], report.id.as_str());
    assert_eq!(
        detail["rows"], 150,
        "every row, the ones after the backup too: {detail}"
    );
    let newest: DateTime<Utc> = detail["newest_commit_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        newest >= last_insert,
        "{newest} is before the last insert {last_insert}"
    );
    assert!(detail["recovery_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        detail["wal_segments_restored"].as_u64().unwrap() >= 2,
        "{detail}"
    );

    // Cleaned up: no scratch folder, no server; and the throwaway server archived nothing.
    assert!(
        names(&config.backup.scratch).is_empty(),
        "{:?}",
        names(&config.backup.scratch)
    );
    assert_eq!(
        processes_mentioning(&config.backup.scratch),
        Vec::<String>::new()
    );
    assert!(
        !names(&cluster.archive())
            .iter()
            .any(|n| n.ends_with(".history")),
        "the drill's new timeline reached the archive: {:?}",
        names(&cluster.archive())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_that_cannot_recover_fails_and_cleans_up() {
    let (cluster, _conn) = archiving_cluster_with_schema().await;
    let Ops {
        db: _db,
        dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;
    let report = backup::run(&config, false).await.expect("a backup");
    let start = report.path.join("backup_label");
    let start = backup::start_wal_file(&std::fs::read_to_string(start).unwrap()).unwrap();
    let archived = cluster.archive().join(&start);
    wait_for(
        "the backup's WAL in the archive",
        Duration::from_secs(30),
        || {
            let there = archived.exists().then_some(());
            async move { there }
        },
    )
    .await;
    // The archive is lost: the backup alone cannot be recovered (the drill does not use its own WAL).
    for name in names(&cluster.archive()) {
        std::fs::remove_file(cluster.archive().join(name)).unwrap();
    }

    let out = userpipe(&config, dir.path(), &["backup", "restore-test", &report.id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("the restored server did not start"),
        "{stderr}"
    );
    assert!(stderr.contains("the end of the server log"), "{stderr}");
    assert!(
        names(&config.backup.scratch).is_empty(),
        "{:?}",
        names(&config.backup.scratch)
    );
    assert_eq!(
        processes_mentioning(&config.backup.scratch),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_fails_when_a_segment_is_missing_from_the_archive() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db: _db,
        dir: _dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;
    backup::run(&config, false).await.expect("a backup");
    insert_users(&mut conn, 10).await;
    let lost = switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    insert_users(&mut conn, 10).await;
    let kept = switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    std::fs::remove_file(cluster.archive().join(&lost)).unwrap();

    let error = backup::drill::run(&config, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("the archive holds WAL up to {kept}")),
        "{error}"
    );
    assert!(names(&config.backup.scratch).is_empty());
}
