//! `userpipe bench`: the pipeline measured against the machine's own ceiling, in one run.
//!
//! - [`run`]: one run: fresh topics and database, the ceiling, the pipeline's processes, the publisher,
//!   watching the rows arrive; removes what it made.
//! - [`ceiling`]: one binary `COPY` of rows shaped like `random_users`, the rate no client can beat.
//! - [`replicas`]: `userpipe run --roles timestamp,tags,sink` as child processes, and what the kernel
//!   accounts to them (CPU time, memory).
//! - [`publish`]: generated users into the users topic, flat out or at a steady rate.
//! - [`figures`]: the figures and how they are printed. Pure.

pub mod ceiling;
pub mod figures;
pub mod publish;
pub mod replicas;
pub mod run;

pub use ceiling::CEILING_ROWS;
pub use figures::Figures;
pub use run::{BenchOptions, run};
