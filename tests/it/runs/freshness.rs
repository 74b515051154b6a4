//! Freshness metrics per schedule (last success, last run, running now, next firing, skipped firings),
//! the archiver's counters and `userpipe_build_info` on `/metrics`; the last success read back after a
//! restart; and a log that keeps other crates' chatter out unless asked.

use std::time::Duration;

use chrono::Utc;
use userpipe::scheduler;

use super::*;
use crate::support::randomuser::{FakeRandomUser, Reply, fixture_page};
use crate::support::{Userpipe, unique};

/// The value of sample `name` with label `schedule` (or no label when empty), from Prometheus text.
fn sample(text: &str, name: &str, schedule: &str) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the metrics parse");
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name && (schedule.is_empty() || s.labels.get("schedule") == Some(schedule))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_metrics_follow_each_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_millis(2500)),
    ])
    .await;
    config.fetch.source = server.url.clone();
    let (fresh, slow) = (unique("fresh"), unique("slow"));
    write(
        dir.path(),
        &fresh,
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\n[params]\nsource = \"generator\"\n",
    );
    write(
        dir.path(),
        &slow,
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\n",
    );
    let (base, http) = serve_http(&config, &db.pool).await;
    let shutdown = CancellationToken::new();
    let task = {
        let (config, pool, shutdown) = (config.clone(), db.pool.clone(), shutdown.clone());
        tokio::spawn(async move { scheduler::serve(&config, Some(pool), shutdown).await })
    };
    let metrics = || async { get(&format!("{base}/metrics")).await.1 };

    let started = Utc::now().timestamp() as f64;
    let text = wait_for(
        "a success, a run going and a skipped firing",
        Duration::from_secs(30),
        || async {
            let text = metrics().await;
            let ok = sample(&text, "userpipe_job_last_success_timestamp_seconds", &fresh)?
                >= started
                && sample(&text, "userpipe_job_running", &slow)? == 1.0
                && sample(&text, "userpipe_job_skipped_total", &slow)? >= 1.0;
            ok.then_some(text)
        },
    )
    .await;
    let last_run = sample(&text, "userpipe_job_last_run_timestamp_seconds", &fresh).unwrap();
    let last_success =
        sample(&text, "userpipe_job_last_success_timestamp_seconds", &fresh).unwrap();
    assert!(last_run >= last_success && last_run <= Utc::now().timestamp() as f64 + 1.0);
    let next = sample(&text, "userpipe_job_next_fire_timestamp_seconds", &fresh).unwrap();
    assert!(
        next > started && next <= Utc::now().timestamp() as f64 + 2.0,
        "{next}"
    );
    let daily = sample(
        &text,
        "userpipe_job_next_fire_timestamp_seconds",
        "prune-history",
    )
    .unwrap();
    assert!(
        daily - Utc::now().timestamp() as f64 <= 86_400.0,
        "the built-in pruning is planned"
    );
    assert_eq!(
        sample(&text, "userpipe_job_running", &fresh).map(|v| v <= 1.0),
        Some(true)
    );
    assert!(
        text.contains(&format!(
            "userpipe_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // The archiver's counters, read from the stack's server at scrape time.
    assert!(
        sample(&text, "userpipe_pg_archiver_failed_total", "").is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "userpipe_pg_archiver_pending_segments", "").is_some(),
        "{text}"
    );

    // A removed schedule's gauges go.
    std::fs::remove_file(dir.path().join(format!("{fresh}.toml"))).unwrap();
    wait_for(
        "the removed schedule's gauges to go",
        Duration::from_secs(10),
        || async {
            let text = metrics().await;
            sample(&text, "userpipe_job_next_fire_timestamp_seconds", &fresh)
                .is_none()
                .then_some(())
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    http.cancel();
}

/// A free loopback port for a `userpipe` child's HTTP endpoints.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_other_crates_at_warn_and_a_restart_reads_the_last_success_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_kafka, db, mut config) = setup(dir.path()).await;
    let name = unique("tick");
    write(
        dir.path(),
        &name,
        "job = \"fetch-users\"\ncron = \"* * * * * *\"\n[params]\nsource = \"generator\"\n",
    );
    let args = ["run", "--roles", "scheduler"];
    let mut first = Userpipe::spawn(&config, dir.path(), "first.log", &args);
    wait_for("three runs", Duration::from_secs(30), || async {
        (first.log_text().matches("job run finished").count() >= 3).then_some(())
    })
    .await;
    assert!(first.terminate().await.success());
    let log = first.log_text();
    assert!(!log.contains("Job creator created"), "{log}");
    assert!(!log.contains("tokio_cron_scheduler"), "{log}");
    let last_success = runs(&db.pool, &name)
        .await
        .into_iter()
        .filter_map(|r| r.finished_at)
        .max()
        .unwrap();

    // Asked for (USERPIPE_LOG=info), the timer's chatter is there; the schedule no longer fires, and the
    // new process knows its last success from the journal.
    write(
        dir.path(),
        &name,
        "job = \"fetch-users\"\ncron = \"@yearly\"\n[params]\nsource = \"generator\"\n",
    );
    let port = free_port();
    config.http.listen = format!("127.0.0.1:{port}");
    std::fs::write(dir.path().join("second.log"), "").unwrap();
    let mut second = {
        let file = dir.path().join("userpipe.toml");
        std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("second.log")).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_userpipe"));
        for (name, _) in userpipe::config::ENV_OVERRIDES {
            command.env_remove(name);
        }
        let child = command
            .arg("--config")
            .arg(&file)
            .args(args)
            .env("USERPIPE_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap();
        Userpipe {
            child,
            log: dir.path().join("second.log"),
        }
    };
    let text = wait_for(
        "the last success read back",
        Duration::from_secs(30),
        || async {
            let (status, text) = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await
                .ok()
                .map(|r| (r.status(), r))?;
            let text = if status.is_success() {
                text.text().await.ok()?
            } else {
                return None;
            };
            let value = sample(&text, "userpipe_job_last_success_timestamp_seconds", &name)?;
            (value > 0.0).then_some(value)
        },
    )
    .await;
    assert!(
        (text - last_success.timestamp_millis() as f64 / 1000.0).abs() < 0.002,
        "{text} vs {last_success}"
    );
    assert!(
        second.log_text().contains("Job creator created"),
        "{}",
        second.log_text()
    );
    assert!(second.terminate().await.success());
}
