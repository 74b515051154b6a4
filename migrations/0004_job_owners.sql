-- Who runs what: every process that journals registers here and holds, for its lifetime, a session advisory
-- lock keyed by `lock_key`; a run still `running` is marked abandoned only once its owner is provably gone.
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS owner uuid;

CREATE TABLE IF NOT EXISTS job_owners (
    owner             uuid PRIMARY KEY,
    instance          text NOT NULL,
    lock_key          integer NOT NULL,
    -- pg_postmaster_start_time() when the owner last took its lock
    server_started_at timestamptz NOT NULL,
    registered_at     timestamptz NOT NULL DEFAULT now()
);
