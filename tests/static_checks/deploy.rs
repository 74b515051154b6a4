//! The deployment files, checked without Docker: `docker-compose.yml`, `Dockerfile` and `.dockerignore`
//! against each other, against the environment variables the code reads, and against the README's
//! `docker compose` section. Nothing here needs the stack or the network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use yaml_rust2::{Yaml, YamlLoader};

/// The services of the quick start, as the README's `docker compose` section lists them.
const SERVICES: [&str; 5] = ["kafka", "postgres", "akhq", "nocodb", "userpipe"];
/// Where the image installs the binary.
const BINARY: &str = "/usr/local/bin/userpipe";
/// The uid and gid of `postgres` in the official postgres image, which writes the WAL archive.
const POSTGRES_IMAGE_UID: &str = "999";

#[test]
fn compose_file_has_the_five_services() {
    let compose = Compose::load();
    let names = compose.service_names();
    for name in SERVICES {
        assert!(
            names.contains(name),
            "docker-compose.yml has no service `{name}` (it has {names:?})"
        );
    }
}

#[test]
fn nocodb_runs_only_under_its_profile() {
    let compose = Compose::load();
    assert_eq!(
        compose.service("nocodb").profiles(),
        ["nocodb"],
        "nocodb must start only with `docker compose --profile nocodb up`"
    );
    for name in SERVICES.into_iter().filter(|name| *name != "nocodb") {
        assert!(
            compose.service(name).profiles().is_empty(),
            "`{name}` is under a profile, so a plain `docker compose up` would not start it"
        );
    }
}

#[test]
fn userpipe_starts_once_kafka_and_postgres_are_healthy() {
    let compose = Compose::load();
    let depends_on = compose.service("userpipe").depends_on();
    for name in ["kafka", "postgres"] {
        assert_eq!(
            depends_on.get(name).map(String::as_str),
            Some("service_healthy"),
            "userpipe must depend on `{name}` with `condition: service_healthy` (it has {depends_on:?})"
        );
        let test = compose.service(name).healthcheck_test();
        assert!(
            matches!(test.first().map(String::as_str), Some("CMD" | "CMD-SHELL")) && test.len() > 1,
            "`{name}` needs a healthcheck whose test is CMD or CMD-SHELL with a command (it has {test:?})"
        );
    }
}

#[test]
fn kafka_runs_in_kraft_mode_without_zookeeper() {
    let compose = Compose::load();
    let kafka = compose.service("kafka");
    assert!(
        kafka.image().starts_with("apache/kafka:4."),
        "kafka must be Apache Kafka 4.x (it is `{}`)",
        kafka.image()
    );
    let roles = kafka.env("KAFKA_PROCESS_ROLES").unwrap_or_default();
    let roles: BTreeSet<&str> = roles.split(',').map(str::trim).collect();
    assert_eq!(
        roles,
        BTreeSet::from(["broker", "controller"]),
        "one KRaft node is both broker and controller: KAFKA_PROCESS_ROLES"
    );
    for name in [
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_NODE_ID",
        "CLUSTER_ID",
    ] {
        assert!(
            kafka.env(name).is_some_and(|v| !v.is_empty()),
            "kafka in KRaft mode needs {name}"
        );
    }
    assert_eq!(
        kafka.env("KAFKA_AUTO_CREATE_TOPICS_ENABLE").as_deref(),
        Some("false"),
        "userpipe creates its topics; the broker must not create topics on first use"
    );
    for name in compose.service_names() {
        let service = compose.service(&name);
        assert!(
            !name.to_lowercase().contains("zookeeper"),
            "KRaft needs no ZooKeeper, yet there is a service `{name}`"
        );
        for (key, value) in service.environment() {
            assert!(
                !format!("{key}={value}")
                    .to_lowercase()
                    .contains("zookeeper"),
                "KRaft needs no ZooKeeper, yet `{name}` sets {key}={value}"
            );
        }
    }
}

#[test]
fn readme_compose_section_names_the_compose_services() {
    let (source, section) = compose_section();
    let named = table_services(&section);
    assert!(
        !named.is_empty(),
        "the `docker compose` section of {source} has no table headed `| service | ...` with backticked service names in its first column"
    );
    let services = Compose::load().service_names();
    for name in &named {
        assert!(
            services.contains(name),
            "{source} names a compose service `{name}` that docker-compose.yml does not have (it has {services:?})"
        );
    }
    for name in &services {
        assert!(
            named.contains(name),
            "docker-compose.yml has a service `{name}` that the `docker compose` section of {source} does not list"
        );
    }
}

