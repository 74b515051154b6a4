//! The shape of `src/`, read from the sources: the layering rule of ARCHITECTURE.md (which top-level
//! module may use which), no module that uses one that uses it back, every file opening with a `//!` line
//! and staying under 600 lines, and the code map naming every file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The shared plumbing: every part may use it; it uses none of the parts.
const PLUMBING: [&str; 5] = ["config", "db", "kafka", "metrics", "retry"];

/// Which top-level modules each top-level module may use, besides itself and the crate root. Mirrors
/// ARCHITECTURE.md's layering rule; a new top-level module must be placed here.
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let with = |extra: &[&'static str]| -> BTreeSet<&'static str> {
        PLUMBING.iter().chain(extra).copied().collect()
    };
    BTreeMap::from([
        ("config", with(&[])),
        ("db", with(&[])),
        ("kafka", with(&[])),
        ("metrics", with(&[])),
        ("retry", with(&[])),
        // The parts: the pipeline and the PostgreSQL operations know nothing of each other or of the
        // scheduler that runs their jobs.
        ("pipeline", with(&[])),
        ("pg", with(&[])),
        ("scheduler", with(&["pipeline", "pg"])),
        // What wires the parts together.
        ("http", with(&["pipeline", "pg", "scheduler"])),
        ("app", with(&["pipeline", "pg", "scheduler", "http"])),
        // The benchmark runs the pipeline as child processes (`userpipe run`), not in-process.
        ("bench", with(&["pipeline"])),
        (
            "cli",
            with(&["pipeline", "pg", "scheduler", "http", "app", "bench"]),
        ),
    ])
}

/// The most lines a source file may have.
const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// One source file: its module path (`["pg", "backup", "run"]`; empty for `lib.rs`) and its text.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    collect(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|path| !path.ends_with("main.rs"))
        .map(|path| {
            let relative = path.strip_prefix(src()).expect("under src");
            let mut module: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            Source { path, module, text }
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without its comments, string and character literals, and unit tests (a test may
/// use anything).
fn product_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut code = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let previous_is_ident = i > 0 && ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == 'r' && !previous_is_ident && matches!(next, Some('#' | '"')) {
            // A raw string: r"..." or r#"..."#, closed by a quote and as many hashes.
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                code.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body: String = chars[i + 2 + hashes..].iter().collect();
            let length = body.find(&close).map_or(body.len(), |at| at + close.len());
            i += 2 + hashes + body[..length].chars().count();
            code.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            code.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // 'x'
        } else {
            code.push(c);
            i += 1;
        }
    }
    code
}

/// Every path a file's code names: each `use` tree expanded (`use crate::{a, b::c}` names `crate::a` and
/// `crate::b::c`), and every `crate::`, `super::` or `self::` path elsewhere in the code.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut elsewhere = String::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use ") {
        elsewhere.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        expand(&after[..end], &[], &mut found);
        rest = &after[end..];
    }
    elsewhere.push_str(rest);
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for root in ["crate::", "super::", "self::"] {
        for (at, _) in elsewhere.match_indices(root) {
            if elsewhere[..at].chars().next_back().is_some_and(word) {
                continue;
            }
            let tail: String = elsewhere[at..]
                .chars()
                .take_while(|&c| word(c) || c == ':')
                .collect();
            found.push(
                tail.split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
    }
    found
}

/// `word` at a word boundary in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Expands one use tree (`a::{b, c::{d}}`) under `prefix` into full paths.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let mut path = prefix.to_vec();
            let head = tree.split(" as ").next().unwrap_or_default();
            path.extend(
                head.split("::")
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && *s != "*")
                    .map(String::from),
            );
            if path.last().is_some_and(|s| s == "self") {
                path.pop();
            }
            out.push(path);
        }
        Some(open) => {
            let close = tree.rfind('}').expect("a closing brace");
            let mut path = prefix.to_vec();
            path.extend(
                tree[..open]
                    .split("::")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
            for item in split_top_level(&tree[open + 1..close]) {
                expand(item, &path, out);
            }
        }
    }
}

/// `a, b::{c, d}, e` split at the commas outside braces.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (at, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items.into_iter().filter(|i| !i.trim().is_empty()).collect()
}

