//! A private, throwaway PostgreSQL cluster for tests that stop the server: `initdb` into a temporary
//! folder, run as the `postgres` user (PostgreSQL refuses root), on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A cluster of its own; stopped and removed when dropped.
pub struct TestCluster {
    dir: TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl TestCluster {
    /// Creates and starts a cluster with trust authentication on 127.0.0.1.
    pub fn start() -> Self {
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
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\nmax_wal_senders = 4\n",
            path(cluster.dir.path())
        );
        std::fs::write(
            Path::new(&cluster.data()).join("postgresql.auto.conf"),
            conf,
        )
        .expect("write the settings");
        cluster.start_again();
        cluster
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

    fn data(&self) -> String {
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
