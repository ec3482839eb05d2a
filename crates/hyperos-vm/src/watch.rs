//! Waiting for an instance to change, by watching its directory with
//! `notify` (inotify, FSEvents, ReadDirectoryChangesW).
//!
//! The supervisor replaces `state.json` and `lease.json` by renaming, so the
//! directory, not the files, is watched. A supervisor that dies writes
//! nothing: a slow liveness re-check (once a second) covers that case; it
//! reads local files only and never touches the VM.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::Watcher;

use crate::VmError;
use crate::paths::InstanceDir;
use crate::state::Status;

/// How often a watcher re-checks liveness when nothing changed.
pub const LIVENESS_RECHECK: Duration = Duration::from_secs(1);

/// A watch on one instance directory.
pub struct InstanceWatch {
    dir: InstanceDir,
    rx: mpsc::Receiver<()>,
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for InstanceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceWatch")
            .field("dir", &self.dir)
            .finish()
    }
}

impl InstanceWatch {
    /// Starts watching; the directory must exist.
    pub fn new(dir: &InstanceDir) -> Result<InstanceWatch, VmError> {
        let (tx, rx) = mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = event.is_ok_and(|e| {
                    e.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|n| n == "state.json" || n == "lease.json")
                    })
                });
                if relevant {
                    let _ = tx.send(());
                }
            })
            .map_err(|source| VmError::Watch {
                path: dir.path().to_owned(),
                source,
            })?;
        watcher
            .watch(dir.path(), notify::RecursiveMode::NonRecursive)
            .map_err(|source| VmError::Watch {
                path: dir.path().to_owned(),
                source,
            })?;
        Ok(InstanceWatch {
            dir: dir.clone(),
            rx,
            _watcher: watcher,
        })
    }

    /// Waits until the status satisfies `done` or `timeout` passes; returns
    /// the last status read, and whether `done` was reached.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Status) -> bool,
    ) -> Result<(Status, bool), VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = Status::read(&self.dir)?;
            if done(&status) {
                return Ok((status, true));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok((status, false));
            }
            let wait = (deadline - now).min(LIVENESS_RECHECK);
            match self.rx.recv_timeout(wait) {
                Ok(()) => while self.rx.try_recv().is_ok() {},
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// Calls `on_change` with every new status until it returns false.
    pub fn follow(&self, mut on_change: impl FnMut(&Status) -> bool) -> Result<(), VmError> {
        let mut last: Option<Status> = None;
        loop {
            let status = Status::read(&self.dir)?;
            if last.as_ref() != Some(&status) {
                if !on_change(&status) {
                    return Ok(());
                }
                last = Some(status);
            }
            match self.rx.recv_timeout(LIVENESS_RECHECK) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::StateDir;
    use crate::state::{Phase, StateRecord};

    #[test]
    fn sees_a_state_written_by_another_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::at(tmp.path()).instance("w");
        std::fs::create_dir_all(dir.path()).unwrap();
        let watch = InstanceWatch::new(&dir).unwrap();
        let writer = dir.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut r = StateRecord::new(Phase::Failed);
            r.error = Some("boom".into());
            r.write(&writer.state()).unwrap();
        });
        let start = Instant::now();
        let (status, done) = watch
            .wait_until(Duration::from_secs(10), |s| s.phase == Phase::Failed)
            .unwrap();
        t.join().unwrap();
        assert!(done);
        assert_eq!(status.record.unwrap().error.as_deref(), Some("boom"));
        // Woken by the event, not by the 1 s liveness re-check.
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn times_out_with_the_last_status() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::at(tmp.path()).instance("w");
        std::fs::create_dir_all(dir.path()).unwrap();
        let watch = InstanceWatch::new(&dir).unwrap();
        let (status, done) = watch
            .wait_until(Duration::from_millis(100), |s| s.phase == Phase::Running)
            .unwrap();
        assert!(!done);
        assert_eq!(status.phase, Phase::Stopped);
    }
}
