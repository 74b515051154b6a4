//! The machine's ceiling, measured in the same run as the pipeline: rows shaped like `random_users`
//! written by one binary `COPY` into a fresh table with the same primary key. No client does less work
//! per row than this, so the pipeline's rates are reported as a share of it.

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::pipeline::fetch::generator::Generator;
use crate::pipeline::record::copy::{COLUMNS, CopyRows};
use crate::pipeline::record::{self, Enrichment, Record};

/// Rows of the ceiling's `COPY` unless told otherwise.
pub const CEILING_ROWS: usize = 200_000;

/// The ceiling's figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    pub rows: usize,
    /// From the start of the `COPY` to its commit.
    pub seconds: f64,
}

impl Ceiling {
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-6)
    }
}

/// Generates `rows` users as the pipeline would write them, then times one `COPY` of them into a fresh
/// table like `random_users` (dropped afterwards).
pub async fn measure(pool: &PgPool, rows: usize) -> anyhow::Result<Ceiling> {
    let stream = copy_stream(rows)?;
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS copy_ceiling; \
         CREATE TABLE copy_ceiling (LIKE random_users INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
    )
    .execute(pool)
    .await
    .context("cannot create the ceiling's table")?;
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY copy_ceiling ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .context("cannot start the ceiling's copy")?;
    for chunk in stream.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let written = copy.finish().await.context("the ceiling's copy failed")?;
    let seconds = started.elapsed().as_secs_f64();
    drop(conn);
    sqlx::raw_sql("DROP TABLE copy_ceiling")
        .execute(pool)
        .await
        .context("cannot drop the ceiling's table")?;
    anyhow::ensure!(
        written == rows as u64,
        "the ceiling's copy wrote {written} rows of {rows}"
    );
    Ok(Ceiling { rows, seconds })
}

/// `rows` generated users, through both stages, as one binary `COPY` stream.
fn copy_stream(rows: usize) -> anyhow::Result<Vec<u8>> {
    let mut generator = Generator::new(Some(7));
    let stamp = record::timestamp_text(Utc::now());
    let mut stream = CopyRows::with_capacity(rows);
    for _ in 0..rows {
        let user = record::user_from_randomuser(&generator.result(), Uuid::new_v4(), None)?;
        let payload = serde_json::to_vec(&user)?;
        let (_, stamped) =
            record::enrich_payload(Some(&payload), usize::MAX, Enrichment::Timestamp(&stamp))?;
        let (_, tagged) = record::enrich_payload(Some(&stamped), usize::MAX, Enrichment::Tags)?;
        stream.push(&record::row_from(&Record::parse(
            Some(&tagged),
            usize::MAX,
        )?)?);
    }
    Ok(stream.finished())
}
