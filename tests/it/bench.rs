//! `userpipe bench` run as an operator runs it, on a short run: the figures it prints have their shape
//! (each rate beside the COPY ceiling, CPU time per user, the rate a steady run achieved), every user
//! lands exactly once, also when one of two replicas is killed mid-run. No speed is asserted here: speed
//! is for BENCHMARKS.md.

use std::process::Command;

/// Runs `userpipe bench <args>` against the stack; its stdout, after asserting it succeeded.
async fn bench(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_userpipe"))
            .arg("bench")
            .args(&args)
            .env("USERPIPE_LOG", "warn")
            .output()
            .expect("run userpipe bench")
    })
    .await
    .expect("join");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "userpipe bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// The line of `text` starting with `key`, without it.
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no line starting {key:?} in:\n{text}"))
}

/// The number in `text` right before `unit`.
fn number_before(text: &str, unit: &str) -> f64 {
    let head = &text[..text
        .find(unit)
        .unwrap_or_else(|| panic!("no {unit:?} in {text:?}"))];
    let word = head.split_whitespace().last().unwrap_or_default();
    word.parse()
        .unwrap_or_else(|_| panic!("{word:?} before {unit:?} in {text:?} is not a number"))
}

/// The lines every run prints, with sane figures.
fn assert_shape(out: &str, users: usize) {
    assert_eq!(
        line(out, "users: "),
        format!("{users}, each landed once"),
        "{out}"
    );
    let ceiling = line(out, "ceiling: one COPY of ");
    assert!(number_before(ceiling, "rows/s") > 0.0, "{out}");
    let throughput = line(out, "throughput: ");
    assert!(number_before(throughput, "users/s") > 0.0, "{out}");
    let ratio = number_before(throughput, "of the ceiling");
    assert!(ratio > 0.0 && ratio < 5.0, "ratio {ratio} in:\n{out}");
    let cpu = line(out, "cpu: ");
    assert!(number_before(cpu, "µs per user") > 0.0, "{out}");
    assert!(cpu.contains("user ") && cpu.contains("system "), "{out}");
    assert!(number_before(line(out, "peak rss: "), "MB") > 0.0, "{out}");
}

#[tokio::test]
async fn bench_prints_rates_beside_the_copy_ceiling_and_cpu_per_user() {
    let out = bench(&["--users", "20000", "--ceiling-rows", "20000"]).await;
    assert_shape(&out, 20_000);
    assert_eq!(
        line(&out, "pipeline: "),
        "1 process of `userpipe run --roles timestamp,tags,sink`"
    );
    assert!(line(&out, "throughput: ").contains("end to end"), "{out}");
    let latency = line(&out, "latency publish->row: ");
    assert!(number_before(latency, "ms,") > 0.0, "{out}");
}

#[tokio::test]
async fn bench_preloaded_times_the_drain() {
    let out = bench(&["--users", "5000", "--ceiling-rows", "5000", "--preload"]).await;
    assert_shape(&out, 5_000);
    assert!(line(&out, "published: ").contains("before the pipeline started"));
    assert!(line(&out, "throughput: ").contains("draining the backlog"));
}

#[tokio::test]
async fn bench_at_a_steady_rate_publishes_at_the_rate_asked_and_shows_it_over_time() {
    let out = bench(&["--users", "3000", "--rate", "500", "--ceiling-rows", "5000"]).await;
    assert_shape(&out, 3_000);
    let published = line(&out, "published: ");
    assert!(published.contains("(500 users/s asked)"), "{out}");
    let achieved = number_before(published, "users/s (");
    // The publisher keeps to the clock: 3000 users at 500/s take 6 s, not more (a slow tick is made up by
    // the next); nor does it publish faster than asked.
    assert!(
        (450.0..=560.0).contains(&achieved),
        "published at {achieved}/s with 500/s asked:\n{out}"
    );
    let over_time = out
        .split_once("over time (by publish time):\n")
        .unwrap_or_else(|| panic!("no figures over time in:\n{out}"))
        .1;
    let rows: Vec<&str> = over_time.lines().skip(1).collect();
    assert!(rows.len() >= 2, "{out}");
    let published_in_windows: f64 = rows
        .iter()
        .map(|r| {
            let cells: Vec<f64> = r
                .split_whitespace()
                .skip(1)
                .map(|c| c.parse().expect("a number"))
                .collect();
            assert_eq!(cells.len(), 4, "{r}");
            cells[0]
        })
        .sum();
    assert!(published_in_windows > 0.0, "{out}");
}

#[tokio::test]
async fn bench_two_replicas_one_killed_every_user_lands_once() {
    let out = bench(&[
        "--users",
        "20000",
        "--ceiling-rows",
        "5000",
        "--replicas",
        "2",
        "--kill-one",
    ])
    .await;
    assert_shape(&out, 20_000);
    let pipeline = line(&out, "pipeline: ");
    assert!(
        pipeline.starts_with(
            "2 processes of `userpipe run --roles timestamp,tags,sink`, one killed (SIGKILL) once "
        ),
        "{out}"
    );
    let killed_after = number_before(pipeline, "rows had landed");
    assert!(
        killed_after > 0.0 && killed_after < 20_000.0,
        "killed after {killed_after} rows, so not mid-run:\n{out}"
    );
}
