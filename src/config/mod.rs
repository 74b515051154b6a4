//! Configuration: `userpipe.toml`, then the environment ([`env`]: one rule for every key), parsed once at
//! start into checked types ([`load`]), remembering where each value came from. Every key is listed in
//! README.md; keep the two in step.

pub mod env;
mod load;
mod secret;
mod sections;
#[cfg(test)]
mod tests;

pub use env::{ENV_OVERRIDES, Origin, Origins, PROCESS_VARIABLES, variable_of};
pub use load::{Config, DEFAULT_FILE};
pub use secret::{Secret, is_secret_parameter, redact_url, redact_webhook, split_password};
pub use sections::*;
