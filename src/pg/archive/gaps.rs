//! The WAL gap check: does the archive hold every segment from a backup's first one to the newest
//! archived one, along the timelines recovery would follow ([`coverage`], pure)? [`read`] lists an
//! archive for it; [`check`] does both.
//!
//! The timeline followed is the newest one that descends from the backup's (its `.history` file names its
//! ancestors and where each was left); each segment is expected on the newest timeline of that line that
//! had begun by then, as recovery reads it. A segment of another size than the others counts as damaged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

use super::names::{Branch, SegmentSize, WalFile, parse_history};

/// What the archive holds, as the gap check reads it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Whole segments and their sizes.
    pub segments: BTreeMap<String, u64>,
    /// The `.history` files, read.
    pub histories: BTreeMap<u32, Vec<Branch>>,
}

/// What the check found from `from`, the first segment the oldest backup needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Coverage {
    /// Every segment from `from` to `to` is there.
    Complete {
        from: String,
        to: String,
        segments: u64,
    },
    /// `missing` is not there (or is damaged: `problem` says which), though `newest` is.
    Gap {
        from: String,
        missing: String,
        newest: String,
        problem: String,
    },
    /// Nothing from `from` on is archived yet.
    Nothing { from: String },
}

impl Coverage {
    /// What is wrong, in a sentence; `None` when the archive is complete.
    pub fn problem(&self) -> Option<String> {
        match self {
            Coverage::Complete { .. } => None,
            Coverage::Gap { problem, .. } => Some(problem.clone()),
            Coverage::Nothing { from } => Some(format!(
                "the archive holds neither {from}, the first segment the oldest backup needs, nor any \
                 segment after it: archiving is off, failing or behind"
            )),
        }
    }
}

/// The timelines recovery follows from `start_timeline` up to `newest` (the newest that descends from
/// it), each with the number of the first segment it is read from. `Err` names a missing history file.
fn line_of_timelines(
    listing: &Listing,
    size: SegmentSize,
    start_timeline: u32,
) -> Result<Vec<(u32, u64)>, String> {
    let mut timelines: BTreeSet<u32> = listing
        .segments
        .keys()
        .filter_map(|n| match WalFile::parse(n) {
            WalFile::Segment { timeline, .. } => Some(timeline),
            _ => None,
        })
        .collect();
    timelines.extend(listing.histories.keys());
    for &newest in timelines.iter().rev().filter(|&&t| t >= start_timeline) {
        if newest == start_timeline {
            return Ok(vec![(start_timeline, 0)]);
        }
        let Some(history) = listing.histories.get(&newest) else {
            return Err(format!("{newest:08X}.history"));
        };
        let Some(at) = history.iter().position(|b| b.parent == start_timeline) else {
            continue; // a branch off another line
        };
        let mut line = vec![(start_timeline, 0)];
        for (i, branch) in history.iter().enumerate().skip(at) {
            let child = history.get(i + 1).map_or(newest, |next| next.parent);
            line.push((child, size.number_of(branch.switched_at)));
        }
        return Ok(line);
    }
    Ok(vec![(start_timeline, 0)])
}

