//! Exit codes, decided in one place from what a command found (README.md, "Exit codes"): 0 success,
//! 1 a failure or an error, 2 a usage error (clap's own), and `pgconf`'s verdicts.

use std::process::ExitCode;

use crate::pg::conf;

/// What a command found, as far as its exit code goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked, and what it checked is right.
    Success,
    /// It ran, and what it checked is not right: a failed verification or run, an invalid schedule file,
    /// a process that is not ready.
    Failed,
    /// `pgconf check|apply`: the verdict on the settings.
    Pgconf(conf::Outcome),
}

impl Outcome {
    /// The process's exit code: 0 success, 1 a failure, 1 drift, 2 a restart is needed.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success | Outcome::Pgconf(conf::Outcome::InForce) => 0,
            Outcome::Failed | Outcome::Pgconf(conf::Outcome::Drift) => 1,
            Outcome::Pgconf(conf::Outcome::RestartNeeded) => 2,
        }
    }
}

/// `Success` when `ok`, else `Failed`.
pub fn success_if(ok: bool) -> Outcome {
    if ok {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

/// The exit code of a command that ended with `result`; an error is printed with its chain of causes.
pub fn exit_code(result: anyhow::Result<Outcome>) -> ExitCode {
    match result {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(error) => {
            eprintln!("userpipe: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Outcome::Success.code(), 0);
        assert_eq!(Outcome::Failed.code(), 1);
        assert_eq!(Outcome::Pgconf(conf::Outcome::InForce).code(), 0);
        assert_eq!(Outcome::Pgconf(conf::Outcome::Drift).code(), 1);
        assert_eq!(Outcome::Pgconf(conf::Outcome::RestartNeeded).code(), 2);
        assert_eq!(success_if(false), Outcome::Failed);
    }
}
