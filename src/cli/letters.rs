//! What the `dlq` commands print: the dead-letter topics by stage and reason, one letter (as text or JSON)
//! with its payload cut to an excerpt, and what a replay sent. Pure: each function returns the text.

use crate::pipeline::dlq::{self, ReplayReport, Shown, TopicSummary};

use super::output::table;

/// `dlq list`: each dead-letter topic's letters by stage and reason.
pub fn dlq_list(summaries: &[TopicSummary]) -> String {
    let header = [
        "TOPIC",
        "STAGE",
        "REASON",
        "LETTERS",
        "REPLAYED",
        "OLDEST (UTC)",
        "NEWEST (UTC)",
    ];
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    let mut rows = Vec::new();
    for summary in summaries {
        if summary.groups.is_empty() {
            let none = if summary.exists {
                "no letters"
            } else {
                "no such topic"
            };
            rows.push([
                summary.topic.clone(),
                "-".into(),
                none.into(),
                "0".into(),
                "0".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for group in &summary.groups {
            rows.push([
                summary.topic.clone(),
                group.stage.clone(),
                group.reason.clone(),
                group.count.to_string(),
                group.replayed.to_string(),
                time(group.oldest),
                time(group.newest),
            ]);
        }
    }
    table(header, rows)
}

/// `dlq show`: one letter, a field a line, its payload cut to an excerpt.
pub fn dlq_letter(shown: &Shown) -> String {
    let letter = &shown.letter;
    let time = letter.time.map_or_else(
        || "no time".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    let mut text = format!("{}  {time}  stage {}\n", letter.at, letter.stage);
    let origin = letter.origin.as_ref().map_or_else(
        || "unknown (no origin headers)".to_owned(),
        ToString::to_string,
    );
    let mut fields = vec![("origin", origin), ("error", letter.error.clone())];
    fields.extend(letter.previous_error.clone().map(|e| ("before", e)));
    fields.extend(letter.replayed_from.clone().map(|r| ("replay of", r)));
    fields.push((
        "replayed",
        shown
            .replayed_at
            .map_or_else(|| "no".to_owned(), |t| format!("yes, {}", t.to_rfc3339())),
    ));
    fields.extend(letter.key.as_ref().map(|k| ("key", dlq::excerpt(k, 100))));
    let payload = match &letter.payload_dropped {
        Some(why) => format!("(none: {why})"),
        None => dlq::excerpt(&letter.payload, dlq::EXCERPT_BYTES),
    };
    fields.push(("payload", payload));
    for (label, value) in fields {
        text.push_str(&format!("  {label:<9} {}\n", value.replace('\n', " ")));
    }
    text
}

/// `dlq show --json`: one letter as a JSON object; the payload whole, or an excerpt when `excerpt`.
pub fn dlq_letter_json(shown: &Shown, excerpt: bool) -> serde_json::Value {
    let letter = &shown.letter;
    let payload = if excerpt {
        dlq::excerpt(&letter.payload, dlq::EXCERPT_BYTES)
    } else {
        String::from_utf8_lossy(&letter.payload).into_owned()
    };
    serde_json::json!({
        "topic": letter.at.topic,
        "partition": letter.at.partition,
        "offset": letter.at.offset,
        "time": letter.time,
        "origin": letter.origin,
        "stage": letter.stage,
        "error": letter.error,
        "reason": letter.reason(),
        "previous_error": letter.previous_error,
        "replayed_from": letter.replayed_from,
        "replayed_at": shown.replayed_at,
        "payload_dropped": letter.payload_dropped,
        "key": letter.key.as_ref().map(|k| String::from_utf8_lossy(k)),
        "payload": payload,
        "payload_bytes": letter.payload.len(),
    })
}

/// `dlq replay`: what was sent back (or would be), and what was left and why.
pub fn dlq_replay(report: &ReplayReport) -> String {
    let verb = if report.dry_run { "would send" } else { "sent" };
    let to: Vec<String> = report
        .sent
        .iter()
        .map(|(topic, n)| format!("{n} to {topic}"))
        .collect();
    let mut text = format!(
        "{verb} {} letter(s) of {} back{}\n",
        report.total_sent(),
        report.topic,
        if to.is_empty() {
            String::new()
        } else {
            format!(": {}", to.join(", "))
        }
    );
    let skipped = [
        (report.replayed_before, "replayed before"),
        (report.not_chosen, "not chosen by --reason"),
        (report.without_origin, "without origin headers"),
    ];
    let skipped: Vec<String> = skipped
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
    if !skipped.is_empty() {
        text.push_str(&format!("left: {}\n", skipped.join(", ")));
    }
    if !report.without_payload.is_empty() {
        text.push_str(&format!(
            "left {} letter(s) without their payload (too large for the dead-letter topic); the originals are at {}\n",
            report.without_payload.len(),
            report.without_payload.join(", ")
        ));
    }
    text
}
