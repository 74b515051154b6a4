//! Exit codes, decided in one place from what a command found (README.md, "Exit codes"): 0 success,
//! 1 a failure or an error, 2 a usage error (clap's own), 3 and 4 `pgconf`'s verdicts.

use std::process::ExitCode;

use crate::pg::conf;

/// Every exit code userpipe uses, with its meaning as README.md's "Exit codes" table states it.
pub const CODES: [(u8, &str); 5] = [
    (
        0,
        "success: the command did what it was asked, and what it checked is right",
    ),
    (
        1,
        "failure: an error, a failed run or verification, an invalid file, a process not ready",
    ),
    (
        2,
        "usage error: an unknown command or flag, a missing or malformed argument (clap)",
    ),
    (
        3,
        "`pgconf check|apply`: a setting drifts from `pgconf.file`",
    ),
    (
        4,
        "`pgconf check|apply`: every setting is written, some wait for a PostgreSQL restart",
    ),
];

/// The exit code of a usage error: clap's own, which it uses when it refuses the arguments.
pub const USAGE: u8 = 2;
/// `pgconf check|apply`: a setting drifts.
pub const DRIFT: u8 = 3;
/// `pgconf check|apply`: a restart is needed (and nothing drifts).
pub const RESTART_NEEDED: u8 = 4;

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
    /// The process's exit code (`CODES`).
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success | Outcome::Pgconf(conf::Outcome::InForce) => 0,
            Outcome::Failed => 1,
            Outcome::Pgconf(conf::Outcome::Drift) => DRIFT,
            Outcome::Pgconf(conf::Outcome::RestartNeeded) => RESTART_NEEDED,
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
        assert_eq!(Outcome::Pgconf(conf::Outcome::Drift).code(), 3);
        assert_eq!(Outcome::Pgconf(conf::Outcome::RestartNeeded).code(), 4);
        assert_eq!(success_if(false), Outcome::Failed);
    }

    #[test]
    fn every_outcome_has_its_own_listed_code_and_none_is_clap_s() {
        let outcomes = [
            Outcome::Success,
            Outcome::Failed,
            Outcome::Pgconf(conf::Outcome::Drift),
            Outcome::Pgconf(conf::Outcome::RestartNeeded),
        ];
        let codes: Vec<u8> = outcomes.iter().map(|o| o.code()).collect();
        for code in &codes {
            assert!(CODES.iter().any(|(c, _)| c == code), "{code} is not listed");
            assert_ne!(*code, USAGE, "clap exits {USAGE} for a usage error");
        }
        let distinct: std::collections::BTreeSet<u8> = codes.iter().copied().collect();
        assert_eq!(distinct.len(), codes.len(), "each outcome has its own code");
        assert_eq!(
            clap::error::Error::<clap::error::DefaultFormatter>::new(
                clap::error::ErrorKind::UnknownArgument
            )
            .exit_code(),
            i32::from(USAGE)
        );
    }
}
