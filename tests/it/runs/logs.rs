//! Each run's own log: its events by attempt, the bound with its marker, the API and the command that
//! show it, and the process's log stream carrying the run id.

use std::time::Duration;

use serde_json::Value;
use userpipe::scheduler::journal::{Status, Trigger};
use userpipe::scheduler::runlog;

use super::*;
use crate::support::capture_run_logs;
use crate::support::randomuser::{FakeRandomUser, Reply, fixture_page};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_log_keeps_its_events_by_attempt_and_the_api_serves_it() {
    capture_run_logs();
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![
        Reply::json(503, "down for maintenance"),
        Reply::json(200, fixture_page()),
    ])
    .await;
    config.fetch.source = server.url.clone();
    let schedule = parse(
        "retried",
        "job = \"fetch-users\"\ncron = \"@yearly\"\nretries = 1\nretry_backoff = \"100ms\"\n",
    );
    let status = runner(&config, &db.pool)
        .fire(&schedule, Trigger::Manual, None)
        .await;
    assert_eq!(status, Some(Status::Succeeded));
    let attempts = finished_run(&db.pool, "retried").await;
    let run_id = attempts[0].run_id;

    let lines = runlog::read(&db.pool, run_id, 0, 10_000).await.unwrap();
    let seqs: Vec<i64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(
        seqs,
        (1..=lines.len() as i64).collect::<Vec<_>>(),
        "numbered from 1, no gap"
    );
    let of = |attempt: i32| -> Vec<(&str, &str)> {
        lines
            .iter()
            .filter(|l| l.attempt == attempt)
            .map(|l| (l.level.as_str(), l.message.as_str()))
            .collect()
    };
    assert_eq!(
        of(1),
        [("INFO", "job run started"), ("WARN", "job run finished")],
        "{lines:#?}"
    );
    assert_eq!(
        of(2),
        [
            ("INFO", "job run started"),
            ("INFO", "fetch run done"),
            ("INFO", "job run finished")
        ],
        "{lines:#?}"
    );
    let failed = lines.iter().find(|l| l.level == "WARN").unwrap();
    assert_eq!(failed.fields["status"], "failed");
    assert!(
        failed.fields["error"]
            .as_str()
            .unwrap()
            .contains("http 503"),
        "{failed:?}"
    );
    assert_eq!(failed.target, "userpipe::scheduler::journal");

    let (base, shutdown) = serve_http(&config, &db.pool).await;
    let (status, body) = get(&format!("{base}/api/jobs/{run_id}")).await;
    assert_eq!(status, 200, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["over"], true);
    assert_eq!(run["schedule"], "retried");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(run["attempts"][1]["max_attempts"], 2);
    assert_eq!(run["logs"], format!("/api/jobs/{run_id}/logs"));

    let (status, body) = get(&format!("{base}/api/jobs/{run_id}/logs")).await;
    assert_eq!(status, 200, "{body}");
    let log: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(log["over"], true);
    let served = log["lines"].as_array().unwrap();
    assert_eq!(served.len(), lines.len());
    assert_eq!(served[0]["message"], "job run started");
    assert_eq!(served[0]["attempt"], 1);
    assert_eq!(served[0]["dropped_before"], 0);
    assert_eq!(log["next_after"], lines.len());
    let (_, body) = get(&format!(
        "{base}/api/jobs/{run_id}/logs?after={}",
        lines.len() - 1
    ))
    .await;
    let tail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tail["lines"].as_array().unwrap().len(), 1);
    assert_eq!(tail["lines"][0]["message"], "job run finished");

    let unknown = uuid::Uuid::new_v4();
    assert_eq!(get(&format!("{base}/api/jobs/{unknown}")).await.0, 404);
    assert_eq!(get(&format!("{base}/api/jobs/{unknown}/logs")).await.0, 404);
    assert_eq!(get(&format!("{base}/api/jobs/not-a-run/logs")).await.0, 400);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_its_last_thousand_lines_and_says_how_many_were_dropped() {
    capture_run_logs();
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    // 1,500 results that are not users: one warning each, then the run's own events.
    let junk: Vec<Value> = (0..1500)
        .map(|i| serde_json::json!({ "junk": i }))
        .collect();
    let page = serde_json::json!({ "results": junk, "info": {} }).to_string();
    let server = FakeRandomUser::start(vec![Reply::json(200, page)]).await;
    config.fetch.source = server.url.clone();
    let schedule = parse(
        "noisy",
        "job = \"fetch-users\"\ncron = \"@yearly\"\n[params]\nresults = 1500\n",
    );
    runner(&config, &db.pool)
        .fire(&schedule, Trigger::Manual, None)
        .await;
    let run_id = finished_run(&db.pool, "noisy").await[0].run_id;

    let lines = runlog::read(&db.pool, run_id, 0, 10_000).await.unwrap();
    assert_eq!(lines.len(), 1000);
    // started, 1,500 skips, done, finished: 1,503 lines, the last 1,000 kept.
    let first = lines[0].seq;
    assert_eq!(first, 504, "{:?}", &lines[0]);
    assert_eq!(lines.last().unwrap().message, "job run finished");
    assert_eq!(lines[0].message, "skipping a result");

    let output = userpipe(&config, dir.path(), &["jobs", "logs", &run_id.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut printed = text.lines();
    assert_eq!(
        printed.next(),
        Some("... 503 line(s) dropped: a run keeps its last 1000 ..."),
    );
    assert!(
        printed
            .next()
            .unwrap()
            .contains(" WARN #1 skipping a result "),
        "{text}"
    );
    assert_eq!(printed.count(), 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_log_carries_the_run_id_and_jobs_logs_follows_a_run_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()),
        Reply::json(200, fixture_page()).after(Duration::from_secs(3)),
    ])
    .await;
    config.fetch.source = server.url.clone();
    write(
        dir.path(),
        "once",
        "job = \"fetch-users\"\ncron = \"@yearly\"\n",
    );

    // JSON: every event of the run names it, in the span list.
    let output = userpipe(
        &config,
        dir.path(),
        &["--log-format", "json", "jobs", "run", "once"],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let run_id = runs(&db.pool, "once").await[0].run_id.to_string();
    let events: Vec<Value> = String::from_utf8(output.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let done = events
        .iter()
        .find(|e| e["message"] == "fetch run done")
        .expect("the job's own event");
    let spans = done["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "job_run");
    assert_eq!(spans[0]["run_id"], run_id.as_str());
    assert_eq!(spans[1]["attempt"], 1);

    // The run's log, as lines of JSON and as text.
    let output = userpipe(&config, dir.path(), &["jobs", "logs", "--json", &run_id])
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["job run started", "fetch run done", "job run finished"]
    );

    // Text: the span with the run id on each line; `jobs logs --follow` prints until the run is over.
    let mut slow = userpipe(&config, dir.path(), &["jobs", "run", "once"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = wait_for("the slow run to start", Duration::from_secs(30), || async {
        runs(&db.pool, "once")
            .await
            .into_iter()
            .find(|r| r.status == Status::Running)
    })
    .await;
    let follow = userpipe(
        &config,
        dir.path(),
        &["jobs", "logs", "--follow", &running.run_id.to_string()],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let followed = tokio::task::spawn_blocking(move || follow.wait_with_output().unwrap());
    let followed = tokio::time::timeout(Duration::from_secs(30), followed)
        .await
        .expect("jobs logs --follow ends with the run")
        .unwrap();
    assert!(followed.status.success());
    let text = String::from_utf8(followed.stdout).unwrap();
    let printed: Vec<&str> = text.lines().collect();
    assert_eq!(printed.len(), 3, "{text}");
    assert!(printed[2].contains("INFO #1 job run finished"), "{text}");
    assert!(printed[2].contains("status=succeeded"), "{text}");
    assert!(
        runs(&db.pool, "once")
            .await
            .iter()
            .all(|r| r.status == Status::Succeeded)
    );

    let slow_output = tokio::task::spawn_blocking(move || {
        slow.wait().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut slow.stderr.take().unwrap(), &mut text).unwrap();
        text
    })
    .await
    .unwrap();
    let line = slow_output
        .lines()
        .find(|l| l.contains("fetch run done"))
        .expect("the job's event in the text log");
    assert!(
        line.contains(&format!(
            "job_run{{run_id={} schedule=once}}:attempt{{attempt=1}}",
            running.run_id
        )),
        "{line}"
    );
}
