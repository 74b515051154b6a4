//! Checks of the repository's own files that need no running stack and no network: the deployment files
//! against each other and the code, the alert rules against the metrics, the shape of `src/` against
//! ARCHITECTURE.md, and the command line against README.md.

mod alerts;
mod cli;
mod config;
mod deploy;
mod layering;
