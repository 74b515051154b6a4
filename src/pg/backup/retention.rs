//! Retention: which base backups to delete. Pure: the caller lists the backups and deletes.
//!
//! The rule: keep the newest `keep` verified backups (at least one); delete every backup older than the
//! oldest of them. A backup that failed a later verification but is newer than that is kept for the
//! operator to look at. With no verified backup at all nothing is deleted, so retention never takes the
//! last verified backup away.

use chrono::{DateTime, Utc};

/// One complete backup, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// Its latest verification passed.
    pub verified: bool,
}

/// The ids to delete, oldest first. `keep` below 1 counts as 1.
pub fn to_delete(backups: &[Candidate], keep: usize) -> Vec<String> {
    let keep = keep.max(1);
    let mut newest_first: Vec<&Candidate> = backups.iter().collect();
    newest_first.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    let Some(oldest_kept) = newest_first.iter().filter(|b| b.verified).take(keep).last() else {
        return Vec::new();
    };
    let boundary = (oldest_kept.started_at, &oldest_kept.id);
    let mut doomed: Vec<String> = newest_first
        .iter()
        .filter(|b| (b.started_at, &b.id) < boundary)
        .map(|b| b.id.clone())
        .collect();
    doomed.reverse();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `backups`: (id, verified), oldest first, an hour apart.
    fn check(backups: &[(&str, bool)], keep: usize, expected: &[&str]) {
        let start: DateTime<Utc> = "2026-01-03T02:00:00Z".parse().unwrap();
        let candidates: Vec<Candidate> = backups
            .iter()
            .enumerate()
            .map(|(i, (id, verified))| Candidate {
                id: id.to_string(),
                started_at: start + chrono::Duration::hours(i as i64),
                verified: *verified,
            })
            .collect();
        assert_eq!(
            to_delete(&candidates, keep),
            expected,
            "{backups:?} keep {keep}"
        );
        let mut shuffled = candidates.clone();
        shuffled.reverse();
        assert_eq!(
            to_delete(&shuffled, keep),
            expected,
            "the input order does not matter"
        );
    }

    #[test]
    fn keeps_the_newest_verified() {
        check(&[], 4, &[]);
        check(&[("a", true)], 1, &[]);
        check(&[("a", true), ("b", true), ("c", true)], 4, &[]);
        check(&[("a", true), ("b", true), ("c", true)], 2, &["a"]);
        check(
            &[
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", true),
            ],
            2,
            &["a", "b", "c"],
        );
    }

    #[test]
    fn unverified_backups_do_not_count_toward_keep() {
        // c failed verification later: a and b are the two newest verified; nothing older exists.
        check(&[("a", true), ("b", true), ("c", false)], 2, &[]);
        // keep 1: b is the newest verified; a goes; the newer unverified c stays for inspection.
        check(&[("a", true), ("b", true), ("c", false)], 1, &["a"]);
        // Unverified backups older than the oldest kept go too.
        check(
            &[("a", false), ("b", true), ("c", false), ("d", true)],
            1,
            &["a", "b", "c"],
        );
    }

    #[test]
    fn never_deletes_the_last_verified_backup() {
        check(&[("a", true), ("b", false), ("c", false)], 1, &[]);
        check(&[("a", true), ("b", false)], 0, &[]);
        check(&[("a", false), ("b", false)], 1, &[]);
        check(&[("a", true), ("b", true)], 0, &["a"]);
    }

    #[test]
    fn the_same_start_time_orders_by_id() {
        let at: DateTime<Utc> = "2026-01-03T02:00:00Z".parse().unwrap();
        let candidates = [
            Candidate {
                id: "20260103T020000Z-2".into(),
                started_at: at,
                verified: true,
            },
            Candidate {
                id: "20260103T020000Z".into(),
                started_at: at,
                verified: true,
            },
        ];
        assert_eq!(to_delete(&candidates, 1), ["20260103T020000Z"]);
    }
}