#[test]
fn the_readme_rule_reads_backticked_names_in_service_tables() {
    let markdown = "# userpipe\n\n## Run it with Docker Compose\n\n\
        ```sh\n# not a heading\ndocker compose up -d\n```\n\n\
        | service | image | what |\n| --- | --- | --- |\n| `kafka` | `apache/kafka` | the `broker` |\n\
        | `postgres`, `pg` | x | y |\n\n\
        | port | what |\n| --- | --- |\n| 8080 | `userpipe` |\n\n\
        | variable | default |\n| --- | --- |\n| `POSTGRES_PASSWORD` | `userpipe` |\n\n\
        ## Next\n\n| `elsewhere` | x |\n| --- | --- |\n| `other` | y |\n";
    let section = markdown_section(markdown, "docker compose").expect("the section is found");
    assert!(
        section.contains("not a heading"),
        "a `#` line in code does not end it"
    );
    assert!(!section.contains("elsewhere"), "the next heading ends it");
    assert_eq!(table_services(&section), ["kafka", "postgres", "pg"]);
    assert_eq!(markdown_section(markdown, "kubernetes"), None);
}

#[test]
fn every_variable_userpipe_reads_is_set_or_documented() {
    let read = variables_read_by_code();
    for expected in ["DATABASE_URL", "USERPIPE_KAFKA_BROKERS"] {
        assert!(
            read.contains(expected),
            "the scan of src/ misses {expected}: fix `variables_read_by_code` (found {read:?})"
        );
    }
    let compose = Compose::load().service("userpipe").environment();
    let image = Dockerfile::load().env();
    let readme = read_file("README.md");
    let missing: Vec<&String> = read
        .iter()
        .filter(|name| {
            !compose.contains_key(*name) && !image.contains_key(*name) && !mentions(&readme, name)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "userpipe reads {missing:?}, which neither docker-compose.yml (userpipe's environment) nor the \
         Dockerfile (ENV) sets, and README.md does not document"
    );
}

#[test]
fn named_volumes_are_declared_and_used() {
    let compose = Compose::load();
    let declared = compose.declared_volumes();
    let mut used = BTreeSet::new();
    for name in compose.service_names() {
        for mount in compose.service(&name).mounts() {
            if mount.is_named_volume() {
                assert!(
                    declared.contains(&mount.source),
                    "`{name}` mounts the volume `{}`, which the top-level `volumes:` does not declare",
                    mount.source
                );
                used.insert(mount.source);
            }
        }
    }
    assert_eq!(
        declared, used,
        "every declared volume is used by some service"
    );
}

#[test]
fn userpipe_port_matches_expose_and_http_addr() {
    let compose = Compose::load();
    let userpipe = compose.service("userpipe");
    let dockerfile = Dockerfile::load();
    let exposed = dockerfile.exposed();
    assert_eq!(
        exposed.len(),
        1,
        "the Dockerfile exposes one port, userpipe's HTTP port (it has {exposed:?})"
    );
    let published: Vec<u16> = userpipe.ports().iter().map(|p| p.container).collect();
    assert_eq!(
        published, exposed,
        "userpipe's `ports:` publish the port the Dockerfile exposes"
    );
    let addresses: Vec<(&str, String)> = [
        ("docker-compose.yml", userpipe.env("USERPIPE_HTTP_ADDR")),
        (
            "the Dockerfile",
            dockerfile.env().get("USERPIPE_HTTP_ADDR").cloned(),
        ),
    ]
    .into_iter()
    .filter_map(|(source, value)| value.map(|value| (source, value)))
    .collect();
    assert!(
        !addresses.is_empty(),
        "USERPIPE_HTTP_ADDR is set neither in docker-compose.yml nor in the Dockerfile"
    );
    for (source, address) in addresses {
        let address: std::net::SocketAddr = address
            .parse()
            .unwrap_or_else(|e| panic!("USERPIPE_HTTP_ADDR in {source} is `{address}`: {e}"));
        assert_eq!(
            address.port(),
            exposed[0],
            "USERPIPE_HTTP_ADDR in {source} listens on another port than the exposed one"
        );
        assert!(
            address.ip().is_unspecified(),
            "USERPIPE_HTTP_ADDR in {source} must listen on all interfaces, or the published port reaches nothing"
        );
    }
}

#[test]
fn healthcheck_and_entrypoint_run_the_installed_binary() {
    let dockerfile = Dockerfile::load();
    assert!(
        dockerfile.copies_to(BINARY),
        "the Dockerfile's last stage must COPY the binary to {BINARY}"
    );
    let path = dockerfile
        .env()
        .get("PATH")
        .cloned()
        // Debian images' default PATH.
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    // `userpipe` alone resolves through PATH, where /usr/local/bin is the only folder holding one.
    let runs_binary = |program: &str| {
        program == BINARY
            || (Path::new(BINARY).file_name() == Some(program.as_ref())
                && path.split(':').any(|dir| dir == "/usr/local/bin"))
    };
    let entrypoint = dockerfile.exec_form("ENTRYPOINT");
    assert!(
        entrypoint.first().is_some_and(|p| runs_binary(p)),
        "ENTRYPOINT must run {BINARY} (it is {entrypoint:?})"
    );
    assert_eq!(
        dockerfile.exec_form("CMD"),
        ["run"],
        "the default command is `userpipe run`"
    );
    let healthcheck = dockerfile.exec_form("HEALTHCHECK");
    assert!(
        healthcheck.first().is_some_and(|p| runs_binary(p)) && healthcheck[1..] == ["health"],
        "HEALTHCHECK must run `userpipe health` (it is {healthcheck:?})"
    );
}

#[test]
fn wal_archive_is_shared_at_the_configured_path() {
    let compose = Compose::load();
    let in_postgres = compose.service("postgres").volume_target("wal-archive");
    let in_userpipe = compose.service("userpipe").volume_target("wal-archive");
    let configured = setting(&compose, "USERPIPE_WAL_ARCHIVE");
    assert_eq!(
        (in_postgres.as_deref(), in_userpipe.as_deref()),
        (Some(configured.as_str()), Some(configured.as_str())),
        "the `wal-archive` volume must be mounted in postgres and userpipe at USERPIPE_WAL_ARCHIVE"
    );
    // A fresh volume belongs to root; postgres must own it before its archive_command can write there.
    let entrypoint = compose.service("postgres").list_or_text("entrypoint");
    assert!(
        entrypoint.contains(&configured) && entrypoint.contains("chown postgres"),
        "the postgres service must hand {configured} to the postgres user before starting (entrypoint: {entrypoint})"
    );

    let conf = repo().join("pgconf/archiving.conf");
    if conf.exists() {
        let text = read_file("pgconf/archiving.conf");
        let command =
            archive_command(&text).expect("pgconf/archiving.conf sets an archive_command");
        let pgconf_mount = compose
            .service("postgres")
            .bind_mount("./pgconf")
            .map(|mount| mount.target)
            .unwrap_or_default();
        assert!(
            archives_into(&command, &configured, &pgconf_mount, |script| {
                std::fs::read_to_string(repo().join("pgconf").join(script)).ok()
            }),
            "pgconf/archiving.conf's archive_command `{command}` does not write into {configured}, where \
             userpipe reads the archive (neither the command nor a pgconf script it runs names it)"
        );
    }
}

#[test]
fn pgconf_is_mounted_where_userpipe_pgconf_points() {
    let compose = Compose::load();
    let file = setting(&compose, "USERPIPE_PGCONF");
    let folder = parent(&file);
    for name in ["userpipe", "postgres"] {
        let mount = compose
            .service(name)
            .bind_mount("./pgconf")
            .unwrap_or_else(|| panic!("`{name}` does not mount ./pgconf"));
        assert_eq!(
            mount.target, folder,
            "`{name}` mounts ./pgconf at another folder than USERPIPE_PGCONF's ({file})"
        );
        assert!(mount.read_only, "`{name}` must mount ./pgconf read-only");
    }
    assert!(
        Dockerfile::load().copies_to(&format!("{folder}/")),
        "the image must ship pgconf/ at {folder}, for runs without the compose file's mount"
    );
    // Once pgconf/ ships settings, USERPIPE_PGCONF must name one of them.
    let name = file.rsplit('/').next().unwrap_or_default();
    let shipped: Vec<String> = std::fs::read_dir(repo().join("pgconf"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|file| file.ends_with(".conf"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        shipped.is_empty() || shipped.iter().any(|file| file == name),
        "USERPIPE_PGCONF names {name}, which pgconf/ does not have (it has {shipped:?})"
    );
}

#[test]
fn schedules_are_bind_mounted_where_userpipe_schedules_points() {
    let compose = Compose::load();
    let folder = setting(&compose, "USERPIPE_SCHEDULES");
    let mount = compose
        .service("userpipe")
        .bind_mount("./schedules")
        .expect("userpipe mounts ./schedules, so operators edit schedules in the checkout");
    assert_eq!(
        mount.target, folder,
        "./schedules is mounted at another folder than USERPIPE_SCHEDULES"
    );
    assert!(
        Dockerfile::load().copies_to(&format!("{folder}/")),
        "the image must ship the schedules at {folder}, for runs without the compose file's mount"
    );
    let shipped = std::fs::read_dir(repo().join("schedules"))
        .expect("read schedules/")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "toml"))
        .count();
    assert!(shipped > 0, "schedules/ has no schedule file to ship");
}

#[test]
fn userpipe_reaches_kafka_and_postgres_as_they_are_configured() {
    let compose = Compose::load();
    let userpipe = compose.service("userpipe");
    let postgres = compose.service("postgres");

    let raw_url = userpipe
        .env("DATABASE_URL")
        .expect("userpipe sets DATABASE_URL");
    let url = url::Url::parse(&with_defaults(&raw_url))
        .unwrap_or_else(|e| panic!("DATABASE_URL `{raw_url}` is not a URL: {e}"));
    let expected = |name: &str| with_defaults(&postgres.env(name).unwrap_or_default());
    assert_eq!(
        (url.host_str(), url.port(), url.username(), url.path()),
        (
            Some("postgres"),
            Some(5432),
            "userpipe",
            format!("/{}", expected("POSTGRES_DB")).as_str()
        ),
        "DATABASE_URL must name the postgres service, the `userpipe` role and POSTGRES_DB"
    );
    assert_ne!(
        expected("POSTGRES_USER"),
        "userpipe",
        "userpipe must not connect as the superuser the image creates"
    );
    assert_eq!(
        url.password(),
        None,
        "the compose file holds no password: userpipe's comes from PGPASSWORD"
    );
    // One variable gives the role its password (20-roles.sh) and userpipe the same password.
    let variable = |value: Option<String>| {
        value
            .and_then(|v| {
                v.strip_prefix("${").map(|v| {
                    v.chars()
                        .take_while(|c| *c == '_' || c.is_ascii_alphanumeric())
                        .collect::<String>()
                })
            })
            .unwrap_or_default()
    };
    assert_eq!(variable(userpipe.env("PGPASSWORD")), "USERPIPE_DB_PASSWORD");
    assert_eq!(
        variable(postgres.env("USERPIPE_DB_PASSWORD")),
        "USERPIPE_DB_PASSWORD"
    );
    let nocodb = compose.service("nocodb").env("NC_DB").unwrap_or_default();
    assert!(
        nocodb.contains("u=nocodb&p=${NOCODB_DB_PASSWORD"),
        "NocoDB connects as its own role `nocodb` with NOCODB_DB_PASSWORD (it is `{nocodb}`)"
    );

    let advertised = compose
        .service("kafka")
        .env("KAFKA_ADVERTISED_LISTENERS")
        .unwrap_or_default();
    let brokers = userpipe
        .env("USERPIPE_KAFKA_BROKERS")
        .expect("userpipe sets USERPIPE_KAFKA_BROKERS");
    let akhq = compose.service("akhq").akhq_bootstrap_servers();
    for (who, servers) in [("userpipe", brokers), ("akhq", akhq)] {
        for server in servers.split(',') {
            assert!(
                advertised
                    .split(',')
                    .any(|l| l.ends_with(&format!("://{server}"))),
                "{who} connects to {server}, which kafka does not advertise ({advertised})"
            );
        }
    }
}

#[test]
fn postgres_allows_replication_connections() {
    let compose = Compose::load();
    let mount = compose
        .service("postgres")
        .bind_mount("./deploy/postgres/initdb.d")
        .expect("postgres mounts ./deploy/postgres/initdb.d");
    assert_eq!(mount.target, "/docker-entrypoint-initdb.d");
    let scripts: String = std::fs::read_dir(repo().join("deploy/postgres/initdb.d"))
        .expect("read deploy/postgres/initdb.d")
        .filter_map(Result::ok)
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect();
    let words: Vec<&str> = scripts.split_whitespace().collect();
    assert!(
        words.windows(5).any(|w| {
            w[0].trim_start_matches('"') == "host"
                && w[1] == "replication"
                && w[4].trim_end_matches('"') == "scram-sha-256"
        }) && scripts.contains("pg_hba.conf"),
        "an init script must add `host replication ... scram-sha-256` to pg_hba.conf for pg_basebackup"
    );
}

#[test]
fn userpipe_runs_as_the_uid_postgres_archives_with() {
    let dockerfile = Dockerfile::load();
    let user = dockerfile.resolve(&dockerfile.last("USER").expect("the image sets USER"));
    assert_eq!(
        user,
        format!("{POSTGRES_IMAGE_UID}:{POSTGRES_IMAGE_UID}"),
        "userpipe must run as the postgres image's uid and gid, to read the WAL archive it writes"
    );
    let image = Compose::load().service("postgres").image();
    assert!(
        image.starts_with("postgres:15"),
        "postgres must be the official PostgreSQL 15 image (its postgres user is uid 999; the image's \
         programs are version 15), not `{image}`"
    );
}

#[test]
fn dockerignore_leaves_out_build_output_and_local_state() {
    let text = read_file(".dockerignore");
    let patterns: BTreeSet<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_matches('/'))
        .collect();
    for path in ["target", ".stack", ".git"] {
        assert!(
            patterns.contains(path),
            ".dockerignore must leave out {path}/ (it has {patterns:?})"
        );
    }
}

