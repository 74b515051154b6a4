//! The shipped Prometheus alert rules (`deploy/prometheus/alerts.yml`), read as Prometheus reads them: the
//! YAML's groups and rules, each expression parsed as PromQL (promql-parser), every metric it names one
//! that userpipe's `/metrics` exports, every schedule it names a shipped one, every label its annotations
//! use one its expression keeps.

use std::collections::BTreeSet;
use std::path::Path;

use promql_parser::parser::{self, Expr};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The metric names and the `schedule` label values an expression selects.
#[derive(Debug, Default)]
struct Selected {
    metrics: BTreeSet<String>,
    schedules: BTreeSet<String>,
}

fn walk(expr: &Expr, selected: &mut Selected) {
    let mut selector = |vs: &parser::VectorSelector| {
        let matchers = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten());
        for matcher in matchers {
            match matcher.name.as_str() {
                "__name__" => {
                    selected.metrics.insert(matcher.value.clone());
                }
                "schedule" => {
                    selected.schedules.insert(matcher.value.clone());
                }
                _ => {}
            }
        }
        if let Some(name) = &vs.name {
            selected.metrics.insert(name.clone());
        }
    };
    match expr {
        Expr::VectorSelector(vs) => selector(vs),
        Expr::MatrixSelector(ms) => selector(&ms.vs),
        Expr::Aggregate(e) => {
            walk(&e.expr, selected);
            if let Some(param) = &e.param {
                walk(param, selected);
            }
        }
        Expr::Unary(e) => walk(&e.expr, selected),
        Expr::Binary(e) => {
            walk(&e.lhs, selected);
            walk(&e.rhs, selected);
        }
        Expr::Paren(e) => walk(&e.expr, selected),
        Expr::Subquery(e) => walk(&e.expr, selected),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| walk(arg, selected)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// What is wrong with one rule, if anything: `exported` are the sample names `/metrics` can export,
/// `schedules` the shipped schedules.
fn check_rule(rule: &Yaml, exported: &[String], schedules: &BTreeSet<String>) -> Vec<String> {
    let name = rule["alert"].as_str().unwrap_or("(no name)");
    let mut problems = Vec::new();
    let mut problem = |text: String| problems.push(format!("{name}: {text}"));
    if !name.starts_with("Userpipe") || name.contains(char::is_whitespace) {
        problem("alert names are Userpipe followed by CamelCase".into());
    }
    let Some(text) = rule["expr"].as_str() else {
        problem("no expr".into());
        return problems;
    };
    let expr = match parser::parse(text) {
        Ok(expr) => expr,
        Err(e) => {
            problem(format!("expr does not parse: {e}"));
            return problems;
        }
    };
    let mut selected = Selected::default();
    walk(&expr, &mut selected);
    if selected.metrics.is_empty() {
        problem("expr names no metric".into());
    }
    for metric in &selected.metrics {
        if !exported.contains(metric) {
            problem(format!("{metric} is not a metric userpipe exports"));
        }
    }
    for schedule in &selected.schedules {
        if !schedules.contains(schedule) {
            problem(format!("there is no shipped schedule {schedule}"));
        }
    }
    if let Some(duration) = rule["for"].as_str()
        && parser::parse(&format!("up[{duration}]")).is_err()
    {
        problem(format!("`for: {duration}` is not a duration"));
    }
    if !matches!(
        rule["labels"]["severity"].as_str(),
        Some("warning" | "critical")
    ) {
        problem("labels.severity must be warning or critical".into());
    }
    let annotations = format!(
        "{} {}",
        rule["annotations"]["summary"].as_str().unwrap_or_default(),
        rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default()
    );
    if rule["annotations"]["summary"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        problem("no annotations.summary".into());
    }
    for label in annotations.split("$labels.").skip(1) {
        let label: String = label
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !text.contains(&label) {
            problem(format!(
                "the annotations use $labels.{label}, which the expr does not keep"
            ));
        }
    }
    problems
}

fn exported() -> Vec<String> {
    userpipe::metrics::METRICS.sample_names().to_vec()
}

/// The shipped schedules: the files in `schedules/` and the built-in `prune-history`.
fn shipped_schedules() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = std::fs::read_dir(root().join("schedules"))
        .expect("read schedules/")
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.insert(userpipe::scheduler::history::SCHEDULE.to_owned());
    names
}

#[test]
fn every_alert_rule_parses_and_names_only_what_userpipe_exports() {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml"))
        .expect("read deploy/prometheus/alerts.yml");
    let docs = YamlLoader::load_from_str(&text).expect("alerts.yml is YAML");
    let groups = docs[0]["groups"].as_vec().expect("a list of groups");
    let (exported, schedules) = (exported(), shipped_schedules());
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some(), "a group without a name");
        for rule in group["rules"].as_vec().expect("a group's rules") {
            let name = rule["alert"].as_str().unwrap_or_default().to_owned();
            assert!(names.insert(name.clone()), "two rules named {name}");
            problems.extend(check_rule(rule, &exported, &schedules));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // What the issue asks for, each by its rule.
    for wanted in [
        "UserpipeJobFailed",
        "UserpipeFetchUsersStale",
        "UserpipeNoVerifiedBackup",
        "UserpipeRestoreDrillFailed",
        "UserpipeArchiverFailing",
        "UserpipeArchiverBehind",
        "UserpipeConsumerLagGrowing",
        "UserpipeDeadLettersGrowing",
    ] {
        assert!(names.contains(wanted), "no rule {wanted}");
    }
}

#[test]
fn the_check_sees_a_wrong_metric_schedule_duration_and_label() {
    let rules = YamlLoader::load_from_str(
        "- alert: UserpipeBroken\n  expr: rate(userpipe_job_run_total{schedule=\"fetch-user\"}[5m]) > 0\n  for: soon\n  \
           labels: {severity: page}\n  annotations: {summary: \"{{ $labels.group }} broke\"}\n\
         - alert: UserpipeFine\n  expr: sum by (schedule) (userpipe_job_running) > 0\n  labels: {severity: warning}\n  \
           annotations: {summary: \"{{ $labels.schedule }} runs\"}\n\
         - alert: UserpipeUnparsed\n  expr: sum by (schedule (userpipe_job_running)\n  labels: {severity: warning}\n  \
           annotations: {summary: x}\n",
    )
    .unwrap();
    let rules = rules[0].as_vec().unwrap();
    let (exported, schedules) = (exported(), shipped_schedules());
    let broken = check_rule(&rules[0], &exported, &schedules);
    assert_eq!(
        broken,
        [
            "UserpipeBroken: userpipe_job_run_total is not a metric userpipe exports",
            "UserpipeBroken: there is no shipped schedule fetch-user",
            "UserpipeBroken: `for: soon` is not a duration",
            "UserpipeBroken: labels.severity must be warning or critical",
            "UserpipeBroken: the annotations use $labels.group, which the expr does not keep",
        ]
    );
    assert_eq!(
        check_rule(&rules[1], &exported, &schedules),
        Vec::<String>::new()
    );
    let unparsed = check_rule(&rules[2], &exported, &schedules);
    assert!(
        unparsed[0].starts_with("UserpipeUnparsed: expr does not parse"),
        "{unparsed:?}"
    );
}
