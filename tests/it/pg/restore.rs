//! Point-in-time recovery with `userpipe backup restore`: to a time, to a WAL position, to the end of the
//! archive; the restored folder started as printed; targets out of reach and non-empty folders refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use userpipe::pg::backup;

use super::helpers::*;
use crate::support::wait_for;

/// A restored server started from its folder; stopped when dropped.
struct Started<'a> {
    pg_ctl: Vec<String>,
    data: &'a Path,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        let (program, args) = self.pg_ctl.split_first().unwrap();
        let _ = Command::new(program)
            .args(args)
            .args([
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

/// The command `backup restore` printed, after "to finish, start it".
fn start_command(said: &str) -> Vec<String> {
    let line = said
        .lines()
        .skip_while(|l| !l.starts_with("to finish, start it"))
        .nth(1)
        .unwrap_or_else(|| panic!("no start command: {said}"));
    line.split_whitespace().map(str::to_owned).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_a_time_between_commits_brings_back_exactly_the_rows_before_it() {
    let (cluster, mut conn) = archiving_cluster_with_schema().await;
    let Ops {
        db: _db,
        dir,
        backups: _,
        config,
        ..
    } = ops(&cluster).await;
    let before_backup: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    backup::run(&config, false).await.expect("a backup");

    insert_users(&mut conn, 10).await; // t1
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    insert_users(&mut conn, 20).await; // t2
    let (between, after_t2): (DateTime<Utc>, String) =
        sqlx::query_as("SELECT clock_timestamp(), pg_current_wal_lsn()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let t3 = insert_users(&mut conn, 40).await; // t3
    switch_and_wait_for_the_archive(&cluster, &mut conn).await;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(between < t3);

    let restore = |target: &[&str], to: &Path, verify: bool| {
        let mut args = vec!["backup", "restore"];
        args.extend_from_slice(target);
        args.extend(["--to", to.to_str().unwrap()]);
        if verify {
            args.push("--verify");
        }
        let out = userpipe(&config, dir.path(), &args);
        (
            code(&out),
            stdout(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    // Out of reach: before the backup ended, or at or after the newest archived commit.
    let to = cluster.root().join("restored");
    let (code_, _, said) = restore(&["--target-time", &rfc(before_backup)], &to, false);
    assert_eq!(code_, 1, "{said}");
    assert!(said.contains("no verified backup ended before"), "{said}");
    assert!(
        said.contains("the backups and the archive reach from"),
        "{said}"
    );
    let (code_, _, said) = restore(&["--target-time", &rfc(now)], &to, false);
    assert_eq!(code_, 1, "{said}");
    assert!(
        said.contains("is not before the newest commit in the archive"),
        "{said}"
    );
    assert!(!to.exists(), "a refused restore writes nothing");
    let occupied = cluster.make_dir("occupied");
    std::fs::write(occupied.join("PG_VERSION"), "15\n").unwrap();
    let (code_, _, said) = restore(&["--latest"], &occupied, false);
    assert_eq!(code_, 1, "{said}");
    assert!(said.contains("is not empty"), "{said}");

    // To a time between t2 and t3: exactly the rows of t1 and t2, in the throwaway copy...
    let (code_, said, err) = restore(&["--target-time", &rfc(between)], &to, true);
    assert_eq!(code_, 0, "{said}{err}");
    assert!(said.contains("recovered 30 rows in random_users"), "{said}");
    assert!(to.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("recovery_target_action = 'promote'"),
        "{auto}"
    );

    // ... and in the folder itself, started as printed (on a port of its own, without archiving: the
    // backed-up settings name the test cluster's port and archive).
    let command = start_command(&said);
    assert_eq!(
        command[command.len() - 3..],
        [
            "-D".to_owned(),
            to.display().to_string(),
            "start".to_owned()
        ]
    );
    let port = free_port();
    let mut run = command.clone();
    let start = run.pop().unwrap();
    run.extend([
        "-w".into(),
        "-l".into(),
        cluster.root().join("restored.log").display().to_string(),
        "-o".into(),
        format!(
            "-p {port} -c archive_mode=off -c unix_socket_directories={}",
            cluster.root().display()
        ),
        start,
    ]);
    let mut stop = command.clone();
    stop.truncate(stop.len() - 3);
    let _started = Started {
        pg_ctl: stop,
        data: &to,
    };
    let (program, args) = run.split_first().unwrap();
    let status = Command::new(program).args(args).output().unwrap();
    assert!(
        status.status.success(),
        "{}{}",
        String::from_utf8_lossy(&status.stderr),
        std::fs::read_to_string(cluster.root().join("restored.log")).unwrap_or_default()
    );
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut restored = wait_for(
        "the restored server promoted",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut conn)
                    .await
                    .ok()?;
                (!recovering).then_some(conn)
            }
        },
    )
    .await;
    assert_eq!(count_users(&mut restored).await, 30);
    drop(restored);

    // To the WAL position right after t2's commit, and to the end of the archive.
    let (code_, said, err) = restore(
        &["--target-lsn", &after_t2],
        &cluster.root().join("restored-lsn"),
        true,
    );
    assert_eq!(code_, 0, "{said}{err}");
    assert!(said.contains("recovered 30 rows"), "{said}");
    let (code_, said, err) = restore(&["--latest"], &cluster.root().join("restored-all"), true);
    assert_eq!(code_, 0, "{said}{err}");
    assert!(said.contains("recovered 70 rows"), "{said}");
}