/// Whether the archive in `listing` holds every segment from `from` (a segment name) to the newest one
/// archived on the timelines recovery follows.
pub fn coverage(listing: &Listing, from: &str) -> Result<Coverage, String> {
    let WalFile::Segment {
        timeline: start_timeline,
        ..
    } = WalFile::parse(from)
    else {
        return Err(format!("{from} is not a WAL segment name"));
    };
    let Some(&any_size) = listing.segments.values().next() else {
        return Ok(Coverage::Nothing { from: from.into() });
    };
    let size = SegmentSize::new(any_size).ok_or_else(|| {
        format!("the archive's segments have {any_size} bytes, which is not a WAL segment size")
    })?;
    let start = size
        .number(from)
        .ok_or_else(|| format!("{from} is not a segment of {} bytes", size.bytes()))?;
    let line = match line_of_timelines(listing, size, start_timeline) {
        Ok(line) => line,
        Err(history) => {
            let newest = listing
                .segments
                .keys()
                .next_back()
                .cloned()
                .unwrap_or_default();
            return Ok(Coverage::Gap {
                from: from.into(),
                missing: history.clone(),
                problem: format!(
                    "the archive misses {history}: segments of that timeline are archived, but not how it \
                     branched off, so recovery cannot follow it"
                ),
                newest,
            });
        }
    };
    // The timeline a segment is read from: the newest of the line that had begun by then.
    let timeline_at = |number: u64| {
        line.iter()
            .rev()
            .find(|(_, begins)| *begins <= number)
            .map_or(start_timeline, |(t, _)| *t)
    };
    let newest = listing
        .segments
        .keys()
        .filter_map(|name| {
            let WalFile::Segment { timeline, .. } = WalFile::parse(name) else {
                return None;
            };
            let number = size.number(name)?;
            (number >= start && timeline_at(number) == timeline).then_some(number)
        })
        .max();
    let Some(newest) = newest else {
        return Ok(Coverage::Nothing { from: from.into() });
    };
    let newest_name = size.name(timeline_at(newest), newest);
    for number in start..=newest {
        let name = size.name(timeline_at(number), number);
        let problem = match listing.segments.get(&name) {
            Some(&bytes) if bytes == size.bytes() => continue,
            Some(&bytes) => format!(
                "{name} in the archive has {bytes} bytes instead of {}: it is damaged, and recovery cannot \
                 replay past it (the archive holds WAL up to {newest_name})",
                size.bytes()
            ),
            None => format!(
                "the archive misses {name}: recovery from the oldest backup cannot replay past it, though \
                 the archive holds WAL up to {newest_name}"
            ),
        };
        return Ok(Coverage::Gap {
            from: from.into(),
            missing: name,
            newest: newest_name,
            problem,
        });
    }
    Ok(Coverage::Complete {
        from: from.into(),
        to: newest_name,
        segments: newest - start + 1,
    })
}

/// Lists `archive` for [`coverage`]: its whole segments with their sizes, and its history files.
pub fn read(archive: &Path) -> anyhow::Result<Listing> {
    let entries = std::fs::read_dir(archive)
        .with_context(|| format!("cannot read the WAL archive {}", archive.display()))?;
    let mut listing = Listing::default();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot read the WAL archive {}", archive.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        match WalFile::parse(&name) {
            WalFile::Segment { .. } => {
                let meta = entry
                    .metadata()
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                listing.segments.insert(name, meta.len());
            }
            WalFile::History { timeline } => {
                let text = std::fs::read_to_string(entry.path())
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                let Some(history) = parse_history(&text) else {
                    bail!("{} is not a timeline history file", entry.path().display());
                };
                listing.histories.insert(timeline, history);
            }
            _ => {}
        }
    }
    Ok(listing)
}

