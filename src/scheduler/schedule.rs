//! Schedule files: parsing and checking one `schedules/<name>.toml`. Pure: the caller reads the file;
//! errors carry the file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::cron::{next_fires, parse_cron};
use super::jobs::{
    BackupParams, DrillParams, FetchParams, JOB_KINDS, JobSpec, PgconfParams, PruneParams,
};
use super::notify::NotifySettings;
use crate::pipeline::fetch::MAX_RESULTS;

/// One schedule, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The file's stem.
    pub name: String,
    pub job: JobSpec,
    /// The expression as written.
    pub cron_text: String,
    cron: Cron,
    pub timezone: Tz,
    pub enabled: bool,
    pub overlap: Overlap,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub jitter: Duration,
    pub run_on_start: bool,
    /// The file's `[notify]` table: what it overrides of `userpipe.toml`'s `[notify]`.
    pub notify: NotifySettings,
}

/// What happens when a firing comes while the previous run of the schedule is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// The new firing is recorded as `skipped`.
    #[default]
    Skip,
    /// Both run.
    Allow,
}

/// A problem in a schedule file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ScheduleError {}

/// Where a value stands in a file's text, in bytes.
type Span = std::ops::Range<usize>;

/// The keys every schedule file has; `P` is the job's `[params]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule<P> {
    job: Spanned<String>,
    cron: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    overlap: Overlap,
    #[serde(default)]
    timeout: Option<Spanned<humantime_serde::Serde<Duration>>>,
    #[serde(default)]
    retries: Option<Spanned<u32>>,
    #[serde(default)]
    retry_backoff: Option<Spanned<humantime_serde::Serde<Duration>>>,
    #[serde(default)]
    jitter: Option<Spanned<humantime_serde::Serde<Duration>>>,
    #[serde(default)]
    run_on_start: bool,
    #[serde(default)]
    notify: Option<Spanned<NotifySettings>>,
    #[serde(default)]
    params: Option<Spanned<P>>,
}

/// Just the job kind, read first to choose the `[params]` type.
#[derive(Debug, Deserialize)]
struct Head {
    job: Spanned<String>,
}

fn yes() -> bool {
    true
}

/// A run's timeout when the file sets none, and the longest it may set (a week).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);
/// Retries when the file sets none, and the most it may set.
pub const MAX_RETRIES: u32 = 100;
/// The first retry's wait when the file sets none; the longest `retry_backoff` and `jitter` (a day).
const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// A schedule's key that is within its bounds, or why it is not with where it stands.
fn bounded<T: Copy>(
    value: &Option<Spanned<T>>,
    default: T,
    check: impl Fn(T) -> Option<String>,
) -> Result<T, (Span, String)> {
    match value {
        None => Ok(default),
        Some(spanned) => match check(*spanned.get_ref()) {
            None => Ok(*spanned.get_ref()),
            Some(message) => Err((spanned.span(), message)),
        },
    }
}

