//! Per-run logs in PostgreSQL `job_run_logs`: the lines [`super::capture`] takes from the log events of a
//! run, written in batches by the journal's writer, bounded to a run's last [`KEPT_PER_RUN`] lines, and
//! read back for `userpipe jobs logs` and `GET /api/jobs/{run_id}/logs`.
//!
//! Lines are numbered per run from 1. A gap in the numbers is where lines were dropped: the oldest ones
//! past the bound, or lines that found the writer's queue full (a run never waits for its log).

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The lines a run keeps: its last 1,000.
pub const KEPT_PER_RUN: i64 = 1000;

/// One log event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LogLine {
    #[serde(skip)]
    pub run_id: Uuid,
    /// The line's number in its run, from 1.
    pub seq: i64,
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// Where the event comes from (`userpipe::pg::program`, ...).
    pub target: String,
    pub message: String,
    /// The event's other fields (`program`, `error`, ...), as a JSON object.
    pub fields: serde_json::Value,
}

/// For each run in `lines`, the first line number it keeps once these lines are written: `(run, seq)`
/// pairs for the runs that went past [`KEPT_PER_RUN`]. Pure.
pub fn keep_from(lines: &[LogLine]) -> Vec<(Uuid, i64)> {
    let mut newest: HashMap<Uuid, i64> = HashMap::new();
    for line in lines {
        let seq = newest.entry(line.run_id).or_insert(line.seq);
        *seq = (*seq).max(line.seq);
    }
    let mut bounds: Vec<(Uuid, i64)> = newest
        .into_iter()
        .filter(|(_, seq)| *seq > KEPT_PER_RUN)
        .map(|(run, seq)| (run, seq - KEPT_PER_RUN + 1))
        .collect();
    bounds.sort();
    bounds
}

/// Writes `lines` and deletes what falls out of each run's bound, in one transaction.
pub async fn insert(pool: &PgPool, lines: &[LogLine]) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO job_run_logs (run_id, seq, attempt, at, level, target, message, fields) \
         SELECT r, s, a, t, l, g, m, f::jsonb \
         FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::timestamptz[], $5::text[], $6::text[], \
                     $7::text[], $8::text[]) AS u(r, s, a, t, l, g, m, f) \
         ON CONFLICT (run_id, seq) DO NOTHING",
    )
    .bind(lines.iter().map(|l| l.run_id).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.seq).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.attempt).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.at).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.level.clone()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.target.clone()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.message.clone()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.fields.to_string()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let bounds = keep_from(lines);
    if !bounds.is_empty() {
        let (runs, from): (Vec<Uuid>, Vec<i64>) = bounds.into_iter().unzip();
        sqlx::query(
            "DELETE FROM job_run_logs l USING unnest($1::uuid[], $2::bigint[]) AS k(run_id, keep_from) \
             WHERE l.run_id = k.run_id AND l.seq < k.keep_from",
        )
        .bind(runs)
        .bind(from)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A run's lines numbered after `after`, oldest first, at most `limit`.
pub async fn read(
    pool: &PgPool,
    run_id: Uuid,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<LogLine>> {
    sqlx::query_as(
        "SELECT run_id, seq, attempt, at, level, target, message, fields FROM job_run_logs \
         WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("cannot read the run's log")
}

/// A line as `jobs logs --json` and `GET /api/jobs/{run_id}/logs` show it: with the number of lines
/// dropped just before it (the bound, or a full queue).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    #[serde(flatten)]
    pub line: LogLine,
    pub dropped_before: i64,
}

/// `lines`, read after line `after`, with the gaps in their numbering. Pure.
pub fn entries(after: i64, lines: Vec<LogLine>) -> Vec<LogEntry> {
    let mut previous = after;
    lines
        .into_iter()
        .map(|line| {
            let dropped_before = (line.seq - previous - 1).max(0);
            previous = line.seq;
            LogEntry {
                line,
                dropped_before,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(run_id: Uuid, seq: i64) -> LogLine {
        LogLine {
            run_id,
            seq,
            attempt: 1,
            at: Utc::now(),
            level: "INFO".into(),
            target: "userpipe".into(),
            message: format!("line {seq}"),
            fields: serde_json::json!({}),
        }
    }

    #[test]
    fn a_run_keeps_its_last_thousand_lines() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let lines: Vec<LogLine> = (995..=1003)
            .map(|seq| line(a, seq))
            .chain([line(b, 7)])
            .collect();
        assert_eq!(keep_from(&lines), [(a, 4)], "1003 - 1000 + 1");
        assert_eq!(keep_from(&[line(a, 1000)]), []);
        assert_eq!(keep_from(&[line(a, 1001)]), [(a, 2)]);
    }

    #[test]
    fn gaps_in_the_numbering_are_dropped_lines() {
        let a = Uuid::from_u128(1);
        let lines = vec![line(a, 5), line(a, 6), line(a, 9)];
        let gaps = |after| -> Vec<i64> {
            entries(after, lines.clone())
                .iter()
                .map(|e| e.dropped_before)
                .collect()
        };
        assert_eq!(gaps(0), [4, 0, 2]);
        assert_eq!(gaps(4), [0, 0, 2]);
        assert!(entries(0, Vec::new()).is_empty());
        let json = serde_json::to_value(&entries(0, vec![line(a, 1)])[0]).unwrap();
        assert_eq!(json["seq"], 1);
        assert_eq!(json["dropped_before"], 0);
        assert_eq!(json["message"], "line 1");
        assert!(json.get("run_id").is_none(), "the run id is the request's");
    }
}
