//! The names in a WAL archive, read as PostgreSQL writes them: segments (`000000010000000A000000FF`:
//! timeline, then the position), `.partial` segments, `.backup` labels (`<segment>.00000028.backup`) and
//! timeline `.history` files; LSNs (`0/5000028`) and the segment holding one; history files. Pure.

use std::fmt;

/// A position in the WAL (`pg_lsn`), written `X/Y` in hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/5000028` -> Lsn(0x5000028).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let hex = |s: &str| {
            (!s.is_empty() && s.len() <= 8)
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        Some(Lsn(((hex(high)? as u64) << 32) | hex(low)? as u64))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a file in the archive is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFile<'a> {
    /// A whole segment: 24 hexadecimal digits.
    Segment { timeline: u32, position: &'a str },
    /// `<segment>.partial`: the last, unfinished segment of a timeline a standby left when promoted.
    Partial { timeline: u32, position: &'a str },
    /// `<segment>.<offset>.backup`: the label a base backup leaves when it stops.
    BackupLabel { timeline: u32, position: &'a str },
    /// `<timeline>.history`: how a timeline branched off its parents.
    History { timeline: u32 },
    /// Anything else (a temporary file of the archive command, a file of an operator): never touched.
    Other,
}

impl<'a> WalFile<'a> {
    /// Reads a file name. The position is the segment name without its timeline (16 hexadecimal digits),
    /// so positions compare as strings in WAL order, whatever the timeline (as `pg_archivecleanup` does).
    pub fn parse(name: &'a str) -> WalFile<'a> {
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        let timeline = |s: &str| u32::from_str_radix(s, 16).ok();
        if let Some(stem) = name.strip_suffix(".history") {
            return match (stem.len() == 8 && hex(stem))
                .then(|| timeline(stem))
                .flatten()
            {
                Some(timeline) => WalFile::History { timeline },
                None => WalFile::Other,
            };
        }
        if name.len() < 24 || !hex(&name[..24]) {
            return WalFile::Other;
        }
        let (Some(tl), position, rest) = (timeline(&name[..8]), &name[8..24], &name[24..]) else {
            return WalFile::Other;
        };
        match rest {
            "" => WalFile::Segment {
                timeline: tl,
                position,
            },
            ".partial" => WalFile::Partial {
                timeline: tl,
                position,
            },
            _ => match rest
                .strip_prefix('.')
                .and_then(|r| r.strip_suffix(".backup"))
            {
                Some(offset) if offset.len() == 8 && hex(offset) => WalFile::BackupLabel {
                    timeline: tl,
                    position,
                },
                _ => WalFile::Other,
            },
        }
    }
}

/// Whether `name` is a whole segment's name.
pub fn is_segment(name: &str) -> bool {
    matches!(WalFile::parse(name), WalFile::Segment { .. })
}

/// Segment numbers and names for one `wal_segment_size` (a power of two from 1 MB to 1 GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(u64);

impl SegmentSize {
    pub fn new(bytes: u64) -> Option<SegmentSize> {
        (bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes))
            .then_some(SegmentSize(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    fn per_id(self) -> u64 {
        0x1_0000_0000 / self.0
    }

    /// The number of the segment named `name` (its timeline aside), if `name` is a segment's.
    pub fn number(self, name: &str) -> Option<u64> {
        let position = name.get(8..24)?;
        let high = u64::from_str_radix(&position[..8], 16).ok()?;
        let low = u64::from_str_radix(&position[8..], 16).ok()?;
        (low < self.per_id()).then(|| high * self.per_id() + low)
    }

    /// The name of segment `number` on `timeline`.
    pub fn name(self, timeline: u32, number: u64) -> String {
        format!(
            "{timeline:08X}{:08X}{:08X}",
            number / self.per_id(),
            number % self.per_id()
        )
    }

    /// The segment holding the byte at `lsn`.
    pub fn number_of(self, lsn: Lsn) -> u64 {
        lsn.0 / self.0
    }

    /// The segment holding the byte just before `lsn`: where a record ending at `lsn` lies (what
    /// `pg_walfile_name` names).
    pub fn number_before(self, lsn: Lsn) -> u64 {
        lsn.0.saturating_sub(1) / self.0
    }

    /// The first position after segment `number`.
    pub fn end_of(self, number: u64) -> Lsn {
        Lsn((number + 1) * self.0)
    }
}

/// One line of a `.history` file: timeline `parent` was followed until `switched_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    pub parent: u32,
    pub switched_at: Lsn,
}

/// The lines of a `.history` file (`1\t0/3000158\tno recovery target specified`), oldest first;
/// comments and blank lines skipped. `None` when a line cannot be read.
pub fn parse_history(text: &str) -> Option<Vec<Branch>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            let parent = fields.next()?.parse().ok()?;
            let switched_at = Lsn::parse(fields.next()?)?;
            Some(Branch {
                parent,
                switched_at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_print_as_postgresql_does() {
        assert_eq!(Lsn::parse("0/5000028"), Some(Lsn(0x5000028)));
        assert_eq!(Lsn::parse("1A/FF"), Some(Lsn(0x1A_0000_00FF)));
        assert_eq!(Lsn(0x1A_0000_00FF).to_string(), "1A/FF");
        for bad in ["", "5000028", "0/", "/5", "x/1", "123456789/0"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
        assert!(Lsn::parse("0/5000028") < Lsn::parse("1/0"));
    }

    #[test]
    fn file_names_are_told_apart() {
        let check =
            |name: &str, expected: WalFile| assert_eq!(WalFile::parse(name), expected, "{name}");
        check(
            "000000010000000A000000FF",
            WalFile::Segment {
                timeline: 1,
                position: "0000000A000000FF",
            },
        );
        check(
            "0000000200000000000000FF.partial",
            WalFile::Partial {
                timeline: 2,
                position: "00000000000000FF",
            },
        );
        check(
            "000000010000000000000003.00000028.backup",
            WalFile::BackupLabel {
                timeline: 1,
                position: "0000000000000003",
            },
        );
        check("0000000A.history", WalFile::History { timeline: 10 });
        for other in [
            ".000000010000000000000003.tmp.123",
            "00000001000000000000000",
            "000000010000000000000003.gz",
            "000000010000000000000003.0028.backup",
            "1.history",
            "README",
            "00000001000000000000000G",
        ] {
            check(other, WalFile::Other);
        }
        assert!(is_segment("000000010000000000000003"));
        assert!(!is_segment("000000010000000000000003.partial"));
    }

    #[test]
    fn segments_are_numbered_by_their_size() {
        let mb16 = SegmentSize::new(16 << 20).unwrap();
        assert_eq!(mb16.number("0000000100000000000000FF"), Some(255));
        assert_eq!(mb16.number("000000010000000100000000"), Some(256));
        assert_eq!(mb16.name(1, 256), "000000010000000100000000");
        assert_eq!(mb16.name(2, 255), "0000000200000000000000FF");
        // 16 MB segments end at FF: a name past it is not a segment of this size.
        assert_eq!(mb16.number("000000010000000000000100"), None);
        let mb64 = SegmentSize::new(64 << 20).unwrap();
        assert_eq!(mb64.number("00000001000000010000003F"), Some(127));
        assert_eq!(mb64.name(1, 64), "000000010000000100000000");
        assert_eq!(mb16.number_of(Lsn(0x3000028)), 3);
        assert_eq!(mb16.number_before(Lsn(0x4000000)), 3);
        assert_eq!(mb16.number_before(Lsn(0x4000100)), 4);
        assert_eq!(mb16.end_of(3), Lsn(0x4000000));
        assert_eq!(SegmentSize::new(3 << 20), None);
        assert_eq!(SegmentSize::new(512 << 10), None);
    }

    #[test]
    fn history_files_are_read() {
        let text = "1\t0/3000158\tno recovery target specified\n\n# a comment\n2\t0/50000A0\tbefore 2026-01-03 10:15:00+00\n";
        assert_eq!(
            parse_history(text),
            Some(vec![
                Branch {
                    parent: 1,
                    switched_at: Lsn(0x3000158)
                },
                Branch {
                    parent: 2,
                    switched_at: Lsn(0x50000A0)
                },
            ])
        );
        assert_eq!(parse_history("1 nonsense\n"), None);
        assert_eq!(parse_history(""), Some(vec![]));
    }
}
