//! Records of the archives this machine serves: one file per running share
//! or seed, so `hyperos shares` can list them, `hyperos unshare` can stop
//! them, and other parts of HyperOS (the live boot of `hyperos run --vm`)
//! can hand a ticket for a locally served archive to a guest.
//!
//! ```text
//! <state>/shares/<archive key hex>/share.json
//!   {"key","link","version","ticket","pid","path","kind","log","started"}
//! ```
//!
//! `<state>` is HyperOS's state directory (not the node's `p2p/` directory
//! below it). The serving process writes its record (by rename) once it
//! serves, and removes it when it stops; a record whose process is gone is
//! *stale*. Field names are a contract with readers: add fields, never
//! rename them.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What serves an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareKind {
    /// `hyperos share`: the publisher.
    Share,
    /// `hyperos seed`: a copy fetched from peers.
    Seed,
    /// A file or folder dropped on the desktop app's window: served by the
    /// app itself for as long as it runs (stop it there, not with a signal).
    App,
}

impl ShareKind {
    /// The subcommand's name, also found on the process's command line.
    pub fn name(self) -> &'static str {
        match self {
            ShareKind::Share => "share",
            ShareKind::Seed => "seed",
            ShareKind::App => "app",
        }
    }

    /// What the serving process's command line holds: the subcommand, or
    /// for the app, its program's file name.
    fn marker(self) -> &'static str {
        match self {
            ShareKind::App => APP_PROGRAM,
            kind => kind.name(),
        }
    }
}

/// The desktop app's program name: the serving process of `App` shares.
pub const APP_PROGRAM: &str = "hyperos-desktop";

/// One running share or seed, as `share.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    /// The archive key, 64 hex digits.
    pub key: String,
    /// The link to the served version, `dat://<key>+<version>`.
    pub link: String,
    /// The served version.
    pub version: u64,
    /// The serving node's peer ticket (what `--peer` takes).
    pub ticket: String,
    /// The serving process.
    pub pid: u32,
    /// What was shared (for a seed: the node directory holding the copy).
    pub path: PathBuf,
    /// Share or seed.
    pub kind: ShareKind,
    /// The log of a `--daemon` share, if any.
    #[serde(default)]
    pub log: Option<PathBuf>,
    /// Unix seconds when it started serving.
    #[serde(default)]
    pub started: u64,
}

/// The directory holding the share records of a state directory.
pub fn shares_dir(state_root: &Path) -> PathBuf {
    state_root.join("shares")
}

/// Where the record of archive `key_hex` lives.
pub fn record_path(state_root: &Path, key_hex: &str) -> PathBuf {
    shares_dir(state_root).join(key_hex).join("share.json")
}

impl ShareRecord {
    /// Whether the recorded process still runs (and is a share or seed).
    pub fn is_alive(&self) -> bool {
        process_alive(self.pid, self.kind.marker())
    }

