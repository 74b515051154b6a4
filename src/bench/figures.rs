//! The figures of one benchmark run and how they are printed: each rate beside the machine's ceiling
//! as a ratio, the pipeline's CPU time per user, latency percentiles, memory, and for a steady run
//! the same over time. Pure.

use std::fmt;

use super::ceiling::Ceiling;

/// How users were published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    pub users: usize,
    /// From the first publish to the last.
    pub seconds: f64,
    /// The steady rate asked for; `None` as fast as the broker takes them.
    pub asked: Option<u64>,
    /// Every user was published before the pipeline started.
    pub preloaded: bool,
}

impl Published {
    pub fn rate(&self) -> f64 {
        self.users as f64 / self.seconds.max(1e-6)
    }
}

/// One slice of a steady run: the users published in it and how long they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Start and end, seconds after the first publish.
    pub from: f64,
    pub to: f64,
    pub published: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The largest replica's resident memory at the window's end, MB.
    pub rss_mb: f64,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub users: usize,
    pub replicas: usize,
    /// How many rows had landed when one replica was killed.
    pub killed_after: Option<u64>,
    pub ceiling: Ceiling,
    pub published: Published,
    /// The timed span: from the first publish (from the first row when preloaded) to the last row.
    pub seconds: f64,
    /// CPU seconds of the pipeline's processes over the run (user, system).
    pub cpu: (f64, f64),
    /// Publish-to-row latency; `None` when preloaded.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The largest replica's peak resident memory, MB.
    pub peak_rss_mb: f64,
    /// A steady run over time.
    pub windows: Vec<Window>,
}

impl Figures {
    pub fn users_per_second(&self) -> f64 {
        self.users as f64 / self.seconds.max(1e-6)
    }

    /// The pipeline's rate as a share of the ceiling's.
    pub fn ratio(&self) -> f64 {
        self.users_per_second() / self.ceiling.rows_per_second()
    }

    /// CPU time of the pipeline's processes per user, microseconds.
    pub fn cpu_us_per_user(&self) -> f64 {
        (self.cpu.0 + self.cpu.1) * 1e6 / self.users.max(1) as f64
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ceiling = &self.ceiling;
        writeln!(f, "users: {}, each landed once", self.users)?;
        write!(
            f,
            "pipeline: {} process{} of `userpipe run --roles timestamp,tags,sink`",
            self.replicas,
            if self.replicas == 1 { "" } else { "es" }
        )?;
        match self.killed_after {
            Some(rows) => writeln!(f, ", one killed (SIGKILL) once {rows} rows had landed")?,
            None => writeln!(f)?,
        }
        writeln!(
            f,
            "ceiling: one COPY of {} rows into a fresh table: {:.0} rows/s",
            ceiling.rows,
            ceiling.rows_per_second()
        )?;
        let published = &self.published;
        let how = match (published.asked, published.preloaded) {
            (_, true) => "before the pipeline started".to_owned(),
            (Some(rate), _) => format!("{rate} users/s asked"),
            (None, _) => "as fast as the broker takes them".to_owned(),
        };
        writeln!(
            f,
            "published: {} users in {:.2} s, {:.0} users/s ({how})",
            published.users,
            published.seconds,
            published.rate()
        )?;
        let what = if published.preloaded {
            "draining the backlog, first row to last"
        } else {
            "end to end, first publish to last row"
        };
        writeln!(
            f,
            "throughput: {:.0} users/s {what}, {:.3} of the ceiling",
            self.users_per_second(),
            self.ratio()
        )?;
        writeln!(
            f,
            "cpu: {:.1} µs per user in the pipeline's processes (user {:.2} s + system {:.2} s)",
            self.cpu_us_per_user(),
            self.cpu.0,
            self.cpu.1
        )?;
        match (self.p50_ms, self.p99_ms) {
            (Some(p50), Some(p99)) => {
                writeln!(f, "latency publish->row: p50 {p50:.0} ms, p99 {p99:.0} ms")?
            }
            _ => writeln!(
                f,
                "latency publish->row: not measured (users were preloaded)"
            )?,
        }
        write!(
            f,
            "peak rss: {:.1} MB (the largest pipeline process)",
            self.peak_rss_mb
        )?;
        if !self.windows.is_empty() {
            write!(
                f,
                "\nover time (by publish time):\n  {:>13}  {:>11}  {:>6}  {:>6}  {:>6}",
                "seconds", "published/s", "p50 ms", "p99 ms", "rss MB"
            )?;
            for w in &self.windows {
                let rate = w.published as f64 / (w.to - w.from).max(1e-6);
                write!(
                    f,
                    "\n  {:>13}  {:>11.0}  {:>6.0}  {:>6.0}  {:>6.1}",
                    format!("{:.0}-{:.0}", w.from, w.to),
                    rate,
                    w.p50_ms,
                    w.p99_ms,
                    w.rss_mb
                )?;
            }
        }
        Ok(())
    }
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A steady run cut into windows of `length` seconds by publish time: `users` are (seconds after the
/// first publish, latency in ms); `rss` are (seconds, the largest replica's resident memory in MB) as
/// sampled, the last sample at or before a window's end counting for it.
pub fn windows(users: &[(f64, f64)], rss: &[(f64, f64)], length: f64) -> Vec<Window> {
    let end = users.iter().map(|(at, _)| *at).fold(0.0, f64::max);
    let mut windows = Vec::new();
    let mut from = 0.0;
    while from <= end {
        let to = from + length;
        let mut latencies: Vec<f64> = users
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, ms)| *ms)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let rss_mb = rss
            .iter()
            .take_while(|(at, _)| *at <= to)
            .last()
            .map_or(0.0, |(_, mb)| *mb);
        windows.push(Window {
            from,
            to,
            published: latencies.len(),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            rss_mb,
        });
        from = to;
    }
    windows
}

