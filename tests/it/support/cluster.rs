//! A private, throwaway PostgreSQL cluster for tests that stop the server or change its settings:
//! `initdb` into a temporary folder, run as the `postgres` user (PostgreSQL refuses root), on a free
//! loopback port. The folder belongs to `postgres`, so what the server must read or write (the WAL
//! archive, `archive-wal.sh`, scratch folders) lives in it, never in the checkout, which `postgres` may
//! not be able to reach.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

/// How a test cluster is set up.
#[derive(Debug, Default)]
pub struct ClusterOptions {
    /// Archive WAL from the start: `archive_mode = on` with `pgconf/archive-wal.sh` into [`TestCluster::archive`]
    /// (no `archive_timeout`: tests switch segments themselves).
    pub archiving: bool,
    /// With `archiving`, this archive_command instead of the script.
    pub archive_command: Option<String>,
    /// Replication connections (pg_basebackup) need this password (scram-sha-256) for `postgres`;
    /// ordinary connections stay trusted.
    pub replication_password: Option<String>,
    /// The server writes its log with the logging collector (into `data/log`), where SQL can read it.
    pub logging_collector: bool,
}

/// A cluster of its own; stopped and removed when dropped.
pub struct TestCluster {
    dir: TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl TestCluster {
    /// Creates and starts a cluster with trust authentication on 127.0.0.1.
    pub fn start() -> Self {
        Self::start_with(ClusterOptions::default())
    }

    /// Creates and starts a cluster as `options` say.
    pub fn start_with(options: ClusterOptions) -> Self {
        let bin = PathBuf::from(std::env::var("USERPIPE_PG_BIN").unwrap_or_else(|_| {
            panic!("USERPIPE_PG_BIN is not set: use `eval \"$(scripts/stack env)\"`")
        }));
        let dir = tempfile::Builder::new()
            .prefix("userpipe-pg-")
            .tempdir()
            .expect("make a temporary folder");
        run("chown", &["-R", "postgres:postgres", path(dir.path())]);
        let port = free_port();
        let cluster = Self { dir, port, bin };
        cluster.as_postgres(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\nmax_wal_senders = 4\n",
            path(cluster.dir.path())
        );
        // The archive folder and the archive script are always there; `archiving` switches them on.
        let script = cluster.archive_script();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pgconf/archive-wal.sh"),
            &script,
        )
        .expect("copy archive-wal.sh");
        cluster.make_dir("archive");
        if options.archiving {
            let command = options.archive_command.clone().unwrap_or_else(|| {
                format!("{} %p {}/%f", script.display(), cluster.archive().display())
            });
            assert!(!command.contains('\''), "a command without quotes");
            conf.push_str(&format!(
                "archive_mode = on\narchive_command = '{command}'\n"
            ));
        }
        if options.logging_collector {
            conf.push_str("logging_collector = on\n");
        }
        std::fs::write(
            Path::new(&cluster.data()).join("postgresql.auto.conf"),
            conf,
        )
        .expect("write the settings");
        if options.replication_password.is_some() {
            std::fs::write(
                Path::new(&cluster.data()).join("pg_hba.conf"),
                "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 scram-sha-256\n",
            )
            .expect("write pg_hba.conf");
        }
        cluster.start_again();
        if let Some(password) = &options.replication_password {
            assert!(
                password
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "a plain test password"
            );
            cluster.psql(&format!("ALTER ROLE postgres PASSWORD '{password}'"));
        }
        cluster
    }

    /// The cluster's own folder (owned by `postgres`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A new folder `name` in the cluster's folder, owned by `postgres`.
    pub fn make_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).expect("make a folder");
        run("chown", &["postgres:postgres", path(&dir)]);
        dir
    }

    /// The WAL archive folder.
    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// This cluster's copy of `pgconf/archive-wal.sh`.
    pub fn archive_script(&self) -> PathBuf {
        self.dir.path().join("archive-wal.sh")
    }

    /// A new connection to the `postgres` database.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url())
            .await
            .expect("connect to the test cluster")
    }

    /// Stops and starts the server.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Runs one SQL statement with psql over the cluster's socket (for set-up that cannot take bound
    /// parameters).
    fn psql(&self, sql: &str) {
        let socket = path(self.dir.path()).to_owned();
        let port = self.port.to_string();
        self.as_postgres(
            "psql",
            &[
                "-X", "-q", "-h", &socket, "-p", &port, "-d", "postgres", "-c", sql,
            ],
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = format!("{}/server.log", path(self.dir.path()));
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-t", "60", "start"],
        );
    }

    /// Stops the server (fast shutdown: sessions are ended, nothing is lost).
    pub fn stop(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// The data folder.
    pub fn data(&self) -> String {
        format!("{}/data", path(self.dir.path()))
    }

    fn as_postgres(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut full = vec!["-u", "postgres", "--", path(&program)];
        full.extend_from_slice(args);
        run("runuser", &full);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                path(&program),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a utf-8 path")
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}
