//! Checks of the repository's own files that need no running stack and no network: the deployment files
//! against each other and the code, and the shape of `src/` against ARCHITECTURE.md.

mod deploy;
mod layering;
