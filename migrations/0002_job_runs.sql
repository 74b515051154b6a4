-- The journal: one row per attempt of every job run.
CREATE TABLE IF NOT EXISTS job_runs (
    run_id        uuid NOT NULL,
    attempt       integer NOT NULL,
    schedule      text NOT NULL,
    job           text NOT NULL,
    trigger       text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'start')),
    scheduled_for timestamptz,
    status        text NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'skipped', 'abandoned')),
    reason        text,
    error         text,
    detail        jsonb,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    duration_ms   bigint,
    instance      text NOT NULL,
    PRIMARY KEY (run_id, attempt)
);

CREATE INDEX IF NOT EXISTS job_runs_started_at ON job_runs (started_at DESC);
CREATE INDEX IF NOT EXISTS job_runs_running ON job_runs (status) WHERE status = 'running';

-- Claims: the replica that inserts a firing's row runs it; the others leave it.
CREATE TABLE IF NOT EXISTS job_firings (
    schedule      text NOT NULL,
    scheduled_for timestamptz NOT NULL,
    run_id        uuid NOT NULL,
    instance      text NOT NULL,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, scheduled_for)
);
