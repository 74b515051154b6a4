//! What `pgconf check`, `diff` and `apply` print. Pure.

use std::path::Path;

use super::compare::{Comparison, Outcome, State, names_in};
use super::server::Applied;

/// `pgconf check`: one line per setting and a verdict.
pub fn render_check(file: &Path, comparisons: &[Comparison]) -> String {
    let width = comparisons.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in comparisons {
        let state = match c.state {
            State::InForce => format!("in force: {}", c.live),
            State::RestartNeeded => format!(
                "waits for a restart: {} now, {} after the restart",
                c.live, c.wanted
            ),
            State::Drift => format!("drift: {} now, {} wanted", c.live, c.wanted),
        };
        out.push_str(&format!("{:<width$}  {state}\n", c.name));
    }
    out.push_str(&match Outcome::of(comparisons) {
        Outcome::InForce => format!("every setting of {} is in force\n", file.display()),
        Outcome::Drift => format!(
            "drift: {} differ from {}; `userpipe pgconf apply` writes them\n",
            names_in(comparisons, State::Drift).join(", "),
            file.display()
        ),
        Outcome::RestartNeeded => format!(
            "restart needed: {} take effect when PostgreSQL restarts\n",
            names_in(comparisons, State::RestartNeeded).join(", ")
        ),
    });
    out
}

/// `pgconf diff`: the settings that differ, server first (`-`), desired second (`+`).
pub fn render_diff(file: &Path, comparisons: &[Comparison]) -> String {
    let mut out = format!("--- the running server\n+++ {}\n", file.display());
    for c in comparisons.iter().filter(|c| c.state != State::InForce) {
        out.push_str(&format!("-{} = {}\n", c.name, quote_conf(&c.live)));
        let note = match c.state {
            State::RestartNeeded => "    # written; waits for a restart",
            _ => "",
        };
        out.push_str(&format!("+{} = {}{note}\n", c.name, quote_conf(&c.wanted)));
    }
    out
}

/// A value in postgresql.conf quoting.
pub fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// `pgconf apply`: what was written, what is in force, what waits for a restart.
pub fn render_applied(applied: &Applied) -> String {
    let mut out = String::new();
    for name in &applied.altered {
        let wanted = applied
            .after
            .iter()
            .find(|c| &c.name == name)
            .map(|c| c.wanted.as_str())
            .unwrap_or_default();
        out.push_str(&format!(
            "wrote {name} = {} (ALTER SYSTEM)\n",
            quote_conf(wanted)
        ));
    }
    if applied.reloaded {
        out.push_str("reloaded the configuration (pg_reload_conf)\n");
    }
    let in_force = names_in(&applied.after, State::InForce);
    if !in_force.is_empty() {
        out.push_str(&format!("in force: {}\n", in_force.join(", ")));
    }
    let restart = names_in(&applied.after, State::RestartNeeded);
    if !restart.is_empty() {
        out.push_str(&format!(
            "RESTART NEEDED: {} take effect only when PostgreSQL restarts; userpipe does not restart it\n",
            restart.join(", ")
        ));
    }
    let drift = names_in(&applied.after, State::Drift);
    if !drift.is_empty() {
        out.push_str(&format!(
            "still not in force after the reload: {}\n",
            drift.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering() {
        let c = |name: &str, wanted: &str, live: &str, state| Comparison {
            name: name.into(),
            wanted: wanted.into(),
            live: live.into(),
            file: None,
            state,
            line: 1,
        };
        let comparisons = [
            c("wal_level", "replica", "replica", State::InForce),
            c("archive_mode", "on", "off", State::RestartNeeded),
            c("archive_timeout", "60s", "0", State::Drift),
        ];
        let file = Path::new("pgconf/archiving.conf");
        assert_eq!(
            render_check(file, &comparisons),
            "wal_level        in force: replica\n\
             archive_mode     waits for a restart: off now, on after the restart\n\
             archive_timeout  drift: 0 now, 60s wanted\n\
             drift: archive_timeout differ from pgconf/archiving.conf; `userpipe pgconf apply` writes them\n"
        );
        assert_eq!(
            render_diff(file, &comparisons),
            "--- the running server\n+++ pgconf/archiving.conf\n\
             -archive_mode = 'off'\n+archive_mode = 'on'    # written; waits for a restart\n\
             -archive_timeout = '0'\n+archive_timeout = '60s'\n"
        );
    }
}
