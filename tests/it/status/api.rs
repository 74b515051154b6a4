//! The status page's endpoints without a browser: the page's files with a policy that keeps it on this
//! server, the timeline's data, and the writing action that only the configured bearer token may use.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use userpipe::app::Role;
use userpipe::config::Secret;
use userpipe::scheduler::journal::{self, RunFilter, Status};

use crate::support::{TestDb, TestKafka, config_for, prepare, start_app, wait_for};

fn write_schedule(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text).expect("write a schedule");
}

async fn post(url: &str, token: Option<&str>) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().post(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.expect("a body"))
}

async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_from_the_binary_and_may_reach_only_its_own_server() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    let (base, shutdown, task) = start_app(&config, &Role::PIPELINE).await;

    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let response = reqwest::get(format!("{base}{path}")).await.expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        let policy = header("content-security-policy");
        assert!(
            policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
            "{policy}"
        );
    }
    let html = reqwest::get(format!("{base}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"<script src="/app.js" defer></script>"#),
        "{html}"
    );

    for (path, keys) in [
        (
            "/api/readiness",
            &["ready", "missing", "kafka", "postgresql", "roles"][..],
        ),
        (
            "/api/timeline?range=7d",
            &["now", "since", "schedules", "runs", "writable"][..],
        ),
        (
            "/api/pipeline",
            &["sample_every_seconds", "at", "stages", "dead_letters"][..],
        ),
        (
            "/api/postgres",
            &["backup_dir", "backups", "drill", "archiver", "settings"][..],
        ),
    ] {
        let answer = get_json(&format!("{base}{path}")).await;
        for key in keys {
            assert!(answer.get(key).is_some(), "{path} lacks {key}: {answer}");
        }
    }
    let bad = reqwest::get(format!("{base}/api/timeline?range=1y"))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.text().await.unwrap(),
        "unknown range \"1y\": the ranges are 24h and 7d\n"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_is_refused_without_a_configured_token_and_needs_it_as_a_bearer() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let schedules = tempfile::tempdir().unwrap();
    write_schedule(
        schedules.path(),
        "fetch-now",
        "job = \"fetch-users\"\ncron = \"@yearly\"\n[params]\nresults = 3\nsource = \"generator\"\n",
    );
    write_schedule(
        schedules.path(),
        "broken",
        "job = \"fetch-users\"\ncron = \"61 * * * *\"\n",
    );
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = schedules.path().to_owned();
    prepare(&config, &db.pool).await;

    // No token configured: read-only, and the action is refused whatever is sent.
    let (base, shutdown, task) = start_app(&config, &Role::PIPELINE).await;
    let run_now = format!("{base}/api/schedules/fetch-now/run");
    let (status, _, body) = post(&run_now, Some("anything")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body,
        "writing actions are off: set http.token (USERPIPE_HTTP__TOKEN) to allow them\n"
    );
    assert_eq!(
        get_json(&format!("{base}/api/timeline")).await["writable"],
        false
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // A token configured: only it, as a bearer, may run a schedule.
    let token = "t0ken-0f-the-status-page";
    config.http.token = Secret::new(token);
    let (base, shutdown, task) = start_app(&config, &Role::PIPELINE).await;
    let run_now = format!("{base}/api/schedules/fetch-now/run");
    for wrong in [None, Some("nope"), Some("t0ken-0f-the-status-pag")] {
        let (status, headers, body) = post(&run_now, wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}: {body}");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let (status, _, body) = post(&format!("{base}/api/schedules/no-such/run"), Some(token)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no schedule \"no-such\"\n")
    );
    let (status, _, body) = post(&format!("{base}/api/schedules/broken/run"), Some(token)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("broken.toml:2:"), "{body}");
    assert!(
        journal::list(
            &db.pool,
            &RunFilter {
                limit: 10,
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .is_empty(),
        "a refused action runs nothing"
    );

    let (status, _, body) = post(&run_now, Some(token)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let filter = RunFilter {
        schedule: Some("fetch-now".into()),
        limit: 10,
        ..Default::default()
    };
    let run = wait_for(
        "the manual run to finish",
        Duration::from_secs(30),
        || async {
            journal::list(&db.pool, &filter)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.status != Status::Running)
        },
    )
    .await;
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.error);
    assert_eq!(run.trigger.as_str(), "manual");

    let timeline = get_json(&format!("{base}/api/timeline")).await;
    assert_eq!(timeline["writable"], true);
    let runs = timeline["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{timeline}");
    let field = |name: &str| {
        let fields = timeline["run_fields"].as_array().unwrap();
        let i = fields.iter().position(|f| f == name).unwrap();
        runs[0][i].clone()
    };
    assert_eq!(field("run_id"), run.run_id.to_string());
    assert_eq!(field("status"), "succeeded");
    assert_eq!(field("trigger"), "manual");
    assert_eq!(field("attempts"), 1);
    // Rounded to the millisecond, where the journal's record truncates.
    let close = |value: Value, want: i64| (value.as_i64().unwrap() - want).abs() <= 1;
    assert!(
        close(field("started_at_ms"), run.started_at.timestamp_millis()),
        "{timeline}"
    );
    assert!(
        close(field("duration_ms"), run.duration_ms.unwrap()),
        "{timeline}"
    );
    assert_eq!(field("why"), Value::Null);
    let text = timeline.to_string();
    assert!(!text.contains(token), "the token is never shown");
    let broken = timeline["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "broken")
        .unwrap();
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("invalid cron expression"),
        "{broken}"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
