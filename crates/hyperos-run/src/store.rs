//! Where containers live: `<state>/containers/<name>/`.
//!
//! ```text
//! <name>/lock         held (flock) by the `hyperos run` of this container
//! <name>/upper/       the writable layer: what the container changed (kept)
//! <name>/work/        overlayfs's work directory, beside upper/
//! <name>/run.json     the running `hyperos run`: its pid and what it mounted
//! <name>/last-run.json what the last run fetched, and its exit code
//! <name>/mnt/{fuse,lower,root}/  mount points while it runs
//! <name>/volatile/    upper/ and work/ of a --volatile run, deleted after
//! ```
//!
//! `run.json` is written before anything is mounted and removed after
//! everything is unmounted, so a `hyperos run` killed with SIGKILL leaves a
//! record whose pid is dead; [`Containers::clean_stale`] unmounts what it
//! names. The lock, not the record, says whether a run is alive: the kernel
//! drops it with the process.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest container name (a hostname label).
pub const MAX_NAME: usize = 63;

/// Checks a container name: it becomes the container's hostname.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a container name: use 1-{MAX_NAME} lowercase letters, digits and inner dashes, e.g. --name web"
        ))
    }
}

/// A container name derived from what it runs: `dat-<8 hex>` for an archive,
/// the file or directory name for a path.
pub fn default_name(source: &crate::Source) -> String {
    match source {
        crate::Source::Link(link) => format!("dat-{}", &link.key.to_hex()[..8]),
        crate::Source::Path(path) => {
            let stem = path
                .file_stem()
                .or_else(|| path.file_name())
                .map(|s| s.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            let mut name = String::new();
            for c in stem.chars() {
                if c.is_ascii_alphanumeric() {
                    name.push(c);
                } else if !name.ends_with('-') {
                    name.push('-');
                }
            }
            let name: String = name.trim_matches('-').chars().take(MAX_NAME).collect();
            let name = name.trim_end_matches('-').to_owned();
            if name.is_empty() {
                "container".to_owned()
            } else {
                name
            }
        }
    }
}

/// What a running `hyperos run` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRecord {
    pub name: String,
    /// The `hyperos run` process.
    pub pid: u32,
    /// The `dat://` link (with version) or path it runs.
    pub source: String,
    /// Unix seconds.
    pub started: u64,
    pub boot: bool,
    pub volatile: bool,
    /// Mount points to undo, innermost last: the overlay, the image, FUSE.
    pub mounts: Vec<PathBuf>,
}

/// What a running container has fetched so far (`progress.json`, while it
/// runs from an archive).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunProgress {
    /// Verified bytes fetched from peers.
    pub bytes_fetched: u64,
    /// Bytes read that were already in the local store.
    pub bytes_from_cache: u64,
    /// The image's length.
    pub image_len: u64,
    /// Requests sent to peers, and how many failed.
    pub requests: u64,
    pub failed_requests: u64,
    /// Peers known, and connected now.
    pub peers_known: u64,
    pub peers_connected: u64,
}

/// What the last run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LastRun {
    pub source: String,
    pub exit_code: i32,
    pub seconds: f64,
    /// Verified bytes fetched from peers (0 for a local image).
    pub bytes_fetched: u64,
    /// Bytes read that were already in the local store.
    pub bytes_from_cache: u64,
    /// The image's length.
    pub image_len: u64,
    /// Requests sent to peers.
    pub requests: u64,
}

/// One container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    name: String,
    path: PathBuf,
}

impl ContainerDir {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn volatile(&self) -> PathBuf {
        self.path.join("volatile")
    }
    pub fn mnt(&self, which: &str) -> PathBuf {
        self.path.join("mnt").join(which)
    }
    pub fn record(&self) -> PathBuf {
        self.path.join("run.json")
    }
    pub fn last_run(&self) -> PathBuf {
        self.path.join("last-run.json")
    }
    pub fn progress(&self) -> PathBuf {
        self.path.join("progress.json")
    }
    fn lock_path(&self) -> PathBuf {
        self.path.join("lock")
    }

