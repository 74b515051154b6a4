//! The status page in a real browser (Debian's Chromium over WebDriver) against `userpipe run` as a
//! process on the real stack: it loads with no console error and no request beyond its own address; a
//! failing run shows up as failed within one refresh and opens with its error; the timestamp stage's rate
//! rises while users flow and falls to zero when they stop; the backups section lists a backup taken by
//! `userpipe backup run`, beside the last drill, the archiver and the settings; and with 10,000 runs in
//! the journal the data answers in under 200 ms and the page renders in under 1 s. Every state is saved
//! as a screenshot under `target/status-page/`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use userpipe::config::Config;
use userpipe::scheduler::journal::{self, RunFilter, Status};

use crate::pg::helpers::{
    archiving_cluster_with_schema, code, ops, switch_and_wait_for_the_archive, userpipe,
};
use crate::support::browser::Browser;
use crate::support::randomuser::{FakeRandomUser, Reply};
use crate::support::{TestDb, TestKafka, Userpipe, config_for, prepare, wait_for};

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

fn write_schedule(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text).expect("write a schedule");
}

/// `userpipe run` as a process with `config` (its schedules in `<dir>/schedules`), and its address.
async fn run_userpipe(config: &Config, dir: &Path) -> (Userpipe, String) {
    let mut userpipe = Userpipe::spawn(config, dir, "userpipe.log", &["run"]);
    let base = userpipe.http_base().await;
    (userpipe, base)
}

/// Opens the page and waits until every section has been drawn once.
async fn open_page(browser: &Browser, path: &str) {
    browser.open(path).await;
    browser
        .wait_for_js(
            "the page to render",
            Duration::from_secs(30),
            "return document.documentElement.dataset.rendered === 'true';",
        )
        .await;
}

/// The page stayed on its own server and logged no error.
async fn assert_clean(browser: &Browser) {
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let own = format!("{}/", browser.base);
    let urls = browser.loaded_urls().await;
    let outside: Vec<&String> = urls.iter().filter(|u| !u.starts_with(&own)).collect();
    assert!(outside.is_empty(), "requests beyond {own}: {outside:?}");
}

/// The page fits the viewport's width: no sideways scrolling.
async fn assert_fits(browser: &Browser) {
    let widths = browser
        .js("return [document.documentElement.scrollWidth, window.innerWidth];")
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the page is wider than the window: {widths}"
    );
}

