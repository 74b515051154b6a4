-- Dead letters that `userpipe dlq replay` sent back to their origin topic, so that a second replay skips
-- them. A letter is its dead-letter topic, partition and offset; its timestamp tells a letter from one at
-- the same offset of a topic deleted and made again.
CREATE TABLE IF NOT EXISTS dlq_replays (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    letter_time  timestamptz,
    origin_topic text        NOT NULL,
    replayed_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