    /// Takes the container's lock, or says who holds it.
    pub fn lock(&self) -> anyhow::Result<File> {
        std::fs::create_dir_all(&self.path)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = self
                    .read_record()
                    .map(|r| format!(" (pid {})", r.pid))
                    .unwrap_or_default();
                anyhow::bail!(
                    "container {} is already running{pid}: `hyperos stop {}` stops it, or pick another --name",
                    self.name,
                    self.name
                )
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Whether a `hyperos run` holds the lock now.
    pub fn is_running(&self) -> bool {
        let Ok(file) = File::options().write(true).open(self.lock_path()) else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    pub fn read_record(&self) -> Option<RunRecord> {
        std::fs::read(self.record())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn read_last_run(&self) -> Option<LastRun> {
        std::fs::read(self.last_run())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Whether the container has a writable layer.
    pub fn has_layer(&self) -> bool {
        self.upper().is_dir()
    }
}

/// A container as `hyperos ps` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    /// `running`, or `stopped`.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub source: Option<String>,
    pub started: Option<u64>,
    /// While it runs from an archive: what it fetched so far.
    pub progress: Option<RunProgress>,
    pub last_run: Option<LastRun>,
}

/// All containers of a state directory.
#[derive(Debug, Clone)]
pub struct Containers {
    root: PathBuf,
}

impl Containers {
    pub fn new(state_root: &Path) -> Containers {
        Containers {
            root: state_root.join("containers"),
        }
    }

    pub fn dir(&self, name: &str) -> ContainerDir {
        ContainerDir {
            name: name.to_owned(),
            path: self.root.join(name),
        }
    }

    fn dirs(&self) -> anyhow::Result<Vec<ContainerDir>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && validate_name(&name).is_ok() {
                dirs.push(self.dir(&name));
            }
        }
        dirs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(dirs)
    }

    /// Every container, running or with a layer kept.
    pub fn list(&self) -> anyhow::Result<Vec<ContainerInfo>> {
        Ok(self
            .dirs()?
            .into_iter()
            .map(|dir| {
                let running = dir.is_running();
                let record = dir.read_record().filter(|_| running);
                let last_run = dir.read_last_run();
                ContainerInfo {
                    name: dir.name.clone(),
                    state: if running { "running" } else { "stopped" },
                    pid: record.as_ref().map(|r| r.pid),
                    source: record
                        .as_ref()
                        .map(|r| r.source.clone())
                        .or_else(|| last_run.as_ref().map(|l| l.source.clone())),
                    started: record.as_ref().map(|r| r.started),
                    progress: running
                        .then(|| std::fs::read(dir.progress()).ok())
                        .flatten()
                        .and_then(|b| serde_json::from_slice(&b).ok()),
                    last_run,
                }
            })
            .collect())
    }

    /// Undoes what runs killed before they cleaned up left behind: their
    /// mounts, volatile layers and records. Returns the names cleaned.
    pub fn clean_stale(&self) -> anyhow::Result<Vec<String>> {
        let mut cleaned = Vec::new();
        for dir in self.dirs()? {
            let Some(record) = dir.read_record() else {
                continue;
            };
            // Hold the lock while cleaning, so a run starting now waits out.
            let Ok(_lock) = dir.lock() else {
                continue;
            };
            for mount in &record.mounts {
                crate::mounts::detach(mount);
            }
            if record.volatile {
                let _ = std::fs::remove_dir_all(dir.volatile());
            }
            std::fs::remove_file(dir.record())?;
            tracing::info!(name = %dir.name, pid = record.pid, "cleaned up after a killed run");
            cleaned.push(dir.name.clone());
        }
        Ok(cleaned)
    }

    /// Deletes a stopped container's writable layer and records.
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        validate_name(name).map_err(anyhow::Error::msg)?;
        let dir = self.dir(name);
        if !dir.path.is_dir() {
            anyhow::bail!("no container named {name}: `hyperos ps` lists them");
        }
        let _lock = dir.lock().map_err(|_| {
            anyhow::anyhow!("container {name} is running: `hyperos stop {name}` first")
        })?;
        if let Some(record) = dir.read_record() {
            for mount in &record.mounts {
                crate::mounts::detach(mount);
            }
        }
        // Never follow a mount into what it holds: refuse if one is left.
        for which in ["root", "lower", "fuse"] {
            if crate::mounts::is_mounted(&dir.mnt(which)) {
                anyhow::bail!(
                    "{} is still mounted: unmount it (`umount -l {}`) and retry",
                    dir.mnt(which).display(),
                    dir.mnt(which).display()
                );
            }
        }
        std::fs::remove_dir_all(&dir.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Source;

    #[test]
    fn names() {
        for good in ["web", "dat-01ab23cd", "a", &"x".repeat(63)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", &"x".repeat(64)] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.contains("is not a container name"), "{err}");
        }
    }

    #[test]
    fn default_names_are_valid() {
        let link = "dat://0101010101010101010101010101010101010101010101010101010101010101"
            .parse()
            .unwrap();
        assert_eq!(default_name(&Source::Link(link)), "dat-01010101");
        for (path, name) in [
            ("/srv/Debian Bookworm.erofs", "debian-bookworm"),
            ("./rootfs/", "rootfs"),
            ("/", "container"),
            ("__", "container"),
        ] {
            let got = default_name(&Source::Path(path.into()));
            assert_eq!(got, name, "{path}");
            validate_name(&got).unwrap();
        }
    }

    #[test]
    fn the_lock_tells_running_from_stopped() {
        let state = tempfile::tempdir().unwrap();
        let containers = Containers::new(state.path());
        let dir = containers.dir("web");
        assert!(!dir.is_running());
        let lock = dir.lock().unwrap();
        assert!(dir.is_running());
        let err = dir.lock().unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        assert_eq!(containers.list().unwrap()[0].state, "running");
        drop(lock);
        assert!(!dir.is_running());
        assert_eq!(containers.list().unwrap()[0].state, "stopped");
    }

    #[test]
    fn stale_records_are_cleaned_and_layers_removed() {
        let state = tempfile::tempdir().unwrap();
        let containers = Containers::new(state.path());
        let dir = containers.dir("old");
        std::fs::create_dir_all(dir.upper().join("etc")).unwrap();
        std::fs::create_dir_all(dir.volatile()).unwrap();
        let record = RunRecord {
            name: "old".into(),
            pid: u32::MAX,
            source: "x".into(),
            started: 0,
            boot: false,
            volatile: true,
            mounts: vec![dir.mnt("root")],
        };
        std::fs::write(dir.record(), serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(containers.clean_stale().unwrap(), vec!["old".to_owned()]);
        assert!(!dir.record().exists() && !dir.volatile().exists());
        assert!(dir.has_layer(), "the kept layer stays");
        containers.remove("old").unwrap();
        assert!(!dir.path().exists());
        let err = containers.remove("old").unwrap_err().to_string();
        assert!(err.contains("no container named old"), "{err}");
    }
}
