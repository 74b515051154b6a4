//! `GET /api/pipeline`: the status page's pipeline charts, from the samples this process keeps in memory:
//! per stage the messages per second and the consumer lag over the last hour, the sink's rows per second,
//! the counts since start, and the messages in each dead-letter topic.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::samples::{self, DeadLetters, STAGES, StageSeries};
use super::state::{HttpState, RoleState};
use crate::config::dead_letter_topic;
use crate::metrics::{METRICS, StageTotals};

/// One stage: where it reads, whether it runs here, and its columns.
#[derive(Debug, Serialize)]
pub struct StageView {
    pub input: String,
    pub group: String,
    pub dead_letter_topic: String,
    /// Whether this process runs the stage's role (its rates are this process's only).
    pub running_here: bool,
    /// Counts since this process started.
    pub consumed_total: u64,
    pub produced_total: u64,
    pub dead_lettered_total: u64,
    #[serde(flatten)]
    pub series: StageSeries,
}

#[derive(Debug, Serialize)]
pub struct Pipeline {
    pub sample_every_seconds: u64,
    /// The end of each sampled interval, Unix milliseconds.
    pub at: Vec<i64>,
    pub stages: Vec<StageView>,
    /// Each dead-letter topic's size, as of the latest sample.
    pub dead_letters: Vec<DeadLetters>,
}

pub async fn pipeline(State(state): State<HttpState>) -> Json<Pipeline> {
    let series = state
        .samples
        .ring
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .series();
    let dead_letters = state
        .samples
        .dead_letters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let roles = state.roles.snapshot();
    let (groups, inputs) = (
        samples::groups(&state.config),
        samples::inputs(&state.config),
    );
    let stages = series
        .stages
        .into_iter()
        .zip(STAGES)
        .enumerate()
        .map(|(i, (series, stage))| {
            let StageTotals {
                consumed,
                produced,
                dead_lettered,
            } = METRICS.stage_totals(stage);
            StageView {
                dead_letter_topic: dead_letter_topic(&inputs[i]),
                input: inputs[i].clone(),
                group: groups[i].clone(),
                running_here: roles.get(stage) == Some(&RoleState::Running),
                consumed_total: consumed,
                produced_total: produced,
                dead_lettered_total: dead_lettered,
                series,
            }
        })
        .collect();
    Json(Pipeline {
        sample_every_seconds: samples::SAMPLE_EVERY.as_secs(),
        at: series.at,
        stages,
        dead_letters,
    })
}