// ---- the repository ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_file(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn parent(path: &str) -> String {
    path.rsplit_once('/')
        .map(|(dir, _)| dir.to_string())
        .unwrap_or_else(|| panic!("`{path}` has no folder"))
}

/// A setting userpipe gets from its environment in the compose stack: the userpipe service's
/// `environment:` if it sets it, else the Dockerfile's ENV.
fn setting(compose: &Compose, name: &str) -> String {
    compose
        .service("userpipe")
        .env(name)
        .or_else(|| Dockerfile::load().env().get(name).cloned())
        .unwrap_or_else(|| {
            panic!("{name} is set neither in docker-compose.yml nor in the Dockerfile")
        })
}

/// The environment variables userpipe reads: the names of `config::ENV_OVERRIDES`, and every string
/// literal in src/ (outside unit tests) that is a whole variable name starting with `USERPIPE_`, or `DATABASE_URL`. The literal
/// rule covers `std::env::var("..")`, clap's `env = ".."`, `EnvFilter::try_from_env("..")` and named
/// constants alike.
fn variables_read_by_code() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = userpipe::config::ENV_OVERRIDES
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for file in rust_files(&repo().join("src")) {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        // Unit tests (a file's last module, or a `tests.rs`) name variables only to set them.
        let text = match file.file_name().is_some_and(|name| name == "tests.rs") {
            true => "",
            false => text.split("#[cfg(test)]").next().unwrap_or_default(),
        };
        for (at, _) in text.match_indices('"') {
            let rest = &text[at + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let is_variable = name == "DATABASE_URL"
                || (name.starts_with("USERPIPE_") && name.len() > "USERPIPE_".len());
            if is_variable && rest[end..].starts_with('"') {
                names.insert(name.to_string());
            }
        }
    }
    names
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read a source folder")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Whether `text` has `name` as a whole word (`USERPIPE_LOG` is not in `USERPIPE_LOG_FORMAT`).
fn mentions(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(word)
            && !text[at + name.len()..].chars().next().is_some_and(word)
    })
}

