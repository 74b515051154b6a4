//! `userpipe fetch` against a local server speaking randomuser.me's JSON, publishing to the real broker.

use std::time::Duration;

use rdkafka::Message;
use serde_json::Value;
use userpipe::config::Config;
use userpipe::pipeline::fetch::{self, FetchReport};
use uuid::Uuid;

use crate::support::randomuser::{FakeRandomUser, Reply, fixture_page};
use crate::support::{TestKafka, config_for, consume};

/// A configuration whose source is `server`, with quick retries.
fn config(kafka: &TestKafka, server: &FakeRandomUser) -> Config {
    let mut config = config_for(kafka, "postgres://unused@127.0.0.1:1/unused");
    config.fetch.source = server.url.clone();
    config.fetch.backoff = Duration::from_millis(10);
    config.fetch.max_attempts = 3;
    config.fetch.timeout = Duration::from_secs(5);
    config
}

async fn fetch_with(
    kafka: &TestKafka,
    server: &FakeRandomUser,
    edit: impl FnOnce(&mut Config),
) -> anyhow::Result<FetchReport> {
    let mut config = config(kafka, server);
    edit(&mut config);
    userpipe::pipeline::topics::ensure(&config, &config.topics)
        .await
        .expect("create topics");
    let producer = userpipe::kafka::producer(&config.kafka).unwrap();
    fetch::run(&config, &producer, 2, Uuid::new_v4()).await
}

#[tokio::test]
async fn a_normal_page_is_published_keyed_by_id_in_the_seeds_shape() {
    let kafka = TestKafka::new();
    let server = FakeRandomUser::start(vec![Reply::json(200, fixture_page())]).await;
    let report = fetch_with(&kafka, &server, |_| {})
        .await
        .expect("the fetch succeeds");
    assert_eq!(
        (
            report.requested,
            report.received,
            report.published,
            report.skipped
        ),
        (2, 2, 2, 0)
    );
    assert_eq!(server.seen()[0].results.as_deref(), Some("2"));

    let messages = consume(
        &kafka.brokers,
        &kafka.topic("users_info"),
        2,
        Duration::from_secs(30),
    )
    .await;
    let mut users: Vec<Value> = messages
        .iter()
        .map(|m| {
            let value: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(
                m.key(),
                value["id"].as_str().map(str::as_bytes),
                "the key is the id"
            );
            value
        })
        .collect();
    users.sort_by_key(|u| u["first_name"].as_str().unwrap().to_owned());
    let (harry, jennie) = (&users[0], &users[1]);
    // The seed's field mapping reads exactly these fields; all are strings but post_code.
    for user in &users {
        for field in [
            "id",
            "first_name",
            "last_name",
            "gender",
            "address",
            "email",
            "username",
            "dob",
            "registered_date",
            "phone",
            "picture",
        ] {
            assert!(user[field].is_string(), "{field} is a string in {user}");
        }
        Uuid::parse_str(user["id"].as_str().unwrap()).expect("the id is a uuid");
        assert_eq!(
            user["fetch_run_id"].as_str().map(str::to_owned),
            Some(report.run_id.to_string())
        );
    }
    assert_eq!(jennie["post_code"], Value::from(63104));
    assert_eq!(harry["post_code"], Value::from("CA3 8RT"));
    assert_eq!(
        jennie["address"],
        "8929 Valwood Pkwy, Billings, Michigan, United States"
    );
    assert_eq!(jennie["username"], "yellowpeacock117");
    assert_eq!(jennie["dob"], "1992-03-08T15:13:16.688Z");
    assert_eq!(jennie["registered_date"], "2007-07-09T05:51:59.390Z");
    assert_eq!(
        jennie["picture"],
        "https://randomuser.me/api/portraits/med/men/75.jpg"
    );
    assert_eq!(jennie["login_uuid"], "7a0eed16-9430-4d68-901f-c0d4c1c3bf00");
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let kafka = TestKafka::new();
    let limited = Reply::json(429, r#"{"error": "rate limited"}"#).header("retry-after", "1");
    let server = FakeRandomUser::start(vec![limited, Reply::json(200, fixture_page())]).await;
    let report = fetch_with(&kafka, &server, |_| {})
        .await
        .expect("the fetch succeeds on the second attempt");
    assert_eq!(report.published, 2);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "waited only {waited:?} despite Retry-After: 1"
    );
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let kafka = TestKafka::new();
    let server = FakeRandomUser::start(vec![
        Reply::json(500, "oops"),
        Reply::json(200, fixture_page()),
    ])
    .await;
    let report = fetch_with(&kafka, &server, |_| {})
        .await
        .expect("the fetch succeeds after a 500");
    assert_eq!(report.published, 2);
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_fails_the_run() {
    let kafka = TestKafka::new();
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_secs(3)),
    ])
    .await;
    let error = fetch_with(&kafka, &server, |c| {
        c.fetch.timeout = Duration::from_millis(300);
        c.fetch.max_attempts = 2;
    })
    .await
    .expect_err("the fetch times out");
    let error = format!("{error:#}");
    assert!(
        error.contains("the request timed out after 300ms"),
        "{error}"
    );
    assert!(error.contains("gave up after 2 attempts"), "{error}");
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_body_that_is_not_json_fails_at_once() {
    let kafka = TestKafka::new();
    let server = FakeRandomUser::start(vec![Reply::json(200, "<html>maintenance</html>")]).await;
    let error = format!(
        "{:#}",
        fetch_with(&kafka, &server, |_| {})
            .await
            .expect_err("fails")
    );
    assert!(
        error.starts_with("the source's response is not json"),
        "{error}"
    );
    assert_eq!(server.seen().len(), 1, "not retried");
}