    /// Writes the record (to a temporary file, then renamed into place).
    pub fn write(&self, state_root: &Path) -> io::Result<()> {
        let path = record_path(state_root, &self.key);
        let dir = path.parent().unwrap_or(state_root);
        std::fs::create_dir_all(dir)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let tmp = dir.join(format!(".share.json.{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// Removes the record if it is still this process's (a newer process
    /// serving the same archive keeps its own).
    pub fn remove(&self, state_root: &Path) {
        let path = record_path(state_root, &self.key);
        let ours = read_record(&path).is_some_and(|r| r.pid == self.pid);
        if ours && let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn read_record(path: &Path) -> Option<ShareRecord> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// Every share record of the state directory, alive or stale, sorted by key.
/// Unreadable records (one being written, a stranger's file) are skipped.
pub fn all_shares(state_root: &Path) -> Vec<ShareRecord> {
    let Ok(entries) = std::fs::read_dir(shares_dir(state_root)) else {
        return Vec::new();
    };
    let mut list: Vec<ShareRecord> = entries
        .flatten()
        .filter_map(|e| read_record(&e.path().join("share.json")))
        .collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    list
}

/// The archives served on this machine right now: the records under
/// `<state_root>/shares/` whose process is alive.
pub fn local_shares(state_root: &Path) -> Vec<ShareRecord> {
    all_shares(state_root)
        .into_iter()
        .filter(ShareRecord::is_alive)
        .collect()
}

/// The record of archive `key_hex`, alive or stale.
pub fn share_of(state_root: &Path, key_hex: &str) -> Option<ShareRecord> {
    read_record(&record_path(state_root, key_hex))
}

/// Whether `pid` runs and (on Linux) has `marker` among its arguments, or as
/// its program's file name, so a reused pid is not taken for the share.
fn process_alive(pid: u32, marker: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
        !zombie
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                cmd.split(|b| *b == 0).enumerate().any(|(i, arg)| {
                    let program = if i == 0 {
                        arg.rsplit(|b| *b == b'/').next().unwrap_or(arg)
                    } else {
                        arg
                    };
                    arg == marker.as_bytes() || program == marker.as_bytes()
                })
            })
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        let _ = marker;
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, marker);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> ShareRecord {
        ShareRecord {
            key: "ab".repeat(32),
            link: format!("dat://{}+1", "ab".repeat(32)),
            version: 1,
            ticket: "hyperospeerxyz".into(),
            pid,
            path: "/srv/rootfs".into(),
            kind: ShareKind::Share,
            log: None,
            started: 5,
        }
    }

    #[test]
    fn records_list_alive_and_stale_and_keep_field_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(local_shares(dir.path()).is_empty());
        // The test binary's own pid, but it is not a `share` process: stale.
        let stale = record(std::process::id());
        stale.write(dir.path()).unwrap();
        assert_eq!(all_shares(dir.path()), vec![stale.clone()]);
        assert!(local_shares(dir.path()).is_empty());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(record_path(dir.path(), &stale.key)).unwrap())
                .unwrap();
        for field in ["key", "link", "version", "ticket", "pid", "path"] {
            assert!(json.get(field).is_some(), "{field} in {json}");
        }
        // Another pid's record is not removed by this one.
        record(1).remove(dir.path());
        assert!(share_of(dir.path(), &stale.key).is_some());
        stale.remove(dir.path());
        assert!(all_shares(dir.path()).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_running_share_process_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        // A process whose arguments include `share`, like `hyperos share`.
        // (Its `sleep` outlives the kill: it gets no pipe of the test's.)
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30", "share"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until `sh` has replaced the forked copy of this test, the process's
        // arguments are in flux; wait for its own.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"sh\0")) {
            assert!(std::time::Instant::now() < deadline, "sh never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let alive = record(child.id());
        alive.write(dir.path()).unwrap();
        assert_eq!(local_shares(dir.path()), vec![alive]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(local_shares(dir.path()).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_app_share_is_alive_while_the_app_runs() {
        let dir = tempfile::tempdir().unwrap();
        // A program named like the app (a copy of `sleep`), at a path.
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let program = bin.join(APP_PROGRAM);
        std::fs::copy("/bin/sleep", &program).unwrap();
        let mut child = std::process::Command::new(&program)
            .arg("30")
            .spawn()
            .unwrap();
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read(&cmdline).is_ok_and(|c| c.ends_with(b"30\0")) {
            assert!(
                std::time::Instant::now() < deadline,
                "the program never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut app = record(child.id());
        app.kind = ShareKind::App;
        app.write(dir.path()).unwrap();
        assert_eq!(local_shares(dir.path()), vec![app.clone()]);
        // The same pid recorded as a `share` is not alive: no such argument.
        let mut share = app.clone();
        share.kind = ShareKind::Share;
        assert!(!share.is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(local_shares(dir.path()).is_empty());
    }
}