// ---- README -----------------------------------------------------------------------------------------------

/// README.md's `docker compose` section, and the file it came from.
fn compose_section() -> (&'static str, String) {
    const TITLE: &str = "docker compose";
    match markdown_section(&read_file("README.md"), TITLE) {
        Some(section) => ("README.md", section),
        None => panic!("README.md has no section whose heading contains \"{TITLE}\" (any case)"),
    }
}

/// The section of `markdown` under the first heading whose text contains `title` (any case), up to the
/// next heading of the same or a higher level, as its source text.
pub(crate) fn markdown_section(markdown: &str, title: &str) -> Option<String> {
    let title = title.to_lowercase();
    // The level of the section's heading and where its body starts, once found.
    let mut section: Option<(HeadingLevel, usize)> = None;
    let mut heading: Option<(HeadingLevel, usize, String)> = None;
    for (event, range) in Parser::new_ext(markdown, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level, range.start, String::new()))
            }
            Event::Text(text) | Event::Code(text) => {
                if let Some((_, _, words)) = &mut heading {
                    words.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let Some((level, start, words)) = heading.take() else {
                    continue;
                };
                match section {
                    None if words.to_lowercase().contains(&title) => {
                        section = Some((level, range.end))
                    }
                    Some((section_level, body)) if level <= section_level => {
                        return Some(markdown[body..start].to_string());
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    section.map(|(_, body)| markdown[body..].to_string())
}

/// The compose service names a section lists: the backticked words in the first column of the rows of
/// its tables whose first header cell is `service` (any case). Other tables (ports, variables) and the
/// header row do not count.
fn table_services(section: &str) -> Vec<String> {
    let mut names = Vec::new();
    let (mut in_head, mut service_table) = (false, false);
    let mut cell_index = 0;
    let mut cell_text = String::new();
    for event in Parser::new_ext(section, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::TableHead) => {
                in_head = true;
                cell_index = 0;
            }
            Event::Start(Tag::TableRow) => cell_index = 0,
            Event::Start(Tag::TableCell) => cell_text.clear(),
            Event::Text(text) if in_head && cell_index == 0 => cell_text.push_str(&text),
            Event::Code(code) if !in_head && service_table && cell_index == 0 => {
                let name = code.trim();
                if !name.is_empty() {
                    names.push(name.to_string());
                }
            }
            Event::End(TagEnd::TableCell) => {
                if in_head && cell_index == 0 {
                    service_table = cell_text.trim().eq_ignore_ascii_case("service");
                }
                cell_index += 1;
            }
            Event::End(TagEnd::TableHead) => in_head = false,
            _ => {}
        }
    }
    names
}

// ---- docker-compose.yml -----------------------------------------------------------------------------------

struct Compose {
    doc: Yaml,
}

impl Compose {
    fn load() -> Self {
        let text = read_file("docker-compose.yml");
        let mut docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"));
        assert_eq!(docs.len(), 1, "docker-compose.yml holds one YAML document");
        let doc = docs.remove(0);
        assert!(
            doc["services"].as_hash().is_some(),
            "docker-compose.yml has no `services:` mapping"
        );
        Self { doc }
    }

    fn service_names(&self) -> BTreeSet<String> {
        keys(&self.doc["services"])
    }

    fn service(&self, name: &str) -> Service<'_> {
        let yaml = &self.doc["services"][name];
        assert!(
            yaml.as_hash().is_some(),
            "docker-compose.yml has no service `{name}`"
        );
        Service {
            name: name.to_string(),
            yaml,
        }
    }

    fn declared_volumes(&self) -> BTreeSet<String> {
        keys(&self.doc["volumes"])
    }
}

