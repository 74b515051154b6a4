//! The local stack archives as production does: `scripts/stack up` runs PostgreSQL with
//! `pgconf/archiving.conf`'s settings, its archive command pointed at the stack's archive folder, and a
//! forced WAL switch reaches that folder (`userpipe pgconf check --archive`, as `scripts/demo` runs it).

use std::path::{Path, PathBuf};

use userpipe::config::Secret;

use super::helpers::*;
use crate::support::{TestKafka, config_for};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: use `eval \"$(scripts/stack env)\"`"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_archives_with_the_shipped_settings() {
    let (pgconf, archive) = (
        PathBuf::from(env("USERPIPE_PGCONF")),
        PathBuf::from(env("USERPIPE_WAL_ARCHIVE")),
    );
    // The stack's copy is the shipped file, but for the archive command, which archives into the
    // stack's archive folder with the shipped script.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pgconf/archiving.conf"),
    )
    .unwrap();
    let local = std::fs::read_to_string(&pgconf).unwrap();
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let (shipped, local) = (settings(&shipped), settings(&local));
    assert_eq!(shipped.len(), local.len(), "{local:?}");
    for (want, have) in shipped.iter().zip(&local) {
        if want.starts_with("archive_command") {
            let archive = std::fs::canonicalize(&archive).unwrap();
            assert!(
                have.starts_with("archive_command = '")
                    && have.contains("/archive-wal.sh %p ")
                    && have.ends_with(&format!("{}/%f'", archive.display())),
                "{have}"
            );
        } else {
            assert_eq!(want, have);
        }
    }

    // Every setting is in force on the running stack, and a forced segment reaches the archive.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&TestKafka::new(), &env("DATABASE_URL"));
    config.database.url = Secret::new(env("DATABASE_URL"));
    config.pgconf.file = pgconf;
    config.backup.wal_archive = archive;
    let check = userpipe(&config, dir.path(), &["pgconf", "check", "--archive"]);
    let said = stdout(&check);
    assert_eq!(
        code(&check),
        0,
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(said.contains("archive check: "), "{said}");
}