/// The module of `modules` that `path`, named in `from`, refers to: the longest prefix that is a module.
/// `None` for paths outside the crate (`std::`, other crates).
fn resolve(
    path: &[String],
    from: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut full: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") => from[..from.len().saturating_sub(1)].to_vec(),
        Some("self") => from.to_vec(),
        _ => return None,
    };
    let mut rest = &path[1..];
    // `super::super::x`
    while rest.first().is_some_and(|s| s == "super") {
        full.pop();
        rest = &rest[1..];
    }
    full.extend(rest.iter().cloned());
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// Every module each module uses (itself excluded).
fn graph(sources: &[Source]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    sources
        .iter()
        .map(|source| {
            let uses = paths(&product_code(&source.text))
                .iter()
                .filter_map(|path| resolve(path, &source.module, &modules))
                .filter(|target| *target != source.module)
                .collect();
            (source.module.clone(), uses)
        })
        .collect()
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|m| name(m)).collect();
            cycle.push(name(node));
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The uses that break the layering rule, as `from -> to` lines.
fn violations(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let allowed = allowed();
    let mut broken = Vec::new();
    for (from, uses) in graph {
        let Some(top) = from.first() else { continue };
        let Some(may) = allowed.get(top.as_str()) else {
            broken.push(format!("{top}: not placed in the layering rule (tests/static_checks/layering.rs and ARCHITECTURE.md)"));
            continue;
        };
        for to in uses {
            let Some(target) = to.first() else { continue };
            if target != top && !may.contains(target.as_str()) {
                broken.push(format!("{} uses {}", name(from), name(to)));
            }
        }
    }
    broken
}

#[test]
fn the_parts_use_only_what_the_layering_rule_allows() {
    let broken = violations(&graph(&sources()));
    assert!(
        broken.is_empty(),
        "the layering rule of ARCHITECTURE.md is broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let cycle = find_cycle(&graph(&sources()));
    assert_eq!(cycle, None, "modules that use each other, in a loop");
}

#[test]
fn the_checks_see_a_broken_rule_and_a_loop() {
    let module = |text: &str, file: &str, path: &[&str]| Source {
        path: PathBuf::from(file),
        module: path.iter().map(|s| s.to_string()).collect(),
        text: text.to_string(),
    };
    let sources = [
        module("pub mod conf;\npub mod backup;\n", "pg/mod.rs", &["pg"]),
        module(
            "//! x\nuse crate::pg::{backup::{self, run}, conf};\n// crate::scheduler in a comment\n",
            "pg/conf.rs",
            &["pg", "conf"],
        ),
        module(
            "use super::conf::Thing;\nfn f() { crate::scheduler::jobs::execute(\"crate::http\"); }\n\
             fn g<'a>(c: char) -> bool { c == '\"' || c == '\\'' }\nconst R: &str = r#\"crate::app \"x\"\"#;\n\
             #[cfg(test)]\nmod tests {\n    use crate::cli::x;\n}\n",
            "pg/backup.rs",
            &["pg", "backup"],
        ),
        module("pub mod jobs;\n", "scheduler/mod.rs", &["scheduler"]),
        module(
            "use crate::pg::conf;\n",
            "scheduler/jobs.rs",
            &["scheduler", "jobs"],
        ),
        module("", "http.rs", &["http"]),
        module("", "cli.rs", &["cli"]),
    ];
    let graph = graph(&sources);
    let conf = vec!["pg".to_string(), "conf".to_string()];
    let backup = vec!["pg".to_string(), "backup".to_string()];
    assert_eq!(graph[&conf], BTreeSet::from([backup.clone()]));
    assert_eq!(
        graph[&backup],
        BTreeSet::from([conf.clone(), vec!["scheduler".into(), "jobs".into()]]),
        "comments, strings and unit tests do not count"
    );
    assert_eq!(violations(&graph), ["pg::backup uses scheduler::jobs"]);
    assert_eq!(
        find_cycle(&graph),
        Some(vec![
            "pg::backup".into(),
            "pg::conf".into(),
            "pg::backup".into()
        ])
    );
}

#[test]
fn every_source_file_opens_with_what_it_owns_and_stays_short() {
    for source in sources() {
        let first = source.text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("//! "),
            "{} does not open with a `//!` line saying what it owns",
            source.path.display()
        );
        let lines = source.text.lines().count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} lines, more than {MAX_LINES}: split it by concern",
            source.path.display()
        );
    }
}

#[test]
fn the_code_map_names_every_source_file() {
    let map =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("read ARCHITECTURE.md");
    let mut files = Vec::new();
    collect(&src(), &mut files);
    for file in files {
        let relative = file
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("under the repository")
            .to_string_lossy()
            .into_owned();
        assert!(
            map.contains(&format!("`{relative}`")),
            "ARCHITECTURE.md's code map does not name `{relative}`"
        );
    }
}

/// Each migration has a version of its own, in order from 1 with no gap: two branches that each added
/// "the next" migration made two 0004s, and sqlx then stops every database at start.
#[test]
fn migration_versions_are_unique_and_without_gaps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut versions: Vec<(u32, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let version = name
                .split('_')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("migrations/{name}: no version number before `_`"));
            (version, name)
        })
        .collect();
    versions.sort();
    for (i, (version, name)) in versions.iter().enumerate() {
        assert_eq!(
            *version,
            i as u32 + 1,
            "migrations/{name}: expected version {}, in order and each once (all: {versions:?})",
            i + 1
        );
    }
}
