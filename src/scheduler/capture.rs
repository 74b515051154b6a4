//! The capture of a run's log: a `tracing` layer that copies every event recorded inside a run's span
//! into that run's log. The runner opens a `run` span (with `run_id`) around a run and an `attempt` span
//! (with `attempt`) around each attempt; the jobs of `pipeline` and `pg` only emit events and know
//! nothing of this. A line goes to the journal's queue with `try_send`: a full queue drops the line
//! (its number is then missing from the run's log), it never delays the run.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

use super::runlog::LogLine;

/// The name of the span around a whole run; its `run_id` field names the run.
pub const RUN_SPAN: &str = "job_run";
/// The name of the span around one attempt; its `attempt` field is the attempt's number.
pub const ATTEMPT_SPAN: &str = "attempt";
/// Where the two spans come from: a span of another module with the same name is none of them.
const SPAN_TARGET: &str = "userpipe::scheduler";

/// Where one run's lines go, and the number of its next line.
struct RunSink {
    run_id: Uuid,
    queue: mpsc::Sender<LogLine>,
    seq: AtomicI64,
}

/// The runs whose logs are kept, by run id: a `run` span opened for one of them captures its events.
static ATTACHED: LazyLock<Mutex<HashMap<Uuid, Arc<RunSink>>>> = LazyLock::new(Default::default);

fn attached() -> std::sync::MutexGuard<'static, HashMap<Uuid, Arc<RunSink>>> {
    ATTACHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the log of run `run_id` while it lives: events inside a `run` span for that id, opened after
/// this, go to `queue`.
pub struct Attached {
    run_id: Uuid,
}

/// Starts keeping the log of `run_id`, into `queue`.
pub fn attach(run_id: Uuid, queue: mpsc::Sender<LogLine>) -> Attached {
    let sink = RunSink {
        run_id,
        queue,
        seq: AtomicI64::new(1),
    };
    attached().insert(run_id, Arc::new(sink));
    Attached { run_id }
}

impl Drop for Attached {
    fn drop(&mut self) {
        attached().remove(&self.run_id);
    }
}

/// The layer: install it beside the log output (`cli::process`); the same filter applies to both, so a
/// run's log holds exactly the events the process logs for it.
#[derive(Debug, Default, Clone, Copy)]
pub struct CaptureLayer;

/// What a `run` or `attempt` span carries for the layer.
enum Mark {
    /// A run whose log is kept.
    Run(Arc<RunSink>),
    /// A run whose log is not kept (its journal writes no table): nothing inside it is kept elsewhere.
    Unkept,
    Attempt(i32),
}

impl<S> tracing_subscriber::Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let (name, target) = (attrs.metadata().name(), attrs.metadata().target());
        if (name != RUN_SPAN && name != ATTEMPT_SPAN) || !target.starts_with(SPAN_TARGET) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mark = if name == RUN_SPAN {
            let Some(run_id) = fields.fields.get("run_id").and_then(Value::as_str) else {
                return;
            };
            let sink = run_id
                .parse::<Uuid>()
                .ok()
                .and_then(|id| attached().get(&id).cloned());
            sink.map_or(Mark::Unkept, Mark::Run)
        } else {
            let attempt = fields.fields.get("attempt").and_then(Value::as_i64);
            Mark::Attempt(attempt.unwrap_or(1) as i32)
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(mark);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let mut attempt = None;
        let mut sink = None;
        for span in scope {
            match span.extensions().get::<Mark>() {
                Some(Mark::Attempt(n)) if attempt.is_none() => attempt = Some(*n),
                Some(Mark::Run(run)) => {
                    sink = Some(run.clone());
                    break;
                }
                Some(Mark::Unkept) => return,
                _ => {}
            }
        }
        let Some(sink) = sink else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let line = LogLine {
            run_id: sink.run_id,
            seq: sink.seq.fetch_add(1, Ordering::Relaxed),
            // Before the first attempt (guards, jitter, a skip) counts as the first.
            attempt: attempt.unwrap_or(1),
            at: Utc::now(),
            level: metadata.level().as_str().to_owned(),
            target: metadata.target().to_owned(),
            message: fields.message,
            fields: Value::Object(fields.fields),
        };
        // A full queue drops the line: the gap in the numbering shows it.
        let _ = sink.queue.try_send(line);
    }
}

/// An event's or span's fields: `message` apart, the rest as JSON.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

/// PostgreSQL's text and jsonb cannot hold NUL: a program's output might.
fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(clean(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(clean(&format!("{value:?}"))));
    }
}

#[cfg(test)]
mod tests {
    use tracing::{info, info_span, warn};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn events_inside_a_run_are_numbered_with_their_attempt_and_the_rest_are_not_kept() {
        let subscriber = tracing_subscriber::registry().with(CaptureLayer);
        let (tx, mut rx) = mpsc::channel(10);
        let run_id = Uuid::new_v4();
        let other = Uuid::new_v4();
        tracing::subscriber::with_default(subscriber, || {
            let attached = attach(run_id, tx);
            info!(message = "outside any run");
            let run = info_span!("job_run", run_id = %run_id);
            let _run = run.enter();
            info!(message = "before the first attempt");
            for attempt in 1..=2 {
                let span = info_span!("attempt", attempt);
                let _attempt = span.enter();
                warn!(
                    message = "pg_basebackup: error: no\0space",
                    program = "pg_basebackup",
                    code = 28
                );
            }
            info_span!("job_run", run_id = %other).in_scope(|| info!("a run not attached"));
            drop(attached);
        });
        let mut lines = Vec::new();
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        let seen: Vec<(i64, i32, &str, &str)> = lines
            .iter()
            .map(|l| (l.seq, l.attempt, l.level.as_str(), l.message.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, 1, "INFO", "before the first attempt"),
                (2, 1, "WARN", "pg_basebackup: error: no\u{FFFD}space"),
                (3, 2, "WARN", "pg_basebackup: error: no\u{FFFD}space"),
            ]
        );
        assert_eq!(
            lines[1].fields,
            serde_json::json!({"program": "pg_basebackup", "code": 28})
        );
        assert!(lines.iter().all(|l| l.run_id == run_id));
        assert!(attached().get(&run_id).is_none(), "detached when dropped");
    }
}
