//! Notifications: a failed run sends exactly one message, a recovery one, a schedule's own `[notify]`
//! overrides the default, `jobs run` notifies too, and a webhook that is down costs the run nothing and
//! never shows its URL.

use std::time::Duration;

use userpipe::config::Secret;
use userpipe::metrics::METRICS;
use userpipe::scheduler::journal::{Status, Trigger};

use super::*;
use crate::support::randomuser::{FakeRandomUser, Reply, fixture_page};
use crate::support::unique;

/// `userpipe_notifications_total{schedule, result}` as `/metrics` renders it.
fn notifications(schedule: &str, result: &str) -> f64 {
    let wanted =
        format!("userpipe_notifications_total{{schedule=\"{schedule}\",result=\"{result}\"}} ");
    METRICS
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(wanted.as_str()))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_sends_one_message_and_the_recovery_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let (default, own) = (Receiver::start().await, Receiver::start().await);
    let server = FakeRandomUser::start(vec![
        Reply::json(503, "down"),
        Reply::json(503, "down"),
        Reply::json(200, fixture_page()),
    ])
    .await;
    config.fetch.source = server.url.clone();
    config.notify.url = Secret::new(&default.url);
    config.notify.base_url = "https://userpipe.example".into();
    let name = unique("flaky");
    let flaky = parse(
        &name,
        "job = \"fetch-users\"\ncron = \"@yearly\"\nretries = 1\nretry_backoff = \"100ms\"\n",
    );
    let runner = runner(&config, &db.pool);
    let settle = Duration::from_secs(30);

    // Two failed attempts, one run: one message.
    assert_eq!(
        runner.fire(&flaky, Trigger::Schedule, None).await,
        Some(Status::Failed)
    );
    runner.settle(settle).await;
    let failed = finished_run(&db.pool, &name).await;
    let bodies = default.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    let message = &bodies[0];
    let run_id = failed[0].run_id.to_string();
    assert_eq!(message["event"], "failure");
    assert_eq!(message["schedule"], name.as_str());
    assert_eq!(message["job"], "fetch-users");
    assert_eq!(message["run_id"], run_id.as_str());
    assert_eq!(message["status"], "failed");
    assert_eq!(message["attempts"], 2);
    assert!(
        message["error"].as_str().unwrap().contains("http 503"),
        "{message}"
    );
    let took = failed[1].finished_at.unwrap() - failed[0].started_at;
    assert!((message["duration_ms"].as_i64().unwrap() - took.num_milliseconds()).abs() < 5);
    assert_eq!(
        message["link"],
        format!("https://userpipe.example/api/jobs/{run_id}")
    );
    let text = message["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "userpipe: schedule {name} fetch-users failed after 2 attempts in "
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("(run https://userpipe.example/api/jobs/{run_id})")),
        "{text}"
    );

    // The next run succeeds: one recovery message. The one after it: nothing.
    assert_eq!(
        runner.fire(&flaky, Trigger::Schedule, None).await,
        Some(Status::Succeeded)
    );
    runner.settle(settle).await;
    let bodies = default.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    assert_eq!(bodies[1]["event"], "recovery");
    assert_eq!(bodies[1]["status"], "succeeded");
    assert!(bodies[1]["error"].is_null());
    assert_eq!(
        runner.fire(&flaky, Trigger::Schedule, None).await,
        Some(Status::Succeeded)
    );
    runner.settle(settle).await;
    assert_eq!(
        default.bodies().len(),
        2,
        "a success after a success says nothing"
    );
    assert_eq!(notifications(&name, "sent"), 2.0);

    // A schedule's own [notify] goes to its own webhook, here after every run.
    let chatty = unique("chatty");
    let text = format!(
        "job = \"fetch-users\"\ncron = \"@yearly\"\n[params]\nsource = \"generator\"\n[notify]\nurl = \"{}\"\non = \"always\"\n",
        own.url
    );
    assert_eq!(
        runner
            .fire(&parse(&chatty, &text), Trigger::Manual, None)
            .await,
        Some(Status::Succeeded)
    );
    runner.settle(settle).await;
    let bodies = own.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["event"], "finished");
    assert_eq!(bodies[0]["trigger"], "manual");
    assert_eq!(default.bodies().len(), 2, "not to the default webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_costs_the_run_nothing_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![Reply::json(503, "down")]).await;
    config.fetch.source = server.url.clone();
    config.notify.url = Secret::new(dead_url("T0-s3cr3t"));
    config.notify.timeout = Duration::from_secs(1);
    let name = unique("unheard");
    let schedule = parse(&name, "job = \"fetch-users\"\ncron = \"@yearly\"\n");
    let runner = runner(&config, &db.pool);

    assert_eq!(
        runner.fire(&schedule, Trigger::Schedule, None).await,
        Some(Status::Failed)
    );
    // The run is over while its message is still being tried (three attempts, a second apart at least).
    assert_eq!(
        notifications(&name, "failed") + notifications(&name, "sent"),
        0.0
    );
    let run = finished_run(&db.pool, &name).await;
    assert_eq!(run.len(), 1);
    assert!(run[0].error.as_deref().unwrap().contains("http 503"));

    runner.settle(Duration::from_secs(30)).await;
    assert_eq!(notifications(&name, "failed"), 1.0);
    assert_eq!(notifications(&name, "sent"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_notifies_like_a_scheduled_run_and_never_prints_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let receiver = Receiver::start().await;
    let server = FakeRandomUser::start(vec![Reply::json(503, "down")]).await;
    config.fetch.source = server.url.clone();
    write(
        dir.path(),
        "failing",
        "job = \"fetch-users\"\ncron = \"@yearly\"\n",
    );
    let token = receiver.url.rsplit('/').next().unwrap().to_owned();

    let output = userpipe(&config, dir.path(), &["jobs", "run", "failing"])
        .env("USERPIPE_NOTIFY_URL", &receiver.url)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "the run failed: {output:?}");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["trigger"], "manual");
    assert_eq!(bodies[0]["status"], "failed");
    assert_eq!(
        bodies[0]["run_id"],
        runs(&db.pool, "failing").await[0].run_id.to_string()
    );
    let log = String::from_utf8(output.stderr).unwrap();
    assert!(log.contains("notification sent"), "{log}");
    assert!(!log.contains(&token), "{log}");

    let down = dead_url(&token);
    let output = userpipe(&config, dir.path(), &["jobs", "run", "failing"])
        .env("USERPIPE_NOTIFY_URL", &down)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let log = String::from_utf8(output.stderr).unwrap();
    assert!(log.contains("cannot send the notification"), "{log}");
    let host = down.split("/hooks/").next().unwrap();
    assert!(log.contains(&format!("to={host}/***")), "{log}");
    assert!(!log.contains(&token), "{log}");
    assert_eq!(
        runs(&db.pool, "failing").await.len(),
        2,
        "both runs are in the journal"
    );

    let output = userpipe(&config, dir.path(), &["config", "show"])
        .env("USERPIPE_NOTIFY_URL", &receiver.url)
        .output()
        .unwrap();
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(
        !shown.contains(&token) && shown.contains("/***\""),
        "{shown}"
    );
}
