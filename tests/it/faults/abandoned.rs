//! A run is marked `abandoned` only when the process running it is provably gone: a replica starting while
//! another's run goes on, even after PostgreSQL restarted under it (which dropped that run's schedule lock),
//! leaves the run alone; once that process is killed, its run is marked. And a reader that looked at the
//! journal before the schema was complete still reads it once it is.

use std::time::Duration;

use userpipe::scheduler::journal::Status;
use userpipe::scheduler::owners;
use uuid::Uuid;

use super::{runs, try_runs, write_schedule};
use crate::support::cluster::TestCluster;
use crate::support::randomuser::{FakeRandomUser, Reply, fixture_page};
use crate::support::{TestDb, TestKafka, Userpipe, config_for, wait_for};

/// Whether `owner` is registered in the server's current run (a process has one owner per journal writer:
/// the scheduler's, and the HTTP endpoints' for "run now").
async fn registered_now(pool: &sqlx::PgPool, owner: Uuid) -> Option<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM job_owners \
         WHERE owner = $1 AND server_started_at = pg_postmaster_start_time())",
    )
    .bind(owner)
    .fetch_one(pool)
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_alive_on_another_replica_is_never_marked_abandoned_and_a_killed_ones_is() {
    let cluster = TestCluster::start();
    let kafka = TestKafka::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&kafka, &cluster.url());
    config.scheduler.dir = dir.path().join("schedules");
    std::fs::create_dir_all(&config.scheduler.dir).unwrap();
    // A fetch whose page takes ten minutes: the run stays `running`.
    let server = FakeRandomUser::start(vec![
        Reply::json(200, fixture_page()).after(Duration::from_secs(600)),
    ])
    .await;
    config.fetch.source = server.url.clone();
    config.fetch.timeout = Duration::from_secs(900);
    config.fetch.max_attempts = 1;
    write_schedule(
        &config.scheduler.dir,
        "slow",
        "job = \"fetch-users\"\ncron = \"@yearly\"\nrun_on_start = true\ntimeout = \"20m\"\n",
    );
    let args = ["run", "--roles", "scheduler"];
    let mut replica = Userpipe::spawn(&config, dir.path(), "replica.log", &args);

    let pool = userpipe::db::lazy_pool(&cluster.url(), 2).unwrap();
    let slow = wait_for(
        "the slow run to be running and its process registered",
        Duration::from_secs(60),
        || async {
            let run = try_runs(&pool, "slow")
                .await
                .ok()?
                .into_iter()
                .find(|r| r.status == Status::Running)?;
            registered_now(&pool, run.owner?).await?.then_some(run)
        },
    )
    .await;
    let owner = slow.owner.expect("the run names its owner");

    // PostgreSQL restarts under the run: its schedule lock's session is gone, the run goes on.
    cluster.restart();
    wait_for(
        "the replica to register again after the restart",
        Duration::from_secs(60),
        || async { registered_now(&pool, owner).await?.then_some(()) },
    )
    .await;
    // A replica starting now (this test, as its journal does at start) leaves the live run alone.
    assert_eq!(
        owners::mark_abandoned(&pool, owners::new_owner())
            .await
            .unwrap(),
        0
    );
    let still = runs(&pool, "slow").await;
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].status, Status::Running, "{still:?}");

    // Killed, it is provably gone: its run is marked.
    replica.kill();
    let marked = wait_for(
        "the killed replica's run to be marked abandoned",
        Duration::from_secs(30),
        || async {
            let marked = owners::mark_abandoned(&pool, owners::new_owner())
                .await
                .ok()?;
            (marked > 0).then_some(marked)
        },
    )
    .await;
    assert_eq!(marked, 1);
    let run = runs(&pool, "slow").await.remove(0);
    assert_eq!((run.run_id, run.status), (slow.run_id, Status::Abandoned));
    assert_eq!(
        run.reason.as_deref(),
        Some("the process running it stopped before it finished")
    );
    // The gone owner is forgotten.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_owners WHERE owner = $1")
        .bind(owner)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// A process polling the journal while another one migrates it (this file's test above, `userpipe jobs`
/// beside a replica starting) first reads `job_runs` as migration 0002 made it, then as the later ones
/// left it. A query over `SELECT *` was prepared, and kept in the connection's statement cache, with the
/// first shape: PostgreSQL then refused it ("cached plan must not change result type") on that
/// connection for good, and the poll above never saw the run it waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_read_the_journal_before_the_later_migrations_reads_it_after_them() {
    let db = TestDb::new().await;
    // One connection, so the second look reuses the first one's statements.
    let pool = userpipe::db::lazy_pool(&db.url(), 1).unwrap();
    let early = tempfile::tempdir().unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for file in ["0001_random_users.sql", "0002_job_runs.sql"] {
        std::fs::copy(migrations.join(file), early.path().join(file)).unwrap();
    }
    sqlx::migrate::Migrator::new(early.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    // What these early reads answer does not matter (an error, or nothing), only what comes after them.
    let _ = try_runs(&pool, "slow").await;
    let _ = userpipe::scheduler::journal::show(&pool, Uuid::nil()).await;
    let _ = userpipe::scheduler::timeline::last_finished_run_of(&pool, "fetch-users").await;

    userpipe::db::migrate(&pool).await.unwrap();
    let run = userpipe::scheduler::journal::RunRecord::started(
        Uuid::new_v4(),
        (1, 1),
        "slow",
        "fetch-users",
        userpipe::scheduler::journal::Trigger::Manual,
        None,
    )
    .finished(Status::Succeeded);
    userpipe::scheduler::journal::upsert(&pool, &run)
        .await
        .unwrap();
    let read = try_runs(&pool, "slow")
        .await
        .expect("the journal, read again");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].run_id, run.run_id);
    let shown = userpipe::scheduler::journal::show(&pool, run.run_id)
        .await
        .expect("the run, shown");
    assert_eq!(shown.len(), 1);
    let last = userpipe::scheduler::timeline::last_finished_run_of(&pool, "fetch-users")
        .await
        .expect("the last run, read again");
    assert_eq!(last.map(|r| r.run_id), Some(run.run_id));
}