struct Service<'a> {
    name: String,
    yaml: &'a Yaml,
}

/// One entry of a service's `volumes:`.
struct Mount {
    /// A volume name, a host path (`./x`, `/x`), or empty for an anonymous volume.
    source: String,
    target: String,
    read_only: bool,
}

impl Mount {
    fn is_named_volume(&self) -> bool {
        !self.source.is_empty() && !self.source.starts_with(['.', '/', '~'])
    }
}

/// One entry of a service's `ports:`.
struct Port {
    container: u16,
}

impl Service<'_> {
    fn image(&self) -> String {
        scalar(&self.yaml["image"]).unwrap_or_default()
    }

    fn profiles(&self) -> Vec<String> {
        strings(&self.yaml["profiles"])
    }

    /// `environment:` as a map, from either the mapping or the `KEY=value` list form.
    fn environment(&self) -> BTreeMap<String, String> {
        let env = &self.yaml["environment"];
        if let Some(hash) = env.as_hash() {
            return hash
                .iter()
                .filter_map(|(k, v)| Some((scalar(k)?, scalar(v).unwrap_or_default())))
                .collect();
        }
        strings(env)
            .into_iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (item, String::new()),
            })
            .collect()
    }

    fn env(&self, name: &str) -> Option<String> {
        self.environment().remove(name)
    }

    /// `depends_on:` as service -> condition (`service_started` for the short list form).
    fn depends_on(&self) -> BTreeMap<String, String> {
        let depends = &self.yaml["depends_on"];
        if let Some(hash) = depends.as_hash() {
            return hash
                .iter()
                .filter_map(|(k, v)| {
                    let condition =
                        scalar(&v["condition"]).unwrap_or_else(|| "service_started".into());
                    Some((scalar(k)?, condition))
                })
                .collect();
        }
        strings(depends)
            .into_iter()
            .map(|name| (name, "service_started".into()))
            .collect()
    }

    /// `healthcheck.test` as a list (a string test is CMD-SHELL); empty when there is none or it is
    /// disabled.
    fn healthcheck_test(&self) -> Vec<String> {
        let healthcheck = &self.yaml["healthcheck"];
        if healthcheck["disable"].as_bool() == Some(true) {
            return Vec::new();
        }
        match scalar(&healthcheck["test"]) {
            Some(command) => vec!["CMD-SHELL".into(), command],
            None => strings(&healthcheck["test"]),
        }
    }

    fn mounts(&self) -> Vec<Mount> {
        let Some(entries) = self.yaml["volumes"].as_vec() else {
            return Vec::new();
        };
        entries
            .iter()
            .map(|entry| match scalar(entry) {
                Some(short) => {
                    let parts: Vec<&str> = short.split(':').collect();
                    match parts.as_slice() {
                        [target] => Mount {
                            source: String::new(),
                            target: target.to_string(),
                            read_only: false,
                        },
                        [source, target, rest @ ..] => Mount {
                            source: source.to_string(),
                            target: target.to_string(),
                            read_only: rest.iter().any(|m| m.split(',').any(|m| m == "ro")),
                        },
                        [] => panic!("`{}` has an empty volume entry", self.name),
                    }
                }
                None => Mount {
                    source: scalar(&entry["source"]).unwrap_or_default(),
                    target: scalar(&entry["target"]).unwrap_or_default(),
                    read_only: entry["read_only"].as_bool() == Some(true),
                },
            })
            .collect()
    }

    /// Where the named volume `volume` is mounted.
    fn volume_target(&self, volume: &str) -> Option<String> {
        self.mounts()
            .into_iter()
            .find(|m| m.source == volume)
            .map(|m| m.target)
    }

    /// The bind mount of the host path `source` (relative to the compose file).
    fn bind_mount(&self, source: &str) -> Option<Mount> {
        let wanted = source.trim_end_matches('/');
        self.mounts()
            .into_iter()
            .find(|m| m.source.trim_end_matches('/') == wanted)
    }

    fn ports(&self) -> Vec<Port> {
        let Some(entries) = self.yaml["ports"].as_vec() else {
            return Vec::new();
        };
        entries
            .iter()
            .map(|entry| {
                let container = match scalar(entry) {
                    // [ip:]host:container[/protocol]
                    Some(short) => short
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse().ok()),
                    None => scalar(&entry["target"]).and_then(|p| p.parse().ok()),
                };
                Port {
                    container: container.unwrap_or_else(|| {
                        panic!("`{}` has a port without a container port", self.name)
                    }),
                }
            })
            .collect()
    }

    /// The `bootstrap.servers` of every connection in AKHQ_CONFIGURATION (itself YAML).
    fn akhq_bootstrap_servers(&self) -> String {
        let text = self
            .env("AKHQ_CONFIGURATION")
            .expect("akhq sets AKHQ_CONFIGURATION");
        let config = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("AKHQ_CONFIGURATION is not YAML: {e}"))
            .remove(0);
        let connections = config["akhq"]["connections"]
            .as_hash()
            .expect("AKHQ_CONFIGURATION has akhq.connections");
        assert!(
            !connections.is_empty(),
            "AKHQ_CONFIGURATION has no connection"
        );
        connections
            .values()
            .map(|connection| {
                scalar(&connection["properties"]["bootstrap.servers"])
                    .expect("every AKHQ connection has properties.bootstrap.servers")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A key that is a command: its list items joined by spaces, or its text.
    fn list_or_text(&self, key: &str) -> String {
        scalar(&self.yaml[key]).unwrap_or_else(|| strings(&self.yaml[key]).join(" "))
    }
}

fn scalar(yaml: &Yaml) -> Option<String> {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map(|items| items.iter().filter_map(scalar).collect())
        .unwrap_or_default()
}

fn keys(yaml: &Yaml) -> BTreeSet<String> {
    yaml.as_hash()
        .map(|hash| hash.keys().filter_map(scalar).collect())
        .unwrap_or_default()
}

/// A compose value as compose renders it when none of its variables is set: `${X:-default}` and
/// `${X-default}` become `default`, `${X}` becomes empty, `$$` becomes `$`.
fn with_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix("${") {
            let end = inner
                .find('}')
                .unwrap_or_else(|| panic!("unclosed `${{` in `{value}`"));
            let expression = &inner[..end];
            // `${X:?message}` and `${X?message}` require X and have no default.
            let default = if expression.contains('?') {
                ""
            } else {
                expression
                    .split_once(":-")
                    .or_else(|| expression.split_once('-'))
                    .map(|(_, default)| default)
                    .unwrap_or_default()
            };
            out.push_str(default);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn compose_defaults_are_substituted_as_compose_does() {
    for (value, expected) in [
        (
            "postgres://u:${POSTGRES_PASSWORD:-secret}@h/db",
            "postgres://u:secret@h/db",
        ),
        ("${A-x}/${B}", "x/"),
        ("${P:?set P (see the README - compose)}!", "!"),
        ("$$HOME", "$HOME"),
        ("plain", "plain"),
    ] {
        assert_eq!(with_defaults(value), expected, "{value}");
    }
}

// ---- archiving.conf ---------------------------------------------------------------------------------------

/// The value of `archive_command` in a postgresql.conf-style text, without its quotes.
fn archive_command(conf: &str) -> Option<String> {
    conf.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "archive_command" {
            return None;
        }
        let value = value.trim();
        let value = match value.strip_prefix('\'') {
            Some(quoted) => quoted
                .rsplit_once('\'')
                .map_or(quoted, |(inside, _)| inside),
            None => value.split('#').next().unwrap_or_default().trim(),
        };
        Some(value.replace("''", "'"))
    })
}

