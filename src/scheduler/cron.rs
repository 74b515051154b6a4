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

/// The next `n` fire times of `cron` in `timezone`, strictly after `after`. A pure function of its inputs;
/// daylight-saving gaps and overlaps follow croner's rules (a fixed time in a gap fires right after it,
/// in an overlap once).
pub fn next_fires(cron: &Cron, timezone: Tz, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
    let mut fires = Vec::with_capacity(n);
    // Cron has whole seconds; croner would carry a fraction of `after` into every result.
    let whole = DateTime::from_timestamp(after.timestamp(), 0).unwrap_or(after);
    let mut at = timezone.from_utc_datetime(&whole.naive_utc());
    while fires.len() < n {
        match cron.find_next_occurrence(&at, false) {
            Ok(next) => {
                fires.push(next);
                at = next;
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
