-- The users table: the seed's columns with proper types, plus what operations need.
CREATE TABLE IF NOT EXISTS random_users (
    id              uuid PRIMARY KEY,
    first_name      text NOT NULL,
    last_name       text NOT NULL,
    gender          text NOT NULL,
    address         text NOT NULL,
    post_code       text NOT NULL,
    email           text NOT NULL,
    username        text NOT NULL,
    dob             timestamptz NOT NULL,
    registered_date timestamptz NOT NULL,
    phone           text NOT NULL,
    picture         text NOT NULL,
    majors          text NOT NULL,
    hobbies         text NOT NULL,
    -- stage 1's `timestamp`
    enriched_at     timestamptz NOT NULL,
    -- when the sink's transaction wrote the row
    ingested_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the `userpipe fetch` run that published the user; NULL for users from the old scripts
    fetch_run_id    uuid
);

