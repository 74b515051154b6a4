//! Cron expressions and fire times: parsing an expression, and the next fire times in a timezone. Pure.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Parses a cron expression: 5 fields (minute first, as in crontab), 6 (seconds first), or an alias
/// (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "cron expression `{text}` has {fields} fields: write 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("invalid cron expression `{text}`: {e}"))
}

/// The next `n` fire times of `cron` in `timezone`, each strictly after `after` and after the one before.
/// A pure function of its inputs. Daylight saving: a local time that a spring-forward skips fires right
/// after the gap (croner's rule for fixed-time schedules; interval schedules skip it); a local time that a
/// fall-back repeats fires once, at its first occurrence, whatever the schedule, so during the repeated
/// hour nothing fires that already fired an hour before.
pub fn next_fires(cron: &Cron, timezone: Tz, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
    let mut fires = Vec::with_capacity(n);
    // Cron has whole seconds; croner would carry a fraction of `after` into every result.
    let whole = DateTime::from_timestamp(after.timestamp(), 0).unwrap_or(after);
    let mut at = timezone.from_utc_datetime(&whole.naive_utc());
    let mut last = after;
    while fires.len() < n {
        // croner searches local times after `at`'s and maps a repeated one to its first occurrence. In the
        // second pass of a repeated hour that occurrence is an hour back: such a local time already fired
        // (or was already due), so the search goes on from there until it passes `last`.
        match cron.find_next_occurrence(&at, false) {
            Ok(next) => {
                at = next;
                if next.with_timezone(&Utc) > last {
                    last = next.with_timezone(&Utc);
                    fires.push(next);
                }
            }
            Err(_) => break,
        }
    }
    fires
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_fires(cron: &str, tz: &str, after: &str, expected: &[&str]) {
        let cron = parse_cron(cron).unwrap();
        let timezone: Tz = tz.parse().unwrap();
        let after: DateTime<Utc> = after.parse().unwrap();
        let fires: Vec<String> = next_fires(&cron, timezone, after, expected.len())
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(fires, expected, "{cron} in {tz} after {after}");
    }

    #[test]
    fn five_fields_are_minute_first_and_six_seconds_first() {
        check_fires(
            "*/15 * * * *",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00"],
        );
        check_fires(
            "*/15 * * * * *",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-01T00:00:15+00:00", "2026-01-01T00:00:30+00:00"],
        );
        check_fires(
            "@hourly",
            "UTC",
            "2026-01-01T00:10:00Z",
            &["2026-01-01T01:00:00+00:00"],
        );
        check_fires(
            "@daily",
            "UTC",
            "2026-01-01T00:10:00Z",
            &["2026-01-02T00:00:00+00:00"],
        );
        check_fires(
            "@weekly",
            "UTC",
            "2026-01-01T00:10:00Z",
            &["2026-01-04T00:00:00+00:00"],
        );
        // The seed's backup: Saturday 02:00.
        check_fires(
            "0 2 * * 6",
            "UTC",
            "2026-11-28T02:00:00Z",
            &["2026-12-05T02:00:00+00:00", "2026-12-12T02:00:00+00:00"],
        );
    }

    #[test]
    fn fire_times_are_whole_seconds() {
        check_fires(
            "* * * * * *",
            "UTC",
            "2026-01-01T00:00:00.750Z",
            &["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00"],
        );
    }

    #[test]
    fn in_the_repeated_hour_nothing_fires_again_and_nothing_lies_in_the_past() {
        // Berlin falls back on 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET: 02:00-02:59 happens twice.
        // 02:10 CET (second pass) is 01:10 UTC; 02:15 fired at 00:15 UTC, in the first pass.
        check_fires(
            "15 2 * * *",
            "Europe/Berlin",
            "2026-10-25T01:10:00Z",
            &["2026-10-26T02:15:00+01:00"],
        );
        // An interval schedule is quiet for the rest of the repeated hour, then goes on at 03:00 CET.
        check_fires(
            "*/20 * * * *",
            "Europe/Berlin",
            "2026-10-25T01:10:00Z",
            &["2026-10-25T03:00:00+01:00", "2026-10-25T03:20:00+01:00"],
        );
        check_fires(
            "*/20 * * * *",
            "Europe/Berlin",
            "2026-10-25T00:30:00Z",
            &["2026-10-25T02:40:00+02:00", "2026-10-25T03:00:00+01:00"],
        );
        check_fires(
            "* * * * * *",
            "Europe/Berlin",
            "2026-10-25T01:59:58Z",
            &["2026-10-25T03:00:00+01:00", "2026-10-25T03:00:01+01:00"],
        );
    }

    /// Every cron in `crons`, in `tz`, over the window from `start` for `hours`: the fire times from any
    /// instant are strictly after it and the same as from the window's start (they do not depend on when
    /// the scheduler started), no local time fires twice, and every matching local time that exists fires.
    fn check_fire_properties(crons: &[&str], tz: &str, start: &str, hours: i64) {
        let timezone: Tz = tz.parse().unwrap();
        let start: DateTime<Utc> = start.parse().unwrap();
        let end = start + chrono::TimeDelta::hours(hours);
        for text in crons {
            let cron = parse_cron(text).unwrap();
            let mut all: Vec<DateTime<Utc>> = Vec::new();
            let mut at = start;
            while at < end {
                let fires = next_fires(&cron, timezone, at, 64);
                assert!(!fires.is_empty(), "{text}: no fire after {at}");
                for fire in fires {
                    let fire = fire.with_timezone(&Utc);
                    assert!(fire > at, "{text}: {fire} is not after {at}");
                    at = fire;
                    if fire < end {
                        all.push(fire);
                    }
                }
            }
            let locals: std::collections::HashSet<_> = all
                .iter()
                .map(|t| t.with_timezone(&timezone).naive_local())
                .collect();
            assert_eq!(
                locals.len(),
                all.len(),
                "{text} in {tz}: a local time fired twice"
            );
            // Every local second of the window that matches and exists fires.
            let mut local = start.with_timezone(&timezone).naive_local();
            let last = end.with_timezone(&timezone).naive_local() - chrono::TimeDelta::hours(2);
            while local < last {
                if let Some(instant) = timezone.from_local_datetime(&local).earliest()
                    && instant.with_timezone(&Utc) > start
                    && cron.is_time_matching(&instant).unwrap()
                {
                    assert!(
                        locals.contains(&local),
                        "{text} in {tz}: {local} never fires"
                    );
                }
                local += chrono::TimeDelta::seconds(1);
            }
            // From any instant, the next fire is the first of those after it.
            let mut after = start + chrono::TimeDelta::milliseconds(250);
            while after < end - chrono::TimeDelta::hours(2) {
                let next = next_fires(&cron, timezone, after, 1)[0].with_timezone(&Utc);
                match all.iter().find(|t| **t > after) {
                    Some(expected) => assert_eq!(next, *expected, "{text} in {tz} after {after}"),
                    None => assert!(next >= end, "{text} in {tz} after {after}: {next}"),
                }
                after += chrono::TimeDelta::seconds(97);
            }
        }
    }

    #[test]
    fn fire_times_are_strictly_after_and_once_per_local_time_across_real_transitions() {
        let crons = [
            "30 2 * * *",
            "15 2 * * *",
            "0 3 * * *",
            "*/20 * * * *",
            "0 * * * *",
            "5,35 2 * * *",
            "*/30 * * * * *",
        ];
        // Fall back: Berlin 2026-10-25, New York 2026-11-01. Spring forward: Berlin 2026-03-29.
        check_fire_properties(&crons, "Europe/Berlin", "2026-10-24T22:00:00Z", 8);
        check_fire_properties(&crons, "America/New_York", "2026-11-01T03:00:00Z", 8);
        check_fire_properties(&crons, "Europe/Berlin", "2026-03-28T23:00:00Z", 8);
    }

    #[test]
    fn fire_times_follow_the_timezone_across_both_dst_transitions() {
        // Spring forward in Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST, 02:30 does not exist that day.
        check_fires(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            &[
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00",
            ],
        );
        // Fall back in Berlin, 2026-10-25: 02:30 happens twice; the job runs once.
        check_fires(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-23T12:00:00Z",
            &[
                "2026-10-24T02:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00",
            ],
        );
        // A daily 09:00 in New York stays 09:00 local when the offset changes (2026-03-08 and 2026-11-01).
        check_fires(
            "0 9 * * *",
            "America/New_York",
            "2026-03-07T00:00:00Z",
            &["2026-03-07T09:00:00-05:00", "2026-03-08T09:00:00-04:00"],
        );
        check_fires(
            "0 9 * * *",
            "America/New_York",
            "2026-10-31T00:00:00Z",
            &["2026-10-31T09:00:00-04:00", "2026-11-01T09:00:00-05:00"],
        );
    }
}