/// Reads `archive` and checks it from `from`.
pub fn check(archive: &Path, from: &str) -> anyhow::Result<Coverage> {
    let listing = read(archive)?;
    coverage(&listing, from).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::super::names::Lsn;
    use super::*;

    const MB16: u64 = 16 << 20;

    fn listing(segments: &[&str], histories: &[(u32, &[(u32, u64)])]) -> Listing {
        Listing {
            segments: segments.iter().map(|s| (s.to_string(), MB16)).collect(),
            histories: histories
                .iter()
                .map(|(t, branches)| {
                    let branches = branches
                        .iter()
                        .map(|&(parent, at)| Branch {
                            parent,
                            switched_at: Lsn(at),
                        })
                        .collect();
                    (*t, branches)
                })
                .collect(),
        }
    }

    fn missing(coverage: Coverage) -> String {
        match coverage {
            Coverage::Gap { missing, .. } => missing,
            other => panic!("not a gap: {other:?}"),
        }
    }

    #[test]
    fn a_complete_archive_on_one_timeline() {
        let l = listing(
            &[
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "0000000100000000000000FF",
                "000000010000000100000000",
            ],
            &[],
        );
        assert_eq!(
            coverage(&l, "000000010000000000000003").unwrap(),
            Coverage::Gap {
                from: "000000010000000000000003".into(),
                missing: "000000010000000000000005".into(),
                newest: "000000010000000100000000".into(),
                problem: "the archive misses 000000010000000000000005: recovery from the oldest backup cannot replay past it, though the archive holds WAL up to 000000010000000100000000".into(),
            }
        );
        let l = listing(
            &[
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
            ],
            &[],
        );
        assert_eq!(
            coverage(&l, "000000010000000000000003").unwrap(),
            Coverage::Complete {
                from: "000000010000000000000003".into(),
                to: "000000010000000000000004".into(),
                segments: 2
            }
        );
        // The start itself is the first missing one.
        let l = listing(&["000000010000000000000004"], &[]);
        assert_eq!(
            missing(coverage(&l, "000000010000000000000003").unwrap()),
            "000000010000000000000003"
        );
        // Nothing archived from the start on (older segments do not count).
        let l = listing(&["000000010000000000000002"], &[]);
        let found = coverage(&l, "000000010000000000000003").unwrap();
        assert!(matches!(found, Coverage::Nothing { .. }));
        assert!(
            found
                .problem()
                .unwrap()
                .contains("archiving is off, failing or behind")
        );
        assert!(matches!(
            coverage(&Listing::default(), "000000010000000000000003").unwrap(),
            Coverage::Nothing { .. }
        ));
    }

    #[test]
    fn the_line_of_timelines_recovery_follows() {
        // Timeline 2 branched off 1 in segment 5 (0/5000100): from 5 on, segments are read from 2.
        let branched: &[(u32, &[(u32, u64)])] = &[(2, &[(1, 0x5000100)])];
        let l = listing(
            &[
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000010000000000000006", // the old timeline went on: not on the line
                "000000020000000000000005",
                "000000020000000000000006",
            ],
            branched,
        );
        assert_eq!(
            coverage(&l, "000000010000000000000003").unwrap(),
            Coverage::Complete {
                from: "000000010000000000000003".into(),
                to: "000000020000000000000006".into(),
                segments: 4
            }
        );
        // Timeline 2's copy of the switch segment is missing.
        let l = listing(
            &[
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000020000000000000006",
            ],
            branched,
        );
        assert_eq!(
            missing(coverage(&l, "000000010000000000000003").unwrap()),
            "000000020000000000000005"
        );
        // Timeline 2 is archived without its history file.
        let l = listing(
            &["000000010000000000000003", "000000020000000000000004"],
            &[],
        );
        let found = coverage(&l, "000000010000000000000003").unwrap();
        assert_eq!(missing(found.clone()), "00000002.history");
        assert!(found.problem().unwrap().contains("not how it branched off"));
        // Timeline 3 branched off 2 in segment 6, and 2 off 1 in segment 5.
        let l = listing(
            &[
                "000000010000000000000004",
                "000000020000000000000005",
                "000000030000000000000006",
                "000000030000000000000007",
            ],
            &[
                (2, &[(1, 0x5000000)]),
                (3, &[(1, 0x5000000), (2, 0x6000010)]),
            ],
        );
        assert!(matches!(
            coverage(&l, "000000010000000000000004").unwrap(),
            Coverage::Complete { segments: 4, .. }
        ));
        // A backup taken on timeline 2 ignores what timeline 1 did after the branch.
        assert!(matches!(
            coverage(&l, "000000020000000000000005").unwrap(),
            Coverage::Complete { segments: 3, .. }
        ));
    }

    #[test]
    fn a_branch_off_another_line_is_ignored() {
        // The backup is on timeline 2; timeline 3 branched off 1, not off 2: recovery follows 2.
        let l = listing(
            &[
                "000000020000000000000006",
                "000000020000000000000007",
                "000000030000000000000007",
                "000000030000000000000008",
            ],
            &[(2, &[(1, 0x5000000)]), (3, &[(1, 0x7000000)])],
        );
        assert_eq!(
            coverage(&l, "000000020000000000000006").unwrap(),
            Coverage::Complete {
                from: "000000020000000000000006".into(),
                to: "000000020000000000000007".into(),
                segments: 2
            }
        );
    }

    #[test]
    fn a_segment_of_the_wrong_size_is_damaged() {
        let mut l = listing(
            &[
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
            ],
            &[],
        );
        l.segments.insert("000000010000000000000004".into(), 4096);
        let found = coverage(&l, "000000010000000000000003").unwrap();
        assert_eq!(missing(found.clone()), "000000010000000000000004");
        assert!(
            found
                .problem()
                .unwrap()
                .contains("has 4096 bytes instead of 16777216")
        );
        assert!(coverage(&l, "nonsense").is_err());
    }
}
