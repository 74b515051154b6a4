//! Point-in-time recovery's choices: the target (`--target-time`, `--target-lsn`, `--latest`), the backup
//! it needs (the newest verified one that ended before it), refusing a target the backups and the archive
//! cannot reach (saying what they can), and the recovery settings that reach it. Pure.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::pg::archive::Lsn;
use crate::pg::conf::render::quote_conf;

/// Where recovery stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every transaction committed up to this time (`recovery_target_time`, inclusive).
    Time(DateTime<Utc>),
    /// Up to this WAL position (`recovery_target_lsn`, inclusive).
    Lsn(Lsn),
    /// Everything the archive holds.
    Latest,
}

impl Target {
    /// `--target-time`: an RFC 3339 time with its offset (`2026-01-03T10:15:00Z`, `2026-01-03 11:15:00+01:00`).
    pub fn time(text: &str) -> Result<Target, String> {
        DateTime::parse_from_rfc3339(text.trim())
            .map(|t| Target::Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                format!(
                    "--target-time {text:?} is not an RFC 3339 time with its offset, e.g. 2026-01-03T10:15:00Z ({e})"
                )
            })
    }

    /// `--target-lsn`: `X/Y` as PostgreSQL prints it.
    pub fn lsn(text: &str) -> Result<Target, String> {
        Lsn::parse(text)
            .map(Target::Lsn)
            .ok_or_else(|| format!("--target-lsn {text:?} is not a WAL position such as 0/5000028"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Time(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.fZ")),
            Target::Lsn(lsn) => write!(f, "{lsn}"),
            Target::Latest => f.write_str("the end of the archive"),
        }
    }
}

/// A backup that recovery may start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// When the backup run finished (after its end, so a target after it is after the end).
    pub finished_at: DateTime<Utc>,
    /// Where the backup's WAL ends: recovery is consistent from there on.
    pub end_lsn: Lsn,
    /// Its latest verification passed.
    pub verified: bool,
}

/// How far the archive reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// The newest commit (or abort) in the archive, and the segment it is in: a time target must be
    /// before it, since recovery stops only at a transaction after its target.
    pub newest_commit: Option<(DateTime<Utc>, String)>,
    /// The end of the newest archived segment, and its name.
    pub end: Option<(Lsn, String)>,
}

