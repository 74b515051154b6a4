-- Per-run logs: every log event emitted while a run executes, numbered per run. A run keeps its last
-- 1,000 lines; a gap in `seq` is where lines were dropped (the bound, or the writer's queue when full).
CREATE TABLE IF NOT EXISTS job_run_logs (
    run_id   uuid NOT NULL,
    seq      bigint NOT NULL,
    attempt  integer NOT NULL,
    at       timestamptz NOT NULL,
    level    text NOT NULL,
    target   text NOT NULL,
    message  text NOT NULL,
    fields   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX IF NOT EXISTS job_run_logs_at ON job_run_logs (at);

-- How many attempts a run may make, so a reader knows when a run is over (its last attempt finished).
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS max_attempts integer NOT NULL DEFAULT 1;

-- History retention ranks each schedule's runs newest first; notifications ask for a schedule's last run.
CREATE INDEX IF NOT EXISTS job_runs_schedule_started_at ON job_runs (schedule, started_at DESC);
CREATE INDEX IF NOT EXISTS job_firings_scheduled_for ON job_firings (scheduled_for);