/// Parses the text of `path`; the schedule's name is the file's stem.
pub fn parse(path: &Path, text: &str) -> Result<Schedule, ScheduleError> {
    let at = |span: Option<Span>, message: String| {
        let (line, column) = line_column(text, span.map_or(0, |s| s.start));
        ScheduleError {
            file: path.to_owned(),
            line,
            column,
            message,
        }
    };
    let toml_error = |e: toml::de::Error| at(e.span(), e.message().trim().to_owned());
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| at(None, "the file name is not a valid schedule name".into()))?
        .to_owned();

    let head: Head = toml::from_str(text).map_err(toml_error)?;
    let (job, raw) = match head.job.get_ref().as_str() {
        "fetch-users" => {
            let (raw, params, span) = read::<FetchParams>(text).map_err(toml_error)?;
            if !(1..=MAX_RESULTS).contains(&params.results) {
                let message = format!(
                    "params.results must be between 1 and {MAX_RESULTS}, not {}",
                    params.results
                );
                return Err(at(span, message));
            }
            (JobSpec::FetchUsers(params), raw)
        }
        "base-backup" => {
            let (raw, params, span) = read::<BackupParams>(text).map_err(toml_error)?;
            if params.keep == Some(0) {
                let message =
                    "params.keep must be 1 or more: the newest verified backup is always kept";
                return Err(at(span, message.into()));
            }
            (JobSpec::BaseBackup(params), raw)
        }
        "restore-drill" => {
            let (raw, params, _) = read::<DrillParams>(text).map_err(toml_error)?;
            (JobSpec::RestoreDrill(params), raw)
        }
        "pgconf-enforce" => {
            let (raw, params, _) = read::<PgconfParams>(text).map_err(toml_error)?;
            (JobSpec::PgconfEnforce(params), raw)
        }
        "prune-history" => {
            let (raw, params, _) = read::<PruneParams>(text).map_err(toml_error)?;
            (JobSpec::PruneHistory(params), raw)
        }
        other => {
            return Err(at(
                Some(head.job.span()),
                format!(
                    "unknown job `{other}`: the jobs are {}",
                    JOB_KINDS.join(", ")
                ),
            ));
        }
    };

    let cron = parse_cron(raw.cron.get_ref()).map_err(|m| at(Some(raw.cron.span()), m))?;
    let out_of_bounds = |(span, message): (Span, String)| at(Some(span), message);
    let duration = |key: &'static str, max: Duration, zero: bool| {
        move |value: humantime_serde::Serde<Duration>| {
            let value = *value;
            let show = |d: Duration| humantime::format_duration(d).to_string();
            if value > max {
                Some(format!(
                    "{key} must be at most {}, not {}",
                    show(max),
                    show(value)
                ))
            } else if value.is_zero() && !zero {
                Some(format!("{key} must be more than 0s"))
            } else {
                None
            }
        }
    };
    let timeout = bounded(
        &raw.timeout,
        DEFAULT_TIMEOUT.into(),
        duration("timeout", MAX_TIMEOUT, false),
    )
    .map_err(out_of_bounds)?;
    let retries = bounded(&raw.retries, 0, |retries| {
        (retries > MAX_RETRIES)
            .then(|| format!("retries must be at most {MAX_RETRIES}, not {retries}"))
    })
    .map_err(out_of_bounds)?;
    let retry_backoff = bounded(
        &raw.retry_backoff,
        DEFAULT_BACKOFF.into(),
        duration("retry_backoff", MAX_WAIT, true),
    )
    .map_err(out_of_bounds)?;
    let jitter = bounded(
        &raw.jitter,
        Duration::ZERO.into(),
        duration("jitter", MAX_WAIT, true),
    )
    .map_err(out_of_bounds)?;
    let timezone = match &raw.timezone {
        None => Tz::UTC,
        Some(tz) => Tz::from_str(tz.get_ref()).map_err(|_| {
            at(
                Some(tz.span()),
                format!(
                    "unknown timezone `{}`: use an IANA name such as Europe/Berlin",
                    tz.get_ref()
                ),
            )
        })?,
    };
    let notify = match raw.notify {
        None => NotifySettings::default(),
        Some(table) => {
            let span = table.span();
            let settings = table.into_inner();
            let url = settings
                .url
                .as_ref()
                .map(|u| u.expose())
                .unwrap_or("http://x");
            let valid = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !valid {
                // The URL is a secret: say what is wrong without it.
                return Err(at(Some(span), "notify.url is not an http(s) url".into()));
            }
            settings
        }
    };
    Ok(Schedule {
        name,
        job,
        notify,
        cron_text: raw.cron.into_inner(),
        cron,
        timezone,
        enabled: raw.enabled,
        overlap: raw.overlap,
        timeout: *timeout,
        retries,
        retry_backoff: *retry_backoff,
        jitter: *jitter,
        run_on_start: raw.run_on_start,
    })
}

/// Reads the file with `[params]` of type `P`: the other keys, the params (their defaults when the table is
/// absent), and where the table stands.
fn read<P: DeserializeOwned + Default>(
    text: &str,
) -> Result<(RawSchedule<()>, P, Option<Span>), toml::de::Error> {
    let raw: RawSchedule<P> = toml::from_str(text)?;
    let (params, span) = match raw.params {
        Some(p) => {
            let span = p.span();
            (p.into_inner(), Some(span))
        }
        None => (P::default(), None),
    };
    let rest = RawSchedule {
        job: raw.job,
        cron: raw.cron,
        timezone: raw.timezone,
        enabled: raw.enabled,
        overlap: raw.overlap,
        timeout: raw.timeout,
        retries: raw.retries,
        retry_backoff: raw.retry_backoff,
        jitter: raw.jitter,
        run_on_start: raw.run_on_start,
        notify: raw.notify,
        params: None,
    };
    Ok((rest, params, span))
}