/// The backup to restore for `target`: the newest verified one that ended before it. Refused, saying
/// what can be reached: no verified backup, a target before the oldest one, or after the archive.
pub fn choose<'a>(
    backups: &'a [Candidate],
    target: &Target,
    reach: &Reach,
) -> Result<&'a Candidate, String> {
    let mut verified: Vec<&Candidate> = backups.iter().filter(|b| b.verified).collect();
    verified.sort_by(|a, b| (a.finished_at, &a.id).cmp(&(b.finished_at, &b.id)));
    let (Some(oldest), Some(newest)) = (verified.first(), verified.last()) else {
        return Err("there is no verified backup to restore".into());
    };
    match target {
        Target::Latest => Ok(newest),
        Target::Time(time) => {
            let Some((commit, segment)) = &reach.newest_commit else {
                return Err(format!(
                    "the archive holds no transaction after backup {}, so no time can be recovered to: use --latest",
                    oldest.id
                ));
            };
            let available = format!(
                "the backups and the archive reach from {} (the end of backup {}) to just before {} (the \
                 newest commit in the archive, in {segment})",
                stamp(oldest.finished_at),
                oldest.id,
                stamp(*commit)
            );
            if time >= commit {
                return Err(format!(
                    "{} is not before the newest commit in the archive, so recovery would never reach it: {available}; \
                     --latest restores everything the archive holds",
                    stamp(*time)
                ));
            }
            verified
                .iter()
                .rev()
                .find(|b| b.finished_at < *time)
                .copied()
                .ok_or_else(|| {
                    format!(
                        "no verified backup ended before {}: {available}",
                        stamp(*time)
                    )
                })
        }
        Target::Lsn(lsn) => {
            let available = |end: &str| {
                format!(
                    "the backups and the archive reach from {} (the end of backup {}) to {end}",
                    oldest.end_lsn, oldest.id
                )
            };
            let Some((end, segment)) = &reach.end else {
                return Err("the archive holds no WAL segment, so no position can be recovered to: use --latest".into());
            };
            let end_text = format!("{end} (the end of {segment}, the newest archived segment)");
            if lsn > end {
                return Err(format!(
                    "{lsn} is after the archive's end: {}",
                    available(&end_text)
                ));
            }
            let mut by_end = verified.clone();
            by_end.sort_by(|a, b| (a.end_lsn, &a.id).cmp(&(b.end_lsn, &b.id)));
            by_end
                .iter()
                .rev()
                .find(|b| b.end_lsn <= *lsn)
                .copied()
                .ok_or_else(|| {
                    format!(
                        "no verified backup ended at or before {lsn}: {}",
                        available(&end_text)
                    )
                })
        }
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

/// The recovery settings that reach `target` with `restore_command`, then promote: the lines appended to
/// the restored copy's `postgresql.auto.conf`, and the names to `ALTER SYSTEM RESET` afterwards.
pub fn recovery_settings(target: &Target, restore_command: &str) -> Vec<(&'static str, String)> {
    let mut settings = vec![("restore_command", quote_conf(restore_command))];
    match target {
        Target::Time(t) => settings.push((
            "recovery_target_time",
            quote_conf(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()),
        )),
        Target::Lsn(lsn) => settings.push(("recovery_target_lsn", quote_conf(&lsn.to_string()))),
        Target::Latest => {}
    }
    settings.push(("recovery_target_timeline", quote_conf("latest")));
    settings.push(("recovery_target_action", quote_conf("promote")));
    settings
}

/// The newest commit (or abort) time in `pg_waldump` output (run with `TZ=UTC`): the lines of the
/// Transaction resource manager, `desc: COMMIT 2026-01-03 10:15:00.123456 UTC; ...`.
pub fn newest_commit(waldump: &str) -> Option<DateTime<Utc>> {
    waldump
        .lines()
        .filter_map(|line| {
            let desc = line.split_once("desc: ")?.1;
            let (kind, rest) = desc.split_once(' ')?;
            if !matches!(
                kind,
                "COMMIT" | "ABORT" | "COMMIT_PREPARED" | "ABORT_PREPARED"
            ) {
                return None;
            }
            // A prepared transaction's id comes first: `COMMIT_PREPARED 742: 2026-...`.
            let rest = rest
                .split_once(": ")
                .filter(|(id, _)| id.chars().all(|c| c.is_ascii_digit()))
                .map_or(rest, |(_, r)| r);
            let stamp = rest.split(" UTC").next()?;
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn backups() -> Vec<Candidate> {
        vec![
            Candidate {
                id: "a".into(),
                finished_at: at("2026-01-01T02:00:00Z"),
                end_lsn: Lsn(0x3000100),
                verified: true,
            },
            Candidate {
                id: "b".into(),
                finished_at: at("2026-01-02T02:00:00Z"),
                end_lsn: Lsn(0x6000100),
                verified: true,
            },
            Candidate {
                id: "c".into(),
                finished_at: at("2026-01-03T02:00:00Z"),
                end_lsn: Lsn(0x9000100),
                verified: false,
            },
        ]
    }

    fn reach() -> Reach {
        Reach {
            newest_commit: Some((
                at("2026-01-03T10:00:00Z"),
                "00000001000000000000000A".into(),
            )),
            end: Some((Lsn(0xB000000), "00000001000000000000000A".into())),
        }
    }

    fn chosen(target: Target) -> Result<String, String> {
        let backups = backups();
        choose(&backups, &target, &reach()).map(|b| b.id.clone())
    }

    #[test]
    fn the_newest_verified_backup_that_ended_before_the_target() {
        assert_eq!(
            chosen(Target::Latest).unwrap(),
            "b",
            "c failed verification"
        );
        assert_eq!(
            chosen(Target::Time(at("2026-01-01T12:00:00Z"))).unwrap(),
            "a"
        );
        assert_eq!(
            chosen(Target::Time(at("2026-01-03T09:59:59Z"))).unwrap(),
            "b"
        );
        assert_eq!(chosen(Target::Lsn(Lsn(0x5000000))).unwrap(), "a");
        assert_eq!(chosen(Target::Lsn(Lsn(0x6000100))).unwrap(), "b");
        assert_eq!(chosen(Target::Lsn(Lsn(0xB000000))).unwrap(), "b");
    }

    #[test]
    fn unreachable_targets_are_refused_saying_what_is_reachable() {
        let early = chosen(Target::Time(at("2025-12-31T00:00:00Z"))).unwrap_err();
        assert_eq!(
            early,
            "no verified backup ended before 2025-12-31T00:00:00Z: the backups and the archive reach from \
             2026-01-01T02:00:00Z (the end of backup a) to just before 2026-01-03T10:00:00Z (the newest commit \
             in the archive, in 00000001000000000000000A)"
        );
        let late = chosen(Target::Time(at("2026-01-03T10:00:00Z"))).unwrap_err();
        assert!(
            late.starts_with("2026-01-03T10:00:00Z is not before the newest commit in the archive"),
            "{late}"
        );
        assert!(
            late.ends_with("--latest restores everything the archive holds"),
            "{late}"
        );
        let early = chosen(Target::Lsn(Lsn(0x3000000))).unwrap_err();
        assert_eq!(
            early,
            "no verified backup ended at or before 0/3000000: the backups and the archive reach from \
             0/3000100 (the end of backup a) to 0/B000000 (the end of 00000001000000000000000A, the newest \
             archived segment)"
        );
        let late = chosen(Target::Lsn(Lsn(0xB000001))).unwrap_err();
        assert!(
            late.starts_with("0/B000001 is after the archive's end"),
            "{late}"
        );
        assert_eq!(
            choose(&[], &Target::Latest, &reach()).unwrap_err(),
            "there is no verified backup to restore"
        );
        let quiet = Reach {
            newest_commit: None,
            ..reach()
        };
        let backups = backups();
        assert!(
            choose(&backups, &Target::Time(at("2026-01-02T12:00:00Z")), &quiet)
                .unwrap_err()
                .ends_with("use --latest")
        );
    }

    #[test]
    fn targets_are_read_and_written_as_postgresql_wants_them() {
        assert_eq!(
            Target::time("2026-01-03 11:15:00.5+01:00").unwrap(),
            Target::Time(at("2026-01-03T10:15:00.5Z"))
        );
        assert!(
            Target::time("2026-01-03 10:15:00")
                .unwrap_err()
                .contains("with its offset")
        );
        assert_eq!(
            Target::lsn("0/5000028").unwrap(),
            Target::Lsn(Lsn(0x5000028))
        );
        assert!(Target::lsn("5000028").is_err());
        let settings = recovery_settings(
            &Target::Time(at("2026-01-03T10:15:00.5Z")),
            "cp '/a/%f' '%p'",
        );
        assert_eq!(
            settings,
            [
                ("restore_command", "'cp ''/a/%f'' ''%p'''".to_owned()),
                (
                    "recovery_target_time",
                    "'2026-01-03 10:15:00.500000+00'".to_owned()
                ),
                ("recovery_target_timeline", "'latest'".to_owned()),
                ("recovery_target_action", "'promote'".to_owned()),
            ]
        );
        let names: Vec<&str> = recovery_settings(&Target::Latest, "x")
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            names,
            [
                "restore_command",
                "recovery_target_timeline",
                "recovery_target_action"
            ]
        );
        assert_eq!(
            recovery_settings(&Target::Lsn(Lsn(0x5000028)), "x")[1].1,
            "'0/5000028'"
        );
    }

    #[test]
    fn the_newest_commit_is_read_from_pg_waldump() {
        let out = "rmgr: Heap        len (rec/tot):     59/    59, tx:        731, lsn: 0/03000060, prev 0/03000028, desc: INSERT off 2\n\
                   rmgr: Transaction len (rec/tot):     34/    34, tx:        731, lsn: 0/030000A0, prev 0/03000060, desc: COMMIT 2026-01-03 10:15:00.123456 UTC\n\
                   rmgr: Transaction len (rec/tot):     34/    34, tx:        732, lsn: 0/030000C8, prev 0/030000A0, desc: ABORT 2026-01-03 10:16:00.5 UTC\n\
                   rmgr: Transaction len (rec/tot):     66/    66, tx:        733, lsn: 0/030000F0, prev 0/030000C8, desc: COMMIT 2026-01-03 10:14:00.000001 UTC; inval msgs: catcache 21\n\
                   rmgr: Transaction len (rec/tot):     90/    90, tx:          0, lsn: 0/03000138, prev 0/030000F0, desc: COMMIT_PREPARED 742: 2026-01-03 10:17:00 UTC\n\
                   rmgr: Transaction len (rec/tot):     50/    50, tx:        734, lsn: 0/03000190, prev 0/03000138, desc: PREPARE gid x: 2026-01-03 11:00:00 UTC\n";
        assert_eq!(newest_commit(out), Some(at("2026-01-03T10:17:00Z")));
        assert_eq!(newest_commit("rmgr: XLOG desc: CHECKPOINT_ONLINE\n"), None);
    }
}