/// Whether `command` writes into `archive`: it names the folder itself, or it runs a script from
/// `pgconf_mount` (where ./pgconf is mounted) whose text, as `read_script` gives it, names the folder.
fn archives_into(
    command: &str,
    archive: &str,
    pgconf_mount: &str,
    read_script: impl Fn(&str) -> Option<String>,
) -> bool {
    let prefix = format!("{}/", pgconf_mount.trim_end_matches('/'));
    command.contains(archive)
        || command
            .split_whitespace()
            .filter_map(|word| word.trim_matches(['"', '\'']).strip_prefix(&prefix))
            .any(|script| read_script(script).is_some_and(|text| text.contains(archive)))
}

#[test]
fn archive_commands_are_read_from_their_quotes() {
    let conf = "# WAL archiving\nwal_level = replica\n\
        archive_command = 'test ! -f /a/%f && cp %p /a/%f'   # the archive\n";
    assert_eq!(
        archive_command(conf).as_deref(),
        Some("test ! -f /a/%f && cp %p /a/%f")
    );
    assert_eq!(archive_command("archive_mode = on\n"), None);

    let script = |name: &str| (name == "archive.sh").then(|| "cp \"$1\" /a/\"$2\"".to_string());
    for (command, expected) in [
        ("cp %p /a/%f", true),
        ("/etc/pg/archive.sh %p %f", true),
        ("/etc/pg/other.sh %p %f", false),
        ("cp %p /b/%f", false),
    ] {
        assert_eq!(
            archives_into(command, "/a", "/etc/pg", script),
            expected,
            "{command}"
        );
    }
}