#[tokio::test]
async fn an_error_object_fails_with_its_message() {
    let kafka = TestKafka::new();
    let body = r#"{"error": "Uh oh, something has gone wrong. Please tweet us @randomapi about the issue. Thank you."}"#;
    let server = FakeRandomUser::start(vec![Reply::json(200, body)]).await;
    let error = format!(
        "{:#}",
        fetch_with(&kafka, &server, |_| {})
            .await
            .expect_err("fails")
    );
    assert_eq!(
        error,
        "the source answered http 200 OK with error: Uh oh, something has gone wrong. Please tweet us @randomapi about the issue. Thank you."
    );
}

#[tokio::test]
async fn a_result_missing_a_field_is_skipped_and_the_rest_published() {
    let kafka = TestKafka::new();
    let mut page: Value = serde_json::from_str(&fixture_page()).unwrap();
    page["results"][0]["login"]
        .as_object_mut()
        .unwrap()
        .remove("username");
    let server = FakeRandomUser::start(vec![Reply::json(200, page.to_string())]).await;
    let report = fetch_with(&kafka, &server, |_| {})
        .await
        .expect("the fetch succeeds");
    assert_eq!(
        (report.received, report.published, report.skipped),
        (2, 1, 1)
    );
    let messages = consume(
        &kafka.brokers,
        &kafka.topic("users_info"),
        1,
        Duration::from_secs(30),
    )
    .await;
    let user: Value = serde_json::from_slice(messages[0].payload().unwrap()).unwrap();
    assert_eq!(user["first_name"], "Harry");
}

#[tokio::test]
async fn results_out_of_range_are_refused() {
    let kafka = TestKafka::new();
    let server = FakeRandomUser::start(vec![Reply::json(200, fixture_page())]).await;
    let config = config(&kafka, &server);
    let producer = userpipe::kafka::producer(&config.kafka).unwrap();
    for count in [0, 5001] {
        let error = fetch::run(&config, &producer, count, Uuid::new_v4())
            .await
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!("results must be between 1 and 5000, not {count}")
        );
    }
    assert!(server.seen().is_empty());
}
