//! `userpipe jobs` as operators read it: `--json` one object per line, a status typo answered with the
//! known statuses, human durations, and an example in each `jobs` command's help.

use serde_json::Value;

use super::*;

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
