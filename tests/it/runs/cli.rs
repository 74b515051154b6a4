//! `userpipe jobs` as operators read it: `--json` one object per line, a status typo answered with the
//! known statuses, human durations, and an example in each `jobs` command's help; and the commands
//! README lists, each run as a process as users type them, with its exit code and output.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use userpipe::config::Config;
use uuid::Uuid;

use super::*;
use crate::support::write_backup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_prints_one_json_object_per_line_and_refuses_an_unknown_status() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, config) = setup(dir.path()).await;
    write(
        dir.path(),
        "gen",
        "job = \"fetch-users\"\ncron = \"@yearly\"\n[params]\nsource = \"generator\"\n",
    );
    for _ in 0..2 {
        let output = userpipe(&config, dir.path(), &["jobs", "run", "gen"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    assert_eq!(runs(&db.pool, "gen").await.len(), 2);

    let output = userpipe(&config, dir.path(), &["jobs", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let objects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(objects.len(), 2, "{text}");
    assert!(
        objects
            .iter()
            .all(|o| o.is_object() && o["status"] == "succeeded")
    );

    let output = userpipe(&config, dir.path(), &["jobs"]).output().unwrap();
    let table = String::from_utf8(output.stdout).unwrap();
    let row = table.lines().nth(1).expect("a run");
    assert!(
        row.contains("ms ") || row.contains("s "),
        "a human duration: {table}"
    );

    let output = userpipe(&config, dir.path(), &["jobs", "--status", "faild"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains("invalid value 'faild' for '--status <STATUS>'"),
        "{error}"
    );
    assert!(
        error.contains("running, succeeded, failed, timed_out, skipped, abandoned"),
        "{error}"
    );
}

#[test]
fn each_jobs_command_shows_an_example_in_its_help() {
    for args in [
        &["jobs", "--help"][..],
        &["jobs", "show", "--help"],
        &["jobs", "logs", "--help"],
        &["jobs", "run", "--help"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_userpipe"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        let example = help
            .split_once("Example")
            .unwrap_or_else(|| panic!("no example in `userpipe {}`:\n{help}", args.join(" ")))
            .1;
        assert!(example.contains("userpipe jobs"), "{help}");
    }
}

/// `userpipe ARGS` to its end: exit code, stdout, stderr.
fn typed(config: &Config, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = userpipe(config, dir, args).output().unwrap();
    (
        output.status.code().expect("an exit code"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_as_users_type_them_exit_and_print_what_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let backups = tempfile::tempdir().unwrap();
    config.backup.dir = backups.path().to_owned();
    config.backup.wal_archive = dir.path().join("wal-archive");
    std::fs::create_dir_all(&config.backup.wal_archive).unwrap();
    write(
        dir.path(),
        "gen",
        "job = \"fetch-users\"\ncron = \"0 3 * * *\"\n[params]\nsource = \"generator\"\nresults = 4\n",
    );

    // schedules check: each file's next fire times; a broken file named with its line, exit 1.
    let (code, out, err) = typed(&config, dir.path(), &["schedules", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("gen") && out.contains("03:00:00"), "{out}");
    write(
        dir.path(),
        "bad",
        "job = \"fetch-users\"\ncron = \"61 * * * *\"\n",
    );
    let (code, out, err) = typed(&config, dir.path(), &["schedules", "check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(out.contains("gen"), "the good file is still shown: {out}");
    std::fs::remove_file(dir.path().join("bad.toml")).unwrap();

    // db migrate, again on a migrated database.
    let (code, out, err) = typed(&config, dir.path(), &["db", "migrate"]);
    assert_eq!((code, out.as_str()), (0, "migrations applied\n"), "{err}");

    // fetch: the users are in the topic.
    let (code, out, err) = typed(
        &config,
        dir.path(),
        &[
            "fetch",
            "--count",
            "7",
            "--source",
            "generator",
            "--seed",
            "5",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "published 7 of 7 users to {} (skipped 0, run ",
            config.topics.users
        )),
        "{out}"
    );
    let (_, in_topic) = crate::support::lag_and_total(
        &config.kafka.brokers,
        "nobody",
        &config.topics.users,
        config.kafka.partitions,
    );
    assert_eq!(in_topic, 7);

    // jobs run, jobs, jobs show.
    let (code, out, err) = typed(&config, dir.path(), &["jobs", "run", "gen"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = typed(&config, dir.path(), &["jobs", "run", "nosuch"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nosuch"), "{err}");
    let run_id = runs(&db.pool, "gen").await[0].run_id.to_string();
    let (code, out, err) = typed(&config, dir.path(), &["jobs", "--schedule", "gen"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gen") && out.contains("succeeded"), "{out}");
    let (code, out, err) = typed(&config, dir.path(), &["jobs", "show", &run_id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&run_id) && out.contains("succeeded"), "{out}");
    let (code, out, err) = typed(&config, dir.path(), &["jobs", "show", &run_id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let attempt: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(attempt["run_id"], run_id.as_str(), "{out}");
    let unknown = Uuid::new_v4().to_string();
    let (code, out, err) = typed(&config, dir.path(), &["jobs", "show", &unknown]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains(&unknown), "{err}");

    // health: 1 with nothing listening, 0 once `userpipe run` is ready there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.http.listen = format!("127.0.0.1:{port}");
    let (code, _, err) = typed(&config, dir.path(), &["health"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let (_, shutdown, task) =
        crate::support::start_app(&config, &userpipe::app::Role::PIPELINE).await;
    let said = wait_for("health to say ready", Duration::from_secs(30), || {
        let (code, out, _) = typed(&config, dir.path(), &["health"]);
        async move { (code == 0).then_some(out) }
    })
    .await;
    let readiness: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(readiness["ready"], true, "{said}");
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // backup list --json, oldest first; backup prune keeps the newest `keep`.
    let newest: chrono::DateTime<chrono::Utc> = "2026-11-21T02:03:04Z".parse().unwrap();
    write_backup(
        backups.path(),
        "20261114T020000Z",
        newest - chrono::Duration::days(7),
        true,
    );
    write_backup(backups.path(), "20261121T020000Z", newest, true);
    let (code, out, err) = typed(&config, dir.path(), &["backup", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["20261114T020000Z", "20261121T020000Z"], "{out}");
    config.backup.keep = 1;
    let (code, out, err) = typed(&config, dir.path(), &["backup", "prune"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("deleted backup(s) 20261114T020000Z (keep 1)\n"),
        "{out}"
    );
    assert!(!backups.path().join("20261114T020000Z").exists());
    assert!(backups.path().join("20261121T020000Z").exists());
}