/// The latest value a chart shows.
async fn chart_now(browser: &Browser, stage: &str, series: &str) -> Option<f64> {
    let script = format!(
        "const f = document.querySelector('figure[data-stage=\"{stage}\"][data-series=\"{series}\"]'); \
         return f ? f.dataset.now : null;"
    );
    browser.js(&script).await.as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_clean_and_charts_the_timestamp_rate_rising_and_falling() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let dir = tempfile::tempdir().unwrap();
    let schedules = dir.path().join("schedules");
    std::fs::create_dir(&schedules).unwrap();
    let schedule = |enabled: bool| {
        format!(
            "job = \"fetch-users\"\ncron = \"*/2 * * * * *\"\nenabled = {enabled}\n[params]\nresults = 40\n"
        )
    };
    write_schedule(&schedules, "fetch-users", &schedule(true));
    write_schedule(
        &schedules,
        "base-backup",
        "job = \"base-backup\"\ncron = \"0 2 * * 6\"\nenabled = false\n",
    );
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = schedules.clone();
    prepare(&config, &db.pool).await;
    let (mut process, base) = run_userpipe(&config, dir.path()).await;
    let browser = Browser::start(&base, DESKTOP.0, DESKTOP.1).await;
    open_page(&browser, "/").await;
    assert_clean(&browser).await;

    // The schedules: next fire times beside the flowing one, the disabled one said to be so, no writing
    // action without a token.
    let row = |name: &str| format!(".row[data-schedule=\"{name}\"]");
    let disabled = browser
        .find(&row("base-backup"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        disabled.contains("⊘ disabled") && disabled.contains("no firing planned"),
        "{disabled}"
    );
    let fetch = browser
        .find(&row("fetch-users"))
        .await
        .text()
        .await
        .unwrap();
    assert!(fetch.contains("next "), "{fetch}");
    assert_eq!(
        browser
            .js("return document.querySelectorAll('.run-now').length;")
            .await,
        0
    );
    assert_eq!(
        browser
            .js("return getComputedStyle(document.getElementById('token-field')).display;")
            .await,
        "none"
    );

    // Users flow: runs appear as successes (a symbol and a word beside the colour), the rate rises.
    browser
        .wait_for_js(
            "successful fetch runs on the timeline",
            Duration::from_secs(30),
            &format!(
                "return document.querySelectorAll('{} .m.st-succeeded').length > 0;",
                row("fetch-users")
            ),
        )
        .await;
    let rate = wait_for(
        "a non-zero timestamp rate",
        Duration::from_secs(90),
        || async {
            chart_now(&browser, "timestamp", "rate")
                .await
                .filter(|r| *r > 0.0)
        },
    )
    .await;
    // The row's last run: a succeeded one, once no run is going on at the moment the row is drawn.
    browser
        .wait_for_js(
            "the last fetch run shown as succeeded",
            Duration::from_secs(30),
            &format!(
                "const t = document.querySelector('{} .last').textContent; \
                 return t.includes('✓') && t.includes('succeeded');",
                row("fetch-users")
            ),
        )
        .await;
    let points = browser
        .js("return document.querySelector('figure[data-stage=\"timestamp\"][data-series=\"rate\"] polyline').getAttribute('points');")
        .await;
    assert!(
        points.as_str().is_some_and(|p| !p.is_empty()),
        "the rate chart draws a line: {points}"
    );
    eprintln!("timestamp rate while users flow: {rate} msg/s");
    browser.screenshot("flowing-1280x800").await;

    browser.resize(PHONE.0, PHONE.1).await;
    browser
        .wait_for_js(
            "the phone layout",
            Duration::from_secs(10),
            "return window.innerWidth <= 400;",
        )
        .await;
    open_page(&browser, "/").await;
    assert_fits(&browser).await;
    browser.screenshot("flowing-390x844").await;
    browser.resize(DESKTOP.0, DESKTOP.1).await;
    open_page(&browser, "/").await;
    assert_fits(&browser).await;

    // The flow stops: the schedule is disabled (hot reload), the rate falls to zero.
    write_schedule(&schedules, "fetch-users", &schedule(false));
    wait_for(
        "the timestamp rate to fall to zero",
        Duration::from_secs(90),
        || async {
            chart_now(&browser, "timestamp", "rate")
                .await
                .filter(|r| *r == 0.0)
        },
    )
    .await;
    let fetch = browser
        .find(&row("fetch-users"))
        .await
        .text()
        .await
        .unwrap();
    assert!(fetch.contains("disabled"), "{fetch}");
    browser.screenshot("stopped-1280x800").await;
    assert_clean(&browser).await;

    browser.quit().await;
    assert!(process.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_shows_as_failed_within_one_refresh_and_opens_with_its_error() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let source = FakeRandomUser::start(vec![Reply::json(
        500,
        r#"{"error":"Uh oh, something has gone wrong. Please tell us on GitHub"}"#,
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let schedules = dir.path().join("schedules");
    std::fs::create_dir(&schedules).unwrap();
    write_schedule(
        &schedules,
        "fetch-broken",
        &format!(
            "job = \"fetch-users\"\ncron = \"@yearly\"\n[params]\nsource = \"{}\"\n",
            source.url
        ),
    );
    let token = "t0ken-for-the-page";
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = schedules;
    config.fetch.max_attempts = 1;
    config.http.token = userpipe::config::Secret::new(token);
    prepare(&config, &db.pool).await;
    let (mut process, base) = run_userpipe(&config, dir.path()).await;
    let browser = Browser::start(&base, DESKTOP.0, DESKTOP.1).await;
    open_page(&browser, "/").await;
    let row = ".row[data-schedule=\"fetch-broken\"]";

    // Run it now from the page, with the token.
    browser.find("#token").await.send_keys(token).await.unwrap();
    let button = browser.find(&format!("{row} .run-now")).await;
    button.click().await.unwrap();
    browser
        .wait_for_js(
            "the run to be accepted",
            Duration::from_secs(10),
            &format!(
                "return document.querySelector('{row} .run-now').textContent.includes('started');"
            ),
        )
        .await;
    let filter = RunFilter {
        schedule: Some("fetch-broken".into()),
        limit: 5,
        ..Default::default()
    };
    let run = wait_for(
        "the failed run in the journal",
        Duration::from_secs(30),
        || async {
            journal::list(&db.pool, &filter)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.status != Status::Running)
        },
    )
    .await;
    assert_eq!(run.status, Status::Failed);

    // Within one refresh: the first refresh that starts after the run is in the journal shows it.
    let seen_at = browser.refreshes().await;
    wait_for("one whole refresh", Duration::from_secs(20), || async {
        (browser.refreshes().await >= seen_at + 2).then_some(())
    })
    .await;
    let mark_css = format!("{row} rect.m.st-failed[data-run=\"{}\"]", run.run_id);
    let marks = browser
        .js(&format!(
            "return document.querySelectorAll('{mark_css}').length;"
        ))
        .await;
    assert_eq!(marks, 1, "the failed run's mark after one refresh");
    let glyph = browser
        .js(&format!(
            "return document.querySelector('{row} text.g.st-failed').textContent;"
        ))
        .await;
    assert_eq!(glyph, "✗", "a symbol beside the colour");

    // Hovering shows its time, duration and error.
    let mark = browser.find(&mark_css).await;
    browser
        .driver()
        .action_chain()
        .move_to_element_center(&mark)
        .perform()
        .await
        .unwrap();
    let tip = browser
        .wait_for_js(
            "the tooltip",
            Duration::from_secs(5),
            "const t = document.getElementById('tip'); return t.hidden ? '' : t.textContent;",
        )
        .await;
    let tip = tip.as_str().unwrap();
    for part in ["✗ failed · fetch-broken", "duration ", "error: ", "500"] {
        assert!(tip.contains(part), "tooltip lacks {part:?}: {tip}");
    }
    browser.screenshot("failed-run-hover").await;

    // Clicking opens the run: its attempt with the error.
    mark.click().await.unwrap();
    let error = browser
        .wait_for_js(
            "the run's attempts",
            Duration::from_secs(10),
            "const e = document.querySelector('#run[open] .attempt pre.error'); return e ? e.textContent : '';",
        )
        .await;
    let error = error.as_str().unwrap();
    assert_eq!(
        error,
        run.error.as_deref().unwrap(),
        "the attempt's whole error"
    );
    assert!(error.contains("500"), "{error}");
    let dialog = browser.find("#run").await.text().await.unwrap();
    assert!(
        dialog.contains("fetch-broken") && dialog.contains("✗failed"),
        "{dialog}"
    );
    browser.screenshot("failed-run-opened").await;
    assert_clean(&browser).await;

    browser.quit().await;
    assert!(process.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_section_lists_a_backup_taken_by_the_cli_and_the_last_drill() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let ops = ops(&cluster).await;
    let mut config = ops.config.clone();
    let kafka = TestKafka::new();
    let prefixed = config_for(&kafka, &ops.db.url());
    (config.kafka, config.topics) = (prefixed.kafka, prefixed.topics);
    // The desired settings are the cluster's own: the page says they are in force.
    let desired = ops.dir.path().join("archiving.conf");
    std::fs::write(
        &desired,
        format!(
            "wal_level = replica\narchive_mode = on\narchive_command = '{} %p {}/%f'\nmax_wal_senders = 4\n",
            cluster.archive_script().display(),
            cluster.archive().display()
        ),
    )
    .unwrap();
    config.pgconf.file = desired;

    let backup = userpipe(&config, ops.dir.path(), &["backup", "run"]);
    assert_eq!(
        code(&backup),
        0,
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let listed = userpipe::pg::backup::list(&ops.backups).unwrap();
    assert_eq!(listed.len(), 1);
    let id = listed[0].id.clone();

    // The whole page at work, for the README's picture: users flowing, a drill at start, a fetch that
    // fails at start, and a token so "Run now" shows.
    let schedules = ops.dir.path().join("schedules");
    std::fs::create_dir(&schedules).unwrap();
    write_schedule(
        &schedules,
        "restore-drill",
        "job = \"restore-drill\"\ncron = \"0 4 * * 6\"\nrun_on_start = true\n",
    );
    write_schedule(
        &schedules,
        "fetch-users",
        "job = \"fetch-users\"\ncron = \"*/2 * * * * *\"\n[params]\nresults = 25\n",
    );
    write_schedule(
        &schedules,
        "fetch-mirror",
        "job = \"fetch-users\"\ncron = \"@hourly\"\nrun_on_start = true\n[params]\nsource = \"http://127.0.0.1:9/api/\"\n",
    );
    write_schedule(
        &schedules,
        "base-backup",
        "job = \"base-backup\"\ncron = \"0 2 * * 6\"\nenabled = false\n",
    );
    config.scheduler.dir = schedules;
    config.fetch.max_attempts = 1;
    config.http.token = userpipe::config::Secret::new("t0ken-for-the-page");
    let (mut process, base) = run_userpipe(&config, ops.dir.path()).await;
    let browser = Browser::start(&base, DESKTOP.0, DESKTOP.1).await;
    open_page(&browser, "/").await;

    let backup_row = browser
        .find(&format!("#backups tr[data-backup=\"{id}\"]"))
        .await
        .text()
        .await
        .unwrap();
    assert!(backup_row.contains("✓ verified"), "{backup_row}");
    let bytes = listed[0].metadata.as_ref().unwrap().bytes;
    assert!(
        backup_row.contains(" MB") || backup_row.contains(" kB"),
        "{backup_row} ({bytes} bytes)"
    );

    let drill = browser
        .wait_for_js(
            "the drill's result",
            Duration::from_secs(120),
            "const d = document.getElementById('drill').textContent; return d.includes('succeeded') ? d : '';",
        )
        .await;
    let drill = drill.as_str().unwrap();
    assert!(
        drill.contains("rows restored") && drill.contains(&id),
        "{drill}"
    );
    let settings = browser
        .find("#settings [data-verdict]")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(settings, "✓ in force");
    let archiver = browser.find("#archiver").await.text().await.unwrap();
    assert!(archiver.contains("✓ archiving keeps up"), "{archiver}");
    wait_for(
        "a non-zero timestamp rate",
        Duration::from_secs(90),
        || async {
            chart_now(&browser, "timestamp", "rate")
                .await
                .filter(|r| *r > 0.0)
        },
    )
    .await;
    browser
        .wait_for_js(
            "the failed fetch on the timeline",
            Duration::from_secs(30),
            "return document.querySelectorAll('.row[data-schedule=\"fetch-mirror\"] rect.m.st-failed').length === 1;",
        )
        .await;
    // A minute of samples, so the charts draw lines.
    browser
        .wait_for_js(
            "four pipeline samples",
            Duration::from_secs(120),
            "return document.querySelector('figure[data-stage=\"timestamp\"][data-series=\"rate\"] polyline.line')\
               ?.getAttribute('points').split(' ').length >= 4;",
        )
        .await;
    browser
        .js("document.getElementById('postgres').scrollIntoView();")
        .await;
    browser.screenshot("postgres-1280x800").await;

    // The whole page in one picture.
    let height = browser
        .js("window.scrollTo(0, 0); return document.documentElement.scrollHeight;")
        .await;
    browser
        .resize(DESKTOP.0, height.as_u64().unwrap() as u32)
        .await;
    open_page(&browser, "/").await;
    browser.screenshot("overview-full-page").await;
    assert_clean(&browser).await;

    browser.quit().await;
    assert!(process.terminate().await.success());
}

/// `n` runs over the last 7 days, in one statement: four schedules, mostly successes.
async fn insert_runs(db: &TestDb, n: usize) {
    let now = chrono::Utc::now();
    let schedules = [
        "fetch-users",
        "base-backup",
        "restore-drill",
        "pgconf-enforce",
    ];
    // One in 40 fails, one in 100 is skipped, one in 200 times out; the rest succeed.
    let status_of = |i: usize| match i {
        i if i % 200 == 7 => "timed_out",
        i if i % 100 == 3 => "skipped",
        i if i % 40 == 1 => "failed",
        _ => "succeeded",
    };
    let mut ids = Vec::with_capacity(n);
    let (mut names, mut states, mut starts, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        ids.push(uuid::Uuid::new_v4());
        names.push(schedules[i % schedules.len()].to_owned());
        let status = status_of(i);
        states.push(status.to_owned());
        starts.push(now - chrono::Duration::seconds(60 + (i as i64 * 604_000 / n as i64)));
        errors
            .push((status == "failed").then(|| format!("run {i} failed: the source answered 500")));
    }
    sqlx::query(
        "INSERT INTO job_runs (run_id, attempt, schedule, job, trigger, status, error, started_at, finished_at, \
           duration_ms, instance) \
         SELECT id, 1, schedule, 'fetch-users', 'schedule', status, error, started, started + interval '1.5 s', \
           1500, 'test:1' \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) \
           AS r(id, schedule, status, started, error)",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&states)
    .bind(&starts)
    .bind(&errors)
    .execute(&db.pool)
    .await
    .expect("insert the runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ten_thousand_runs_the_data_answers_in_200_ms_and_the_page_renders_in_1_s() {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let dir = tempfile::tempdir().unwrap();
    let schedules = dir.path().join("schedules");
    std::fs::create_dir(&schedules).unwrap();
    write_schedule(
        &schedules,
        "fetch-users",
        "job = \"fetch-users\"\ncron = \"@yearly\"\n",
    );
    let mut config = config_for(&kafka, &db.url());
    config.scheduler.dir = schedules;
    prepare(&config, &db.pool).await;
    insert_runs(&db, 10_000).await;
    let (mut process, base) = run_userpipe(&config, dir.path()).await;

    let client = reqwest::Client::new();
    let url = format!("{base}/api/timeline?range=7d");
    let mut times = Vec::new();
    for _ in 0..7 {
        // The answer's time: until its last byte is in (reading the JSON here is the test's own cost).
        let clock = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        times.push(clock.elapsed());
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["runs"].as_array().unwrap().len(), 10_000);
    }
    // What the endpoint costs is its fastest answer: on a shared machine other work only adds time (the
    // median is printed too).
    times.sort();
    let (fastest, median) = (times[0], times[times.len() / 2]);
    eprintln!(
        "GET /api/timeline?range=7d with 10,000 runs: fastest {fastest:?}, median {median:?} of {times:?}"
    );

    let browser = Browser::start(&base, DESKTOP.0, DESKTOP.1).await;
    let mut rendered = f64::MAX;
    for _ in 0..3 {
        open_page(&browser, "/?range=7d").await;
        let this = browser
            .js("return performance.getEntriesByName('rendered')[0].startTime;")
            .await
            .as_f64()
            .unwrap();
        rendered = rendered.min(this);
    }
    // Each run is a mark: a rectangle of its own, or a rectangle in its status's path.
    let marks = browser
        .js("let n = document.querySelectorAll('#timeline rect.m').length; \
             for (const p of document.querySelectorAll('#timeline path.m')) n += p.getAttribute('d').split('M').length - 1; \
             return n;")
        .await;
    let timings = browser
        .js("return performance.getEntriesByType('resource').map(e => `${new URL(e.name).pathname} ${e.startTime.toFixed(0)}-${e.responseEnd.toFixed(0)} ms`)\
             .concat(performance.getEntriesByType('measure').map(e => `${e.name} ${e.startTime.toFixed(0)}+${e.duration.toFixed(0)} ms`));")
        .await;
    eprintln!(
        "page with 10,000 runs rendered {rendered:.0} ms after navigation start; its requests: {timings}"
    );
    browser.screenshot("ten-thousand-runs-1280x800").await;
    assert_eq!(marks, 10_000, "one mark per run");
    assert!(
        fastest < Duration::from_millis(200),
        "the data endpoint took {fastest:?} at best"
    );
    assert!(
        rendered < 1000.0,
        "the page rendered after {rendered:.0} ms at best of three"
    );
    assert_clean(&browser).await;

    browser.quit().await;
    assert!(process.terminate().await.success());
}
