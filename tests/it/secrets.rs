//! Secrets in URLs stay out of sight: a source URL's key shows in no journal record, `/api/jobs`,
//! `userpipe jobs`, `config show` or log line; a database URL's parameters reach no log line with their
//! value; the pg_* programs get the password through the environment only, and `sslpassword`, which they
//! could get only on their command line, is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use userpipe::app::{App, Role};
use userpipe::config::Secret;
use userpipe::pg::backup;

use crate::pg::helpers::{code, ops, stdout, userpipe};
use crate::pipeline::{generated_users, publish_users, wait_for_rows};
use crate::support::cluster::{ClusterOptions, TestCluster};
use crate::support::randomuser::{FakeRandomUser, Reply};
use crate::support::{TestDb, TestKafka, Userpipe, config_for, prepare, unique, wait_for};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A secret unique to one test, so a match cannot come from elsewhere.
fn a_secret(tag: &str) -> String {
    unique(tag).replace('_', "-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_the_source_url_shows_in_no_journal_api_command_or_log() {
    let (kafka, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let (key, token) = (a_secret("key"), a_secret("token"));
    let server = FakeRandomUser::start(vec![Reply::json(503, r#"{"error": "busy"}"#)]).await;
    let mut config = config_for(&kafka, &db.url());
    config.fetch.source = format!("{}?api_key={key}&nat=gb", server.url);
    config.fetch.max_attempts = 2;
    config.fetch.backoff = Duration::from_millis(10);
    config.scheduler.dir = dir.path().join("schedules");
    std::fs::create_dir(&config.scheduler.dir).unwrap();
    let schedule = "job = \"fetch-users\"\ncron = \"@yearly\"\n";
    std::fs::write(config.scheduler.dir.join("from-config.toml"), schedule).unwrap();
    std::fs::write(
        config.scheduler.dir.join("from-params.toml"),
        format!(
            "{schedule}[params]\nsource = \"{}?token={token}\"\n",
            server.url
        ),
    )
    .unwrap();
    prepare(&config, &db.pool).await;

    let mut everything = String::new();
    for name in ["from-config", "from-params"] {
        let run = userpipe(&config, dir.path(), &["jobs", "run", name]);
        assert_eq!(code(&run), 1, "{}", stderr(&run));
        everything += &format!("{}{}", stdout(&run), stderr(&run));
    }
    let jobs = userpipe(&config, dir.path(), &["jobs", "--json"]);
    assert_eq!(code(&jobs), 0, "{}", stderr(&jobs));
    let listed = stdout(&jobs);
    assert!(
        listed.contains("api_key=***") && listed.contains("token=***"),
        "{listed}"
    );
    assert!(listed.contains("the source answered http 503"), "{listed}");
    let shown = userpipe(&config, dir.path(), &["config", "show"]);
    assert!(stdout(&shown).contains("api_key=***"), "{}", stdout(&shown));

    let app = App::build(&config, &[Role::Scheduler])
        .await
        .expect("build the app");
    let base = format!("http://127.0.0.1:{}", app.http_port().expect("http is on"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let api = reqwest::get(format!("{base}/api/jobs"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(
        api.contains("api_key=***") && api.contains("token=***"),
        "{api}"
    );

    for text in [
        everything,
        listed,
        format!("{}{}", stdout(&shown), stderr(&shown)),
        stderr(&jobs),
        api,
    ] {
        assert!(
            !text.contains(&key) && !text.contains(&token),
            "a secret shows: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_url_parameter_reaches_no_log_line_with_its_value() {
    let (kafka, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let secret = a_secret("apikey");
    let mut config = config_for(&kafka, &db.url());
    // sqlx does not read apikey (nor does PostgreSQL): it used to log it with its value.
    config.database.url = Secret::new(format!("{}?connect_timeout=10&apikey={secret}", db.url()));
    let migrate = userpipe(&config, dir.path(), &["db", "migrate"]);
    assert_eq!(code(&migrate), 0, "{}", stderr(&migrate));
    let log = stderr(&migrate);
    assert!(
        log.contains("apikey") && log.contains("connect_timeout"),
        "the parameters left aside are named: {log}"
    );
    assert!(!log.contains(&secret), "{log}");

    config.database.url = Secret::new(format!(
        "{}?sslkey=/nowhere.pem&sslpassword={secret}",
        db.url()
    ));
    let refused = userpipe(&config, dir.path(), &["config", "show"]);
    assert_eq!(code(&refused), 1);
    let error = stderr(&refused);
    assert!(error.contains("sslpassword is not supported"), "{error}");
    assert!(
        !error.contains(&secret) && !stdout(&refused).contains(&secret),
        "{error}"
    );
}

/// A `backup.pg_bin` whose pg_basebackup and pg_verifybackup record their arguments, and whether
/// PGPASSWORD was set (never its value), in `<dir>/argv`, then run the real program.
fn recording_pg_bin(dir: &Path, real: &Path) {
    for program in ["pg_basebackup", "pg_verifybackup"] {
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" \"PGPASSWORD=${{PGPASSWORD:+set}}\" >> '{}'\nexec '{}' \"$@\"\n",
            dir.join("argv").display(),
            real.join(program).display()
        );
        let path = dir.join(program);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pg_programs_get_the_password_from_the_environment_only() {
    let password = a_secret("pw");
    let cluster = TestCluster::start_with(ClusterOptions {
        replication_password: Some(password.clone()),
        ..Default::default()
    });
    let mut ops = ops(&cluster).await;
    let bin = ops.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    recording_pg_bin(&bin, &ops.config.backup.pg_bin);
    ops.config.backup.pg_bin = bin.clone();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);

    // Replication needs the password: the backup is taken only if it got there.
    ops.config.database.url = Secret::new(format!(
        "{url}?password={password}&application_name=up-backup"
    ));
    let report = backup::run(&ops.config, false).await.expect("a backup");
    assert!(report.verified);
    let argv = std::fs::read_to_string(bin.join("argv")).unwrap();
    assert!(
        !argv.contains(&password),
        "the password is on a command line: {argv}"
    );
    assert!(argv.contains("application_name=up-backup"), "{argv}");
    assert!(argv.lines().any(|l| l == "PGPASSWORD=set"), "{argv}");

    // sslpassword has no environment variable: refused before any program runs.
    ops.config.database.url = Secret::new(format!("{url}?sslpassword={password}"));
    let error = format!("{:#}", backup::run(&ops.config, false).await.unwrap_err());
    assert!(error.contains("sslpassword is not supported"), "{error}");
    assert!(!error.contains(&password), "{error}");
    assert_eq!(
        std::fs::read_to_string(bin.join("argv")).unwrap(),
        argv,
        "no program ran"
    );
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The body of `GET url`, whatever its status.
async fn body(url: &str) -> String {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_database_url_is_in_no_log_of_userpipe_run_nor_in_an_http_error() {
    let (kafka, db, dir) = (
        TestKafka::new(),
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let password = a_secret("pw");
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = dir.path().join("schedules");
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    prepare(&config, &db.pool).await;
    // Every event userpipe and the libraries emit.
    let debug = [("USERPIPE_LOG", "debug")];

    // Text logs, the database there (trust: the password is sent, never needed), users flowing.
    let mut url = url::Url::parse(&db.url()).unwrap();
    url.set_password(Some(&password)).unwrap();
    config.database.url = Secret::new(url.to_string());
    let mut up = Userpipe::spawn_with(&config, dir.path(), "text.log", &["run"], &debug);
    let base = up.http_base().await;
    publish_users(&config, &generated_users(20, 23, None)).await;
    wait_for_rows(&db.pool, 20, Duration::from_secs(60)).await;
    let mut answers = vec![
        body(&format!("{base}/readyz")).await,
        body(&format!("{base}/api/jobs/not-a-run")).await,
        body(&format!("{base}/api/jobs?status=nonsense")).await,
    ];
    assert!(up.terminate().await.success());

    // JSON logs, the database unreachable: every connection fails and says so.
    let port = closed_port();
    config.database.url = Secret::new(format!(
        "postgres://postgres:{password}@127.0.0.1:{port}/users"
    ));
    let mut down = Userpipe::spawn_with(
        &config,
        dir.path(),
        "json.log",
        &["--log-format", "json", "run"],
        &debug,
    );
    let base = down.http_base().await;
    let unready = wait_for(
        "readyz to say postgresql is unreachable",
        Duration::from_secs(30),
        || async {
            let readyz = body(&format!("{base}/readyz")).await;
            readyz.contains("unreachable").then_some(readyz)
        },
    )
    .await;
    answers.push(unready);
    answers.push(body(&format!("{base}/api/jobs")).await);
    answers.push(body(&format!("{base}/api/postgres")).await);
    wait_for(
        "the failed connections to be logged",
        Duration::from_secs(30),
        || async {
            let log = down.log_text();
            log.contains("cannot apply migrations, retrying")
                .then_some(())
        },
    )
    .await;
    assert!(down.terminate().await.success());

    let (text, json) = (up.log_text(), down.log_text());
    assert!(text.contains("http endpoints listening"), "{text}");
    assert!(
        json.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{json}"
    );
    for (what, said) in [("text log", &text), ("json log", &json)]
        .into_iter()
        .chain(answers.iter().map(|a| ("an http answer", a)))
    {
        assert!(
            !said.contains(&password),
            "the password is in {what}:\n{said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgconf_logs_the_names_of_the_settings_it_writes_never_their_values() {
    let cluster = TestCluster::start();
    let mut ops = ops(&cluster).await;
    let token = a_secret("token");
    // An archive_command carrying a credential, as one copying to object storage may.
    let file = ops.dir.path().join("archiving.conf");
    std::fs::write(
        &file,
        format!(
            "wal_level = replica\narchive_mode = on\narchive_command = '/bin/true --token {token} %p'\narchive_timeout = 60s\n"
        ),
    )
    .unwrap();
    ops.config.pgconf.file = file;
    let config_file = ops.dir.path().join("userpipe.toml");
    std::fs::write(&config_file, toml::to_string(&ops.config).unwrap()).unwrap();

    let mut logs = String::new();
    for format in ["text", "json"] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_userpipe"));
        for (name, _) in userpipe::config::ENV_OVERRIDES {
            command.env_remove(name);
        }
        let applied = command
            .args(["--log-format", format, "--config"])
            .arg(&config_file)
            .args(["pgconf", "apply"])
            .env("USERPIPE_LOG", "debug")
            .output()
            .unwrap();
        assert!(
            [0, i32::from(userpipe::cli::exit::RESTART_NEEDED)].contains(&code(&applied)),
            "{}{}",
            stdout(&applied),
            stderr(&applied)
        );
        logs += &stderr(&applied);
    }
    assert!(
        logs.contains("setting written with ALTER SYSTEM") && logs.contains("archive_command"),
        "the settings written are named: {logs}"
    );
    assert!(
        !logs.contains(&token),
        "a setting's value is logged: {logs}"
    );
    let mut conn = cluster.connect().await;
    let written: String = sqlx::query_scalar(
        "SELECT setting FROM pg_file_settings WHERE name = 'archive_command' AND applied IS NOT NULL ORDER BY seqno DESC LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        written.contains(&token),
        "the command was written: {written}"
    );
}
