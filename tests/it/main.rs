//! Integration tests: one binary, run against the real Kafka broker and PostgreSQL server that
//! `scripts/stack up` starts (its `scripts/stack env` says where they listen).

mod bench;
mod dlq;
mod faults;
mod fetch;
mod hostile;
mod http;
mod old_scripts;
mod pg;
mod pipeline;
mod runs;
mod scheduler;
mod secrets;
mod shutdown;
mod sink;
mod smoke;
mod status;
mod support;
