//! The dead-letter tools against the real broker and server: rows the database refuses are set aside,
//! looked at, replayed once the cause is fixed, and never sent twice.

use std::collections::HashSet;
use std::process::Output;
use std::time::Duration;

use rdkafka::Message;
use serde_json::Value;
use userpipe::config::{Config, dead_letter_topic};
use userpipe::kafka::header;
use uuid::Uuid;

use crate::pipeline::{Pipeline, generated_users, publish_users, wait_for_rows};
use crate::support::{
    self, TestDb, TestKafka, config_for, consume, prepare, total, userpipe_output, wait_for,
};

/// `userpipe <args>`, which must exit 0; its stdout.
fn dlq(config: &Config, dir: &std::path::Path, args: &[&str]) -> String {
    let out: Output = userpipe_output(config, dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "userpipe {args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits until `topic` holds `n` messages, and checks it holds no more.
async fn wait_for_messages(config: &Config, topic: &str, n: i64) {
    wait_for(
        &format!("{n} messages in {topic}"),
        Duration::from_secs(60),
        || async { (total(config, topic) >= n).then_some(()) },
    )
    .await;
    assert_eq!(total(config, topic), n, "exactly {n} messages in {topic}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_constraint_refused_are_replayed_into_the_table_exactly_once() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    let dir = tempfile::tempdir().unwrap();
    prepare(&config, &db.pool).await;
    let constraint = "ALTER TABLE random_users ADD CONSTRAINT no_female CHECK (gender <> 'female')";
    sqlx::query(constraint).execute(&db.pool).await.unwrap();
    let users = generated_users(120, 16, None);
    let refused_ids: HashSet<String> = users
        .iter()
        .filter(|u| u["gender"] == "female")
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let refused = refused_ids.len() as i64;
    assert!(refused > 10 && refused < 110, "{refused} of 120 refused");
    let (enriched, letters) = (
        config.topics.enriched.clone(),
        dead_letter_topic(&config.topics.enriched),
    );

    let pipeline = Pipeline::start(&config);
    publish_users(&config, &users).await;
    wait_for_rows(&db.pool, 120 - refused, Duration::from_secs(60)).await;
    wait_for_messages(&config, &letters, refused).await;

    // What was set aside, and why.
    let shown = dlq(
        &config,
        dir.path(),
        &["dlq", "show", &letters, "--json", "--limit", "1000"],
    );
    let shown: Vec<Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len() as i64, refused);
    for letter in &shown {
        assert_eq!(letter["stage"], "sink");
        assert_eq!(letter["origin"]["topic"], enriched.as_str());
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("no_female"), "{error}");
        // PostgreSQL's words and code, not the server's source line sqlx would append ("at line 2074").
        assert!(error.ends_with("(SQLSTATE 23514)"), "{error}");
        let payload: Value = serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
        assert!(refused_ids.contains(payload["id"].as_str().unwrap()));
    }
    let two = dlq(
        &config,
        dir.path(),
        &[
            "dlq",
            "show",
            &letters,
            "--reason",
            "NO_FEMALE",
            "--limit",
            "2",
        ],
    );
    assert!(
        two.ends_with(&format!("2 of {refused} letter(s) of {letters}\n")),
        "{two}"
    );
    let none = dlq(
        &config,
        dir.path(),
        &["dlq", "show", &letters, "--reason", "missing field"],
    );
    assert_eq!(none, format!("0 of 0 letter(s) of {letters}\n"));

    // A dry run sends nothing and records nothing.
    let before = total(&config, &enriched);
    let said = dlq(
        &config,
        dir.path(),
        &["dlq", "replay", &letters, "--dry-run"],
    );
    assert_eq!(
        said,
        format!("would send {refused} letter(s) of {letters} back: {refused} to {enriched}\n")
    );
    assert_eq!(total(&config, &enriched), before, "a dry run sends nothing");
    // Reading needs no schema: on a database never migrated, show and a dry run read every letter as
    // never replayed, and make no table.
    let bare = TestDb::new().await;
    let bare_config = config_for(&kafka, &bare.url());
    let dry = dlq(
        &bare_config,
        dir.path(),
        &["dlq", "replay", &letters, "--dry-run"],
    );
    assert_eq!(dry, said, "the same dry run on a database never migrated");
    let shown = dlq(
        &bare_config,
        dir.path(),
        &["dlq", "show", &letters, "--limit", "1000"],
    );
    assert!(
        shown.ends_with(&format!("{refused} of {refused} letter(s) of {letters}\n")),
        "{shown}"
    );
    let made: Option<String> = sqlx::query_scalar("SELECT to_regclass('dlq_replays')::text")
        .fetch_one(&bare.pool)
        .await
        .unwrap();
    assert_eq!(made, None, "reading the letters migrated the database");

    // Replayed while the constraint still holds: each fails again, and comes back with both reasons.
    let said = dlq(&config, dir.path(), &["dlq", "replay", &letters]);
    assert_eq!(
        said,
        format!("sent {refused} letter(s) of {letters} back: {refused} to {enriched}\n")
    );
    wait_for_messages(&config, &letters, 2 * refused).await;
    let again = consume(
        &config.kafka.brokers,
        &letters,
        2 * refused as usize,
        Duration::from_secs(30),
    )
    .await;
    let second: Vec<_> = again
        .iter()
        .filter(|m| support::header(m, header::REPLAYED_FROM).is_some())
        .collect();
    assert_eq!(second.len() as i64, refused);
    for letter in &second {
        let now = support::header(letter, header::ERROR).unwrap();
        let before = support::header(letter, header::PREVIOUS_ERROR).unwrap();
        assert!(
            now.contains("no_female") && before.contains("no_female"),
            "{now} / {before}"
        );
        let from = support::header(letter, header::REPLAYED_FROM).unwrap();
        assert!(from.starts_with(&format!("{letters}/")), "{from}");
    }
    assert_eq!(super::support::row_count(&db.pool).await, 120 - refused);

    // The cause is fixed: the next replay sends only the letters not replayed yet.
    sqlx::query("ALTER TABLE random_users DROP CONSTRAINT no_female")
        .execute(&db.pool)
        .await
        .unwrap();
    let said = dlq(&config, dir.path(), &["dlq", "replay", &letters]);
    assert_eq!(
        said,
        format!(
            "sent {refused} letter(s) of {letters} back: {refused} to {enriched}\nleft: {refused} replayed before\n"
        )
    );
    wait_for_rows(&db.pool, 120, Duration::from_secs(60)).await;
    let ids: HashSet<String> = sqlx::query_scalar::<_, Uuid>("SELECT id FROM random_users")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    let all: HashSet<String> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, all, "every user is in the table once");

    // A second replay adds nothing.
    let said = dlq(&config, dir.path(), &["dlq", "replay", &letters]);
    assert_eq!(
        said,
        format!(
            "sent 0 letter(s) of {letters} back\nleft: {} replayed before\n",
            2 * refused
        )
    );
    assert_eq!(
        total(&config, &enriched),
        120 + 2 * refused,
        "nothing sent twice"
    );
    assert_eq!(
        total(&config, &letters),
        2 * refused,
        "nothing failed after the fix"
    );

    // Each replay names the letter it came from.
    let flowed = consume(
        &config.kafka.brokers,
        &enriched,
        (120 + 2 * refused) as usize,
        Duration::from_secs(30),
    )
    .await;
    let named: HashSet<String> = flowed
        .iter()
        .filter_map(|m| support::header(m, header::REPLAYED_FROM))
        .collect();
    assert_eq!(named.len() as i64, 2 * refused, "each letter replayed once");
    let letter_names: HashSet<String> = again
        .iter()
        .map(|m| format!("{letters}/{}/{}", m.partition(), m.offset()))
        .collect();
    assert_eq!(named, letter_names);

    // The summary: one group, every letter replayed.
    let listed = dlq(&config, dir.path(), &["dlq", "list"]);
    let row: Vec<&str> = listed
        .lines()
        .find(|l| l.starts_with(&format!("{letters} ")))
        .unwrap_or_else(|| panic!("{letters} in\n{listed}"))
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row[1], "sink", "{listed}");
    assert!(row[2].starts_with("database refused the row"), "{listed}");
    assert_eq!(
        row[3..5],
        [(2 * refused).to_string(), (2 * refused).to_string()],
        "{listed}"
    );
    let users_letters = dead_letter_topic(&config.topics.users);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&users_letters) && l.contains("no letters")),
        "{listed}"
    );
    pipeline.stop().await;
}