// ---- Dockerfile -------------------------------------------------------------------------------------------

struct Dockerfile {
    /// The instructions of each stage, in order: (keyword in capitals, arguments).
    stages: Vec<Vec<(String, String)>>,
}

impl Dockerfile {
    fn load() -> Self {
        Self::parse(&read_file("Dockerfile"))
    }

    /// Instructions with their continuation lines joined; comment lines dropped, also inside a
    /// continued instruction, as Docker does.
    fn parse(text: &str) -> Self {
        let mut stages: Vec<Vec<(String, String)>> = vec![Vec::new()];
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(start) => {
                    current.push_str(start);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    let instruction = std::mem::take(&mut current);
                    let (keyword, args) = instruction
                        .split_once(char::is_whitespace)
                        .unwrap_or((&instruction, ""));
                    let keyword = keyword.to_uppercase();
                    if keyword == "FROM" {
                        stages.push(Vec::new());
                    }
                    stages
                        .last_mut()
                        .expect("a stage")
                        .push((keyword, args.trim().to_string()));
                }
            }
        }
        Self { stages }
    }

    /// The last stage: the image that runs.
    fn runtime(&self) -> &[(String, String)] {
        self.stages.last().expect("a stage")
    }

    fn last(&self, keyword: &str) -> Option<String> {
        self.runtime()
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, args)| args.clone())
    }

    /// `${NAME}` and `$NAME` replaced by the runtime stage's ARG defaults.
    fn resolve(&self, text: &str) -> String {
        let mut resolved = text.to_string();
        for (keyword, args) in self.runtime() {
            if keyword != "ARG" {
                continue;
            }
            if let Some((name, default)) = args.split_once('=') {
                resolved = resolved
                    .replace(&format!("${{{name}}}"), default)
                    .replace(&format!("${name}"), default);
            }
        }
        resolved
    }

    /// The runtime stage's ENV, from `ENV A=1 B=2` (double quotes allowed) and `ENV A 1` forms.
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (keyword, args) in self.runtime() {
            if keyword != "ENV" {
                continue;
            }
            let first = args.split_whitespace().next().unwrap_or_default();
            if !first.contains('=') {
                let (name, value) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
                env.insert(name.to_string(), value.trim().to_string());
                continue;
            }
            for word in shell_words(args) {
                if let Some((name, value)) = word.split_once('=') {
                    env.insert(name.to_string(), value.to_string());
                }
            }
        }
        env
    }

    fn exposed(&self) -> Vec<u16> {
        self.runtime()
            .iter()
            .filter(|(k, _)| k == "EXPOSE")
            .flat_map(|(_, args)| args.split_whitespace())
            .map(|port| {
                let number = port.split('/').next().unwrap_or_default();
                number
                    .parse()
                    .unwrap_or_else(|_| panic!("EXPOSE {port} is not a port"))
            })
            .collect()
    }

    /// The exec-form (JSON array) command of the runtime stage's last `keyword`; for HEALTHCHECK, the
    /// array after its options and `CMD`.
    fn exec_form(&self, keyword: &str) -> Vec<String> {
        let args = self
            .last(keyword)
            .unwrap_or_else(|| panic!("the Dockerfile's last stage has no {keyword}"));
        let command = if keyword == "HEALTHCHECK" {
            let at = args
                .find("CMD ")
                .unwrap_or_else(|| panic!("HEALTHCHECK has no CMD: {args}"));
            &args[at + 4..]
        } else {
            &args
        };
        serde_json::from_str(command.trim()).unwrap_or_else(|e| {
            panic!("{keyword} must use the exec form, a JSON array of strings (`{command}`: {e})")
        })
    }

    /// Whether the runtime stage COPYs something to `dest` (its last argument).
    fn copies_to(&self, dest: &str) -> bool {
        self.runtime().iter().any(|(keyword, args)| {
            keyword == "COPY" && args.split_whitespace().next_back() == Some(dest)
        })
    }
}