/// The window length for a steady run publishing for `seconds`: about ten windows, a whole number of
/// seconds, at least five.
pub fn window_length(seconds: f64) -> f64 {
    (seconds / 10.0).ceil().max(5.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn windows_by_publish_time() {
        // One user every 0.1 s for 12 s, each taking (its second + 1) * 10 ms.
        let users: Vec<(f64, f64)> = (0..120)
            .map(|i| {
                let at = i as f64 / 10.0;
                (at, (at.floor() + 1.0) * 10.0)
            })
            .collect();
        let rss = [(4.0, 20.0), (5.0, 21.0), (9.9, 22.0), (15.0, 30.0)];
        let windows = windows(&users, &rss, 5.0);
        assert_eq!(windows.len(), 3);
        assert_eq!(
            (windows[0].from, windows[0].to, windows[0].published),
            (0.0, 5.0, 50)
        );
        assert_eq!((windows[0].p50_ms, windows[0].p99_ms), (30.0, 50.0));
        assert_eq!(windows[0].rss_mb, 21.0);
        assert_eq!(windows[1].rss_mb, 22.0);
        assert_eq!((windows[2].published, windows[2].p99_ms), (20, 120.0));
        assert_eq!(window_length(600.0), 60.0);
        assert_eq!(window_length(20.0), 5.0);
    }

    #[test]
    fn prints_each_rate_beside_the_ceiling() {
        let figures = Figures {
            users: 20_000,
            replicas: 2,
            killed_after: Some(10_000),
            ceiling: Ceiling {
                rows: 200_000,
                seconds: 4.0,
            },
            published: Published {
                users: 20_000,
                seconds: 2.0,
                asked: None,
                preloaded: false,
            },
            seconds: 2.0,
            cpu: (0.3, 0.1),
            p50_ms: Some(12.0),
            p99_ms: Some(80.4),
            peak_rss_mb: 31.0,
            windows: Vec::new(),
        };
        let text = figures.to_string();
        for line in [
            "users: 20000, each landed once",
            "pipeline: 2 processes of `userpipe run --roles timestamp,tags,sink`, one killed (SIGKILL) once 10000 rows had landed",
            "ceiling: one COPY of 200000 rows into a fresh table: 50000 rows/s",
            "published: 20000 users in 2.00 s, 10000 users/s (as fast as the broker takes them)",
            "throughput: 10000 users/s end to end, first publish to last row, 0.200 of the ceiling",
            "cpu: 20.0 µs per user in the pipeline's processes (user 0.30 s + system 0.10 s)",
            "latency publish->row: p50 12 ms, p99 80 ms",
            "peak rss: 31.0 MB (the largest pipeline process)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
    }
}
