//! A small file system for disk-full tests: a tmpfs of a chosen size mounted on a folder (mounting needs
//! root, as the private clusters do), owned by a chosen user, unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on `path` until dropped.
pub struct SmallFs {
    pub path: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes` on the new folder `path`, owned by `owner` (a user name).
    pub fn mount(path: &Path, bytes: u64, owner: &str) -> Self {
        std::fs::create_dir(path).expect("make the mount point");
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={bytes},mode=0700"),
            "tmpfs",
            path.to_str().expect("a utf-8 path"),
        ]);
        let small = Self {
            path: path.to_owned(),
        };
        let chown = Command::new("chown")
            .arg(format!("{owner}:"))
            .arg(path)
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown {owner} {}", path.display());
        small
    }

    /// Changes the size; what is stored stays.
    pub fn resize(&self, bytes: u64) {
        mount(&[
            "-o",
            &format!("remount,size={bytes}"),
            self.path.to_str().expect("a utf-8 path"),
        ]);
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        let fs = rustix::fs::statvfs(&self.path).expect("statvfs");
        (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there cannot keep the mount (and the test) alive.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn mount(args: &[&str]) {
    let out = Command::new("mount")
        .args(args)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} failed (the disk-full tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