impl Schedule {
    /// The next `n` fire times strictly after `after`, in the schedule's timezone.
    pub fn next_fires(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        next_fires(&self.cron, self.timezone, after, n)
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Schedule, String> {
        parse(Path::new("schedules/test.toml"), text).map_err(|e| e.to_string())
    }

    fn check_error(text: &str, expected: &str) {
        let error = parse_text(text).expect_err("the file is invalid");
        assert!(
            error.starts_with(expected),
            "{error:?}\nshould start with {expected:?}"
        );
    }

    #[test]
    fn a_full_file() {
        let schedule = parse_text(
            "job = \"fetch-users\"\ncron = \"*/5 * * * *\"\ntimezone = \"Europe/Berlin\"\nenabled = false\noverlap = \"allow\"\ntimeout = \"30s\"\nretries = 2\nretry_backoff = \"1s\"\njitter = \"5s\"\nrun_on_start = true\n\n[params]\nresults = 50\nsource = \"generator\"\n",
        )
        .unwrap();
        assert_eq!(schedule.name, "test");
        assert_eq!(
            schedule.job,
            JobSpec::FetchUsers(FetchParams {
                results: 50,
                source: Some("generator".into())
            })
        );
        assert_eq!(schedule.timezone, chrono_tz::Europe::Berlin);
        assert!(!schedule.enabled && schedule.run_on_start);
        assert_eq!(schedule.overlap, Overlap::Allow);
        assert_eq!(schedule.timeout, Duration::from_secs(30));
        assert_eq!(
            (schedule.retries, schedule.retry_backoff),
            (2, Duration::from_secs(1))
        );
        assert_eq!(schedule.jitter, Duration::from_secs(5));
    }

    #[test]
    fn defaults() {
        let schedule = parse_text("job = \"fetch-users\"\ncron = \"* * * * *\"\n").unwrap();
        assert_eq!(
            schedule.job,
            JobSpec::FetchUsers(FetchParams {
                results: 1,
                source: None
            })
        );
        assert_eq!(schedule.timezone, Tz::UTC);
        assert!(schedule.enabled && !schedule.run_on_start);
        assert_eq!(schedule.overlap, Overlap::Skip);
        assert_eq!(schedule.timeout, Duration::from_secs(300));
        assert_eq!((schedule.retries, schedule.jitter), (0, Duration::ZERO));
    }

    #[test]
    fn errors_name_line_and_column() {
        check_error(
            "job = \"fetch-users\"\ncron = \"* * * *\"\n",
            "schedules/test.toml:2:8: cron expression `* * * *` has 4 fields",
        );
        check_error(
            "job = \"fetch-users\"\ncron = \"61 * * * *\"\n",
            "schedules/test.toml:2:8: invalid cron expression `61 * * * *`",
        );
        check_error(
            "job = \"fetch-users\"\ncron = \"* * * * *\"\ntimezone = \"Mars/Olympus\"\n",
            "schedules/test.toml:3:12: unknown timezone `Mars/Olympus`",
        );
        check_error(
            "job = \"fetch-user\"\ncron = \"* * * * *\"\n",
            "schedules/test.toml:1:7: unknown job `fetch-user`: the jobs are fetch-users, base-backup, restore-drill, pgconf-enforce, prune-history",
        );
        check_error(
            "job = \"fetch-users\"\ncron = \"* * * * *\"\ncolour = 1\n",
            "schedules/test.toml:3:1: unknown field `colour`",
        );
        check_error(
            "job = \"fetch-users\"\ncron = \"* * * * *\"\n[params]\nresults = 1\nsauce = \"x\"\n",
            "schedules/test.toml:5:1: unknown field `sauce`",
        );
        check_error(
            "job = \"fetch-users\"\ncron = \"* * * * *\"\n[params]\nresults = 0\n",
            "schedules/test.toml:3:1: params.results must be between 1 and 5000, not 0",
        );
        check_error(
            "job = \"fetch-users\"\ncron = \"* * * * *\"\ntimeout = \"soon\"\n",
            "schedules/test.toml:3:11: ",
        );
        check_error(
            "cron = \"* * * * *\"\n",
            "schedules/test.toml:1:1: missing field `job`",
        );
        check_error(
            "job = \"fetch-users\"\ncron = [\n",
            "schedules/test.toml:2:9: ",
        );
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_line_and_limit() {
        let head = "job = \"fetch-users\"\ncron = \"* * * * *\"\n";
        let check = |rest: &str, expected: &str| check_error(&format!("{head}{rest}"), expected);
        check(
            "retries = 4294967295\n",
            "schedules/test.toml:3:11: retries must be at most 100, not 4294967295",
        );
        check("retries = 4294967296\n", "schedules/test.toml:3:11: ");
        check("retries = -1\n", "schedules/test.toml:3:11: ");
        check(
            "enabled = true\ntimeout = \"300000y\"\n",
            "schedules/test.toml:4:11: timeout must be at most 7days, not 300000years",
        );
        check(
            "timeout = \"0s\"\n",
            "schedules/test.toml:3:11: timeout must be more than 0s",
        );
        check(
            "retry_backoff = \"2days\"\n",
            "schedules/test.toml:3:17: retry_backoff must be at most 1day, not 2days",
        );
        check(
            "jitter = \"1000000000000000y\"\n",
            "schedules/test.toml:3:10: ",
        );
        check(
            "jitter = \"25h\"\n",
            "schedules/test.toml:3:10: jitter must be at most 1day, not 1day 1h",
        );
        let limits = parse_text(&format!(
            "{head}retries = 100\ntimeout = \"7d\"\nretry_backoff = \"1d\"\njitter = \"1d\"\n"
        ))
        .unwrap();
        assert_eq!(
            (
                limits.retries,
                limits.timeout,
                limits.retry_backoff,
                limits.jitter
            ),
            (MAX_RETRIES, MAX_TIMEOUT, MAX_WAIT, MAX_WAIT)
        );
    }

    #[test]
    fn a_notify_table_overrides_the_defaults_and_keeps_its_url_secret() {
        let schedule = parse_text(
            "job = \"base-backup\"\ncron = \"0 2 * * 6\"\n[notify]\nurl = \"https://hooks.example/T/s3cr3t\"\non = \"always\"\n",
        )
        .unwrap();
        assert_eq!(schedule.notify.on, Some(crate::config::NotifyOn::Always));
        assert_eq!(
            schedule.notify.url.as_ref().map(|u| u.expose()),
            Some("https://hooks.example/T/s3cr3t")
        );
        assert!(!format!("{schedule:?}").contains("s3cr3t"));
        let defaults = parse_text("job = \"base-backup\"\ncron = \"0 2 * * 6\"\n").unwrap();
        assert_eq!(defaults.notify, NotifySettings::default());
        check_error(
            "job = \"base-backup\"\ncron = \"0 2 * * 6\"\n[notify]\non = \"sometimes\"\n",
            "schedules/test.toml:4:6: unknown variant `sometimes`, expected one of `failure`, `always`, `never`",
        );
        let error = parse_text(
            "job = \"base-backup\"\ncron = \"0 2 * * 6\"\n[notify]\nurl = \"hooks.example/s3cr3t\"\n",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "schedules/test.toml:3:1: notify.url is not an http(s) url"
        );
    }

    #[test]
    fn operations_jobs_and_their_params() {
        let job = |text: &str| parse_text(text).unwrap().job;
        assert_eq!(
            job("job = \"base-backup\"\ncron = \"0 2 * * 6\"\n"),
            JobSpec::BaseBackup(BackupParams { keep: None })
        );
        assert_eq!(
            job("job = \"base-backup\"\ncron = \"0 2 * * 6\"\n[params]\nkeep = 2\n"),
            JobSpec::BaseBackup(BackupParams { keep: Some(2) })
        );
        assert_eq!(
            job("job = \"restore-drill\"\ncron = \"0 4 * * 6\"\n"),
            JobSpec::RestoreDrill(DrillParams {})
        );
        assert_eq!(
            job("job = \"pgconf-enforce\"\ncron = \"*/5 * * * *\"\n"),
            JobSpec::PgconfEnforce(PgconfParams {
                apply: true,
                archive_check: false
            })
        );
        assert_eq!(
            job(
                "job = \"pgconf-enforce\"\ncron = \"*/5 * * * *\"\n[params]\napply = false\narchive_check = true\n"
            ),
            JobSpec::PgconfEnforce(PgconfParams {
                apply: false,
                archive_check: true
            })
        );
        check_error(
            "job = \"base-backup\"\ncron = \"0 2 * * 6\"\n[params]\nkeep = 0\n",
            "schedules/test.toml:3:1: params.keep must be 1 or more",
        );
        check_error(
            "job = \"restore-drill\"\ncron = \"0 4 * * 6\"\n[params]\nbackup = \"x\"\n",
            "schedules/test.toml:4:1: unknown field `backup`",
        );
    }

    #[test]
    fn the_shipped_schedules_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
        let mut shipped = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let schedule = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(schedule.timezone, Tz::UTC, "{}", path.display());
            shipped.insert(
                schedule.name.clone(),
                (schedule.job.kind(), schedule.cron_text.clone()),
            );
        }
        let expected: std::collections::BTreeMap<String, (&str, String)> = [
            ("base-backup", "0 2 * * 6"),
            ("fetch-users", "* * * * *"),
            ("pgconf-enforce", "*/5 * * * *"),
            ("restore-drill", "0 4 * * 6"),
        ]
        .into_iter()
        .map(|(name, cron)| (name.to_owned(), (name, cron.to_owned())))
        .collect();
        assert_eq!(shipped, expected);
    }
}