/// Words as a POSIX shell splits them, quotes removed (Docker reads `ENV A=1 B="two words"` so).
fn shell_words(text: &str) -> Vec<String> {
    shlex::split(text).unwrap_or_else(|| panic!("unbalanced quotes in `{text}`"))
}

#[test]
fn dockerfile_instructions_are_read_as_docker_reads_them() {
    let dockerfile = Dockerfile::parse(
        "# syntax=docker/dockerfile:1\nFROM a AS build\nENV X=build\n\nFROM b\nARG UID=7\n\
         ENV A=1 \\\n    # a comment inside\n    B=\"two words\"\nENV C 3\nEXPOSE 80/tcp 81\n\
         USER ${UID}:$UID\nHEALTHCHECK --interval=5s CMD [\"p\", \"health\"]\n",
    );
    assert_eq!(
        dockerfile.stages.len(),
        3,
        "before the first FROM, then two stages"
    );
    let env = dockerfile.env();
    assert_eq!(
        env,
        BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "two words".to_string()),
            ("C".to_string(), "3".to_string()),
        ]),
        "the last stage's ENV only"
    );
    assert_eq!(dockerfile.exposed(), [80, 81]);
    assert_eq!(dockerfile.resolve(&dockerfile.last("USER").unwrap()), "7:7");
    assert_eq!(dockerfile.exec_form("HEALTHCHECK"), ["p", "health"]);
}

#[test]
fn the_demo_shows_the_release_builds_progress() {
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"))
        .expect("read scripts/demo");
    let builds: Vec<Vec<String>> = demo
        .lines()
        .filter(|line| line.trim_start().starts_with("cargo "))
        .map(shell_words)
        .filter(|words| words.starts_with(&["cargo".to_owned(), "build".to_owned()]))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "one cargo build in scripts/demo: {builds:?}"
    );
    let build = &builds[0];
    assert!(build.contains(&"--release".to_owned()), "{build:?}");
    assert!(
        !build.iter().any(|w| w == "--quiet" || w == "-q"),
        "a new user would sit through minutes of silence: {build:?}"
    );
}
