//! Tests of the configuration: the file, the environment rule through `Config::resolve`, the checks.

use std::path::Path;
use std::time::Duration;

use super::env::{Origin, Origins, variable_of};
use super::load::Config;
use super::secret::{Secret, redact_url, split_password};
use super::sections::Compression;

#[test]
fn empty_file_gives_the_defaults() {
    let config = Config::parse("").unwrap();
    assert_eq!(config.kafka.brokers, "127.0.0.1:19092");
    assert_eq!(config.topics.users, "users_info");
    assert_eq!(config.topics.enriched, "enriched_users_info_randomtopics");
    assert_eq!(config.fetch.timeout, Duration::from_secs(10));
    config.validate().unwrap();
}

#[test]
fn the_shipped_file_states_the_defaults() {
    let shipped = Config::parse(include_str!("../../userpipe.toml")).unwrap();
    assert_eq!(
        shipped.to_redacted_toml(),
        Config::default().to_redacted_toml()
    );
}

#[test]
fn reads_durations_and_nested_keys() {
    let config =
        Config::parse("[fetch]\ntimeout = \"2s 500ms\"\nsource = \"generator\"\nseed = 7\n")
            .unwrap();
    assert_eq!(config.fetch.timeout, Duration::from_millis(2500));
    assert_eq!(config.fetch.seed, Some(7));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let error = Config::parse("[kafka]\nbrokers = \"x:1\"\nbrokerz = \"y\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains("unknown field `brokerz`"), "{error}");
}

/// `file` (as `userpipe.toml`) with `vars` laid over it; `_FILE` variables name files in `files`.
fn resolve(
    file: &str,
    vars: &[(&str, &str)],
    files: &[(&str, &str)],
) -> anyhow::Result<(Config, Origins)> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let read = |path: &Path| {
        files
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map(|(_, content)| content.to_string())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    Config::resolve(Some((Path::new("userpipe.toml"), file)), &vars, read)
}

fn env(name: &str) -> Origin {
    Origin::Env {
        variable: name.into(),
    }
}

#[test]
fn environment_overrides_the_file_and_says_so() {
    let file = "[kafka]\nbrokers = \"file:1\"\npartitions = 6\n\n[sink]\nbatch_size = 10\n";
    let (config, origins) = resolve(
        file,
        &[
            ("USERPIPE_KAFKA_BROKERS", "env:2"),
            ("USERPIPE_SINK__BATCH_SIZE", "250"),
            ("USERPIPE_SINK__LINGER", "1s"),
            ("DATABASE_URL", "postgres://u:hunter2@db:5432/x"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(config.kafka.brokers, "env:2");
    assert_eq!(config.kafka.partitions, 6);
    assert_eq!(config.sink.batch_size, 250);
    assert_eq!(config.sink.linger, Duration::from_secs(1));
    assert_eq!(
        config.database.url.expose(),
        "postgres://u:hunter2@db:5432/x"
    );
    assert_eq!(origins.of("kafka.brokers"), &env("USERPIPE_KAFKA_BROKERS"));
    assert_eq!(
        origins.of("sink.batch_size"),
        &env("USERPIPE_SINK__BATCH_SIZE")
    );
    let file_line = |line| Origin::File {
        path: "userpipe.toml".into(),
        line,
    };
    assert_eq!(origins.of("kafka.partitions"), &file_line(3));
    assert_eq!(origins.of("fetch.timeout"), &Origin::Default);
    assert_eq!(
        origins.of("sink.batch_size").to_string(),
        "environment USERPIPE_SINK__BATCH_SIZE"
    );
    assert_eq!(file_line(3).to_string(), "file userpipe.toml:3");
}

#[test]
fn the_delivery_timeout_is_librdkafkas_unless_set_and_has_bounds() {
    assert_eq!(
        Config::default().kafka.delivery_timeout,
        Duration::from_secs(300)
    );
    let (config, origins) =
        resolve("", &[("USERPIPE_KAFKA__DELIVERY_TIMEOUT", "3s")], &[]).unwrap();
    assert_eq!(config.kafka.delivery_timeout, Duration::from_secs(3));
    assert_eq!(
        origins.of("kafka.delivery_timeout"),
        &env("USERPIPE_KAFKA__DELIVERY_TIMEOUT")
    );
    let refused = |file: &str| resolve(file, &[], &[]).unwrap_err().to_string();
    assert_eq!(
        refused("[kafka]\ndelivery_timeout = \"500ms\"\n"),
        "kafka.delivery_timeout must be 1s or more, not 500ms (from file userpipe.toml:2)"
    );
    assert_eq!(
        refused("[kafka]\ndelivery_timeout = \"30d\"\n"),
        "kafka.delivery_timeout must be at most 1day, not 30days (from file userpipe.toml:2)"
    );
}

#[test]
fn compression_is_none_unless_set() {
    assert_eq!(Config::default().kafka.compression, Compression::None);
    let file = "[kafka]\ncompression = \"gzip\"\n";
    let config = Config::parse(file).unwrap();
    assert_eq!(config.kafka.compression, Compression::Gzip);
    let (config, _) = resolve(file, &[("USERPIPE_KAFKA_COMPRESSION", "zstd")], &[]).unwrap();
    assert_eq!(config.kafka.compression, Compression::Zstd);
    let error = resolve(file, &[("USERPIPE_KAFKA_COMPRESSION", "LZ4")], &[])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("USERPIPE_KAFKA_COMPRESSION: unknown variant `LZ4`, expected one of"),
        "{error}"
    );
    let error = Config::parse("[kafka]\ncompression = \"brotli\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 2"), "{error}");
    assert!(error.contains("unknown variant `brotli`"), "{error}");
    for (name, compression) in Compression::ALL {
        assert_eq!(name.parse(), Ok(compression));
        assert_eq!(compression.name(), name);
    }
}

#[test]
fn every_key_is_set_by_the_rule_s_variable() {
    // Each key of the defaults, set by its variable to a value of its kind that is not the default: the
    // first of a few that the configuration accepts.
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    let mut keys = 0;
    for (section, table) in &defaults {
        for (key, value) in table.as_table().unwrap() {
            let dotted = format!("{section}.{key}");
            let variable = variable_of(&dotted);
            let candidates = match value {
                toml::Value::Integer(n) => vec![(n + 1).to_string()],
                toml::Value::Boolean(b) => vec![(!b).to_string()],
                toml::Value::String(s) => {
                    let text = [
                        "7s",
                        "30d",
                        "postgres://h/other",
                        "generator",
                        "https://example.com/x",
                        "32k",
                        "gzip",
                        "zstd",
                        "always",
                    ];
                    let mut texts: Vec<String> = text.iter().map(|t| t.to_string()).collect();
                    texts.push(format!("{s}x"));
                    texts
                }
                other => panic!(
                    "{dotted} is a {}: teach this test its kind",
                    other.type_str()
                ),
            };
            let set = candidates.iter().find_map(|other| {
                let (config, origins) = resolve("", &[(&variable, other)], &[]).ok()?;
                let shown = toml::Table::try_from(&config).unwrap();
                (&shown[section.as_str()][key.as_str()] != value).then_some(origins)
            });
            let origins = set.unwrap_or_else(|| {
                panic!("{variable} did not set {dotted} to any of {candidates:?}")
            });
            assert_eq!(origins.of(&dotted), &env(&variable));
            keys += 1;
        }
    }
    assert!(keys >= 30, "only {keys} keys seen");
    let (config, _) = resolve("", &[("USERPIPE_FETCH__SEED", "42")], &[]).unwrap();
    assert_eq!(
        config.fetch.seed,
        Some(42),
        "an optional key with no default"
    );
}

#[test]
fn older_names_keep_working_and_the_rule_s_name_wins() {
    let (config, origins) = resolve(
        "",
        &[
            ("USERPIPE_BACKUP_DIR", "/var/lib/userpipe/backups"),
            ("USERPIPE_WAL_ARCHIVE", "/var/lib/postgresql/wal-archive"),
            ("USERPIPE_PG_BIN", "/usr/lib/postgresql/16/bin"),
            ("USERPIPE_PGCONF", "/etc/userpipe/pgconf/archiving.conf"),
            ("USERPIPE_HTTP_ADDR", "0.0.0.0:8080"),
            ("USERPIPE_HTTP__LISTEN", "0.0.0.0:9090"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(config.backup.dir, Path::new("/var/lib/userpipe/backups"));
    assert_eq!(
        config.backup.wal_archive,
        Path::new("/var/lib/postgresql/wal-archive")
    );
    assert_eq!(
        config.backup.pg_bin,
        Path::new("/usr/lib/postgresql/16/bin")
    );
    assert_eq!(
        config.pgconf.file,
        Path::new("/etc/userpipe/pgconf/archiving.conf")
    );
    assert_eq!(config.http.listen, "0.0.0.0:9090");
    assert_eq!(origins.of("http.listen"), &env("USERPIPE_HTTP__LISTEN"));
    assert_eq!(config.backup.keep, 4);
    let (config, _) = resolve("", &[("USERPIPE_PGCONF__FILE", "/x.conf")], &[]).unwrap();
    assert_eq!(
        config.pgconf.file,
        Path::new("/x.conf"),
        "a key named `file`"
    );
}

#[test]
fn an_empty_variable_is_unset_except_where_empty_means_something() {
    let (config, origins) = resolve(
        "",
        &[
            ("USERPIPE_HTTP_ADDR", ""),
            ("USERPIPE_SOURCE", ""),
            ("USERPIPE_SINK__BATCH_SIZE", ""),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        config.http.listen, "",
        "an empty USERPIPE_HTTP_ADDR turns the endpoints off"
    );
    assert_eq!(config.fetch.source, "https://randomuser.me/api/");
    assert_eq!(config.sink.batch_size, 1000);
    assert_eq!(origins.of("fetch.source"), &Origin::Default);
}

#[test]
fn a_secret_comes_from_the_file_a_file_variable_names() {
    let files = [("/run/secrets/db", "postgres://u:hunter2@db:5432/x\n")];
    for variable in ["USERPIPE_DATABASE__URL_FILE", "DATABASE_URL_FILE"] {
        let (config, origins) = resolve("", &[(variable, "/run/secrets/db")], &files).unwrap();
        assert_eq!(
            config.database.url.expose(),
            "postgres://u:hunter2@db:5432/x"
        );
        assert_eq!(
            origins.of("database.url").to_string(),
            format!("environment {variable} (/run/secrets/db)")
        );
    }
    let both = resolve(
        "",
        &[
            ("DATABASE_URL", "postgres://h/x"),
            ("DATABASE_URL_FILE", "/run/secrets/db"),
        ],
        &files,
    )
    .unwrap_err()
    .to_string();
    assert!(
        both.contains("DATABASE_URL and DATABASE_URL_FILE are both set"),
        "{both}"
    );
    let missing = resolve(
        "",
        &[("USERPIPE_DATABASE__URL_FILE", "/run/secrets/nope")],
        &files,
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("USERPIPE_DATABASE__URL_FILE: cannot read /run/secrets/nope"),
        "{missing}"
    );
    let wrong = resolve(
        "",
        &[("USERPIPE_SINK__BATCH_SIZE_FILE", "/run/secrets/db")],
        &files,
    )
    .unwrap_err()
    .to_string();
    assert!(!wrong.contains("hunter2"), "{wrong}");
    assert!(
        wrong.contains(
            "USERPIPE_SINK__BATCH_SIZE_FILE: the file's content is not a valid sink.batch_size"
        ),
        "{wrong}"
    );
}

#[test]
fn a_wrong_or_unknown_variable_is_named_with_what_is_wrong() {
    let error = resolve(
        "",
        &[
            ("USERPIPE_SINK__BATCHSIZE", "1"),
            ("USERPIPE_SINKS__BATCH_SIZE", "1"),
            ("USERPIPE_BROKERS", "x:1"),
            ("USERPIPE_KAFKA__PARTITIONS", "three"),
            ("USERPIPE_KAFKA__BROKERS__HOST", "x"),
            ("USERPIPE_CONFIG", "ignored.toml"),
            ("USERPIPE_LOG", "debug"),
            ("USERPIPE_STACK_DIR", "/tmp/stack"),
        ],
        &[],
    )
    .unwrap_err()
    .to_string();
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(lines[0], "invalid environment:", "{error}");
    let expect = [
        "USERPIPE_BROKERS: unknown variable",
        "USERPIPE_KAFKA__BROKERS__HOST: invalid type: map, expected a string in `kafka.brokers`",
        "USERPIPE_KAFKA__PARTITIONS: invalid type: string \"three\", expected i32 in `kafka.partitions`",
        "USERPIPE_SINKS__BATCH_SIZE: unknown field `sinks`",
        "USERPIPE_SINK__BATCHSIZE: unknown field `batchsize`, expected `batch_size` or `linger` in `sink`",
    ];
    assert_eq!(lines.len(), expect.len() + 1, "{error}");
    for (line, expected) in lines[1..].iter().zip(expect) {
        assert!(
            line.trim().starts_with(expected),
            "{line:?} should start with {expected:?}"
        );
    }
}

#[test]
fn a_failed_check_says_where_the_value_came_from() {
    let error = resolve("", &[("USERPIPE_SINK__BATCH_SIZE", "0")], &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "sink.batch_size must be 1 or more, not 0 (from environment USERPIPE_SINK__BATCH_SIZE)"
    );
    let error = resolve("[backup]\n\nkeep = 0\n", &[], &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "backup.keep must be 1 or more, not 0 (from file userpipe.toml:3)"
    );
}

#[test]
fn values_past_their_limits_are_refused_with_the_limit_and_where_they_came_from() {
    let refused =
        |file: &str, vars: &[(&str, &str)]| resolve(file, vars, &[]).unwrap_err().to_string();
    assert_eq!(
        refused("[stages]\nbatch_size = 9223372036854775807\n", &[]),
        "stages.batch_size must be at most 1000000, not 9223372036854775807 (from file userpipe.toml:2)"
    );
    assert_eq!(
        refused(
            "",
            &[("USERPIPE_HTTP__MAX_CONNECTIONS", "9223372036854775807")]
        ),
        "http.max_connections must be at most 1000000, not 9223372036854775807 \
         (from environment USERPIPE_HTTP__MAX_CONNECTIONS)"
    );
    assert_eq!(
        refused("[backup]\ntimeout = \"300000y\"\n", &[]),
        "backup.timeout must be at most 7days, not 300000years (from file userpipe.toml:2)"
    );
    assert_eq!(
        refused("[scheduler]\n\nhistory = \"20000y\"\n", &[]),
        "scheduler.history must be at most 10years, not 20000years (from file userpipe.toml:3)"
    );
    assert_eq!(
        refused("", &[("USERPIPE_KAFKA__PARTITIONS", "2147483647")]),
        "kafka.partitions must be at most 10000, not 2147483647 (from environment USERPIPE_KAFKA__PARTITIONS)"
    );
    let (config, _) = resolve(
        "[stages]\nbatch_size = 1000000\n[backup]\ntimeout = \"7d\"\n",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(config.stages.batch_size, 1_000_000);
}

#[test]
fn secrets_never_print() {
    let mut config = Config::default();
    config.database.url = Secret::new("postgres://u:hunter2@db:5432/x");
    config.http.token = Secret::new("s3cr3t-token");
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(!format!("{config:?}").contains("s3cr3t"));
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("token = \"[redacted]\""), "{shown}");
    assert!(shown.contains("postgres://u:***@db:5432/x"), "{shown}");
    let query = redact_url("postgres://u@db:5432/x?sslmode=require&password=hunter2");
    assert_eq!(query, "postgres://u@db:5432/x?sslmode=require&password=***");
    let (bare, password) = split_password("postgres://u:p%40ss@db/x?password=q").unwrap();
    assert_eq!(
        (bare.as_str(), password.as_deref()),
        ("postgres://u@db/x", Some("q"))
    );
}

#[test]
fn the_notification_url_is_a_secret() {
    let hook = "https://hooks.slack.com/services/T0/B0/s3cr3tT0ken";
    let (mut config, origins) = resolve("", &[("USERPIPE_NOTIFY_URL", hook)], &[]).unwrap();
    assert_eq!(config.notify.url.expose(), hook);
    assert_eq!(origins.of("notify.url"), &env("USERPIPE_NOTIFY_URL"));
    let (other, _) = resolve(
        "",
        &[("USERPIPE_NOTIFY__URL_FILE", "/run/secrets/hook")],
        &[("/run/secrets/hook", hook)],
    )
    .unwrap();
    assert_eq!(other.notify.url.expose(), hook, "from a file as well");
    assert!(!format!("{config:?}").contains("s3cr3t"));
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("url = \"https://hooks.slack.com/***\""),
        "{shown}"
    );
    config.notify.url = Secret::new("hooks.slack.com/services/s3cr3t");
    let error = config.validate().unwrap_err().to_string();
    assert_eq!(
        error,
        "notify.url (USERPIPE_NOTIFY_URL) is not an http(s) url"
    );
    let error = resolve(
        "",
        &[("USERPIPE_NOTIFY__URL", "hooks.slack.com/s3cr3t")],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(!error.contains("s3cr3t"), "{error}");
}

#[test]
fn history_is_written_in_days() {
    let config = Config::parse("[scheduler]\nhistory = \"30d\"\nhistory_keep = 5\n").unwrap();
    assert_eq!(config.scheduler.history, Duration::from_secs(30 * 86_400));
    assert_eq!(config.scheduler.history_keep, 5);
    assert!(
        Config::default()
            .to_redacted_toml()
            .contains("history = \"90d\"")
    );
    let error = Config::parse("[scheduler]\nhistory = \"2h\"\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert_eq!(error, "scheduler.history must be one day or more");
}

#[test]
fn validation_names_the_key() {
    let error = Config::parse("[sink]\nbatch_size = 0\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert_eq!(error, "sink.batch_size must be 1 or more, not 0");
    let error = Config::parse("[backup]\nkeep = 0\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert_eq!(error, "backup.keep must be 1 or more, not 0");
    for (rate, valid) in [
        ("", true),
        ("50M", true),
        ("32k", true),
        ("1000", true),
        ("5G", false),
        ("M", false),
        ("1kM", false),
    ] {
        let config = Config::parse(&format!("[backup]\nmax_rate = \"{rate}\"\n")).unwrap();
        assert_eq!(config.validate().is_ok(), valid, "{rate:?}");
    }
    let error = Config::parse("[fetch]\nsource = \"randomuser\"\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("fetch.source must be"), "{error}");
}
