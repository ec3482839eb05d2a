//! The state of an instance, as its supervisor records it.
//!
//! ```text
//!            boot                 ready event           halt / poweroff
//! Stopped ─────────▶ Booting ───────────────▶ Running ─────────────────▶ Stopping
//!    ▲                  │                        │                          │
//!    │                  │ QEMU exits early,      │ QEMU exits                │ QEMU exits
//!    │                  ▼ timeout                ▼                          ▼
//!    └───────────── Failed            Stopped (or Failed)                Stopped
//! ```
//!
//! `state.json` is written only by the instance's supervisor. A record whose
//! supervisor is gone (host crash, `kill -9`) is stale: [`Status::read`]
//! reports it as [`Phase::Stopped`].

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::VmError;
use crate::paths::{InstanceDir, write_atomic};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Booting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl Phase {
    /// Whether a supervisor should be alive in this phase.
    pub fn is_live(self) -> bool {
        matches!(self, Phase::Booting | Phase::Running | Phase::Stopping)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Booting => "booting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        })
    }
}

/// Host-side wall-clock times of one boot, in ms since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// `hyperos boot` was invoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_ms: Option<u64>,
    /// QEMU was spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_spawned_ms: Option<u64>,
    /// The guest kernel started (ready time minus the guest's uptime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_start_ms: Option<u64>,
    /// PID 1 started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_start_ms: Option<u64>,
    /// SSH accepted logins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub phase: Phase,
    /// When the phase was entered, ms since the Unix epoch.
    pub since_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_pid: Option<u32>,
    /// The accelerator QEMU uses (kvm, hvf, whpx, tcg).
    #[serde(default)]
    pub accel: String,
    /// The SSH host key the guest reported, in OpenSSH form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Memory in use in the guest right after boot, in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mem_used_kib: Option<u64>,
    /// What went wrong, for `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub timings: Timings,
}

impl StateRecord {
    pub fn new(phase: Phase) -> StateRecord {
        StateRecord {
            phase,
            since_ms: now_ms(),
            supervisor_pid: None,
            qemu_pid: None,
            accel: String::new(),
            host_key: None,
            guest_mem_used_kib: None,
            error: None,
            timings: Timings::default(),
        }
    }

    pub fn read(path: &Path) -> Result<Option<StateRecord>, VmError> {
        read_json(path)
    }

    pub fn write(&self, path: &Path) -> Result<(), VmError> {
        write_json(path, self)
    }
}

/// Where the guest's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseSource {
    /// The guest's DHCP client, over the agent channel.
    Guest,
    /// The host's DHCP server lease file, matched by hostname.
    LeaseFile,
}

/// The content of `lease.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    pub source: LeaseSource,
    /// When it was recorded, ms since the Unix epoch.
    pub at_ms: u64,
}

impl LeaseRecord {
    pub fn read(path: &Path) -> Result<Option<LeaseRecord>, VmError> {
        read_json(path)
    }

    pub fn write(&self, path: &Path) -> Result<(), VmError> {
        write_json(path, self)
    }
}

/// What a front end shows of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub name: String,
    pub phase: Phase,
    /// The record as written, `None` if the instance never booted.
    pub record: Option<StateRecord>,
    pub lease: Option<LeaseRecord>,
    /// The record said live but its supervisor is gone.
    pub stale: bool,
}

impl Status {
    /// Reads an instance's status, treating a dead supervisor as stopped.
    pub fn read(dir: &InstanceDir) -> Result<Status, VmError> {
        let mut record = StateRecord::read(&dir.state())?;
        let lease = LeaseRecord::read(&dir.lease())?;
        // A supervisor writes its final state and then exits: if it is gone
        // now, read again, or a record read just before that last write
        // would pass for a stale one.
        if record.as_ref().is_some_and(|r| {
            r.phase.is_live()
                && !r
                    .supervisor_pid
                    .is_some_and(|pid| process_alive(pid, "__supervise"))
        }) {
            record = StateRecord::read(&dir.state())?;
        }
        let (phase, stale) = match &record {
            None => (Phase::Stopped, false),
            Some(r) if r.phase.is_live() => {
                let alive = r
                    .supervisor_pid
                    .is_some_and(|pid| process_alive(pid, "__supervise"));
                if alive {
                    (r.phase, false)
                } else {
                    (Phase::Stopped, true)
                }
            }
            Some(r) => (r.phase, false),
        };
        let lease = if phase.is_live() { lease } else { None };
        Ok(Status {
            name: dir.name(),
            phase,
            record,
            lease,
            stale,
        })
    }

    pub fn ip(&self) -> Option<&str> {
        self.lease.as_ref().map(|l| l.ip.as_str())
    }

    pub fn qemu_pid(&self) -> Option<u32> {
        if self.phase.is_live() {
            self.record.as_ref().and_then(|r| r.qemu_pid)
        } else {
            None
        }
    }
}

/// Whether `pid` is a live process whose command line contains `marker`
/// (guarding against a pid reused after a host crash, where the OS lets us
/// check). Zombies count as dead.
pub fn process_alive(pid: u32, marker: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The state letter follows the parenthesised command name.
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
        if zombie {
            return false;
        }
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmd| marker.is_empty() || contains(&cmd, marker.as_bytes()))
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

#[cfg(target_os = "linux")]
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, VmError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| VmError::CorruptState {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(VmError::io("read", path)(e)),
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), VmError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| VmError::CorruptState {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::StateDir;

    #[test]
    fn dead_supervisor_reads_as_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::at(tmp.path()).instance("a");
        std::fs::create_dir_all(dir.path()).unwrap();
        assert_eq!(Status::read(&dir).unwrap().phase, Phase::Stopped);

        let mut record = StateRecord::new(Phase::Running);
        // A pid that cannot exist on Linux (above pid_max's hard limit).
        record.supervisor_pid = Some(u32::MAX - 1);
        record.write(&dir.state()).unwrap();
        LeaseRecord {
            ip: "10.0.2.15".into(),
            lease_secs: Some(60),
            source: LeaseSource::Guest,
            at_ms: 1,
        }
        .write(&dir.lease())
        .unwrap();
        let status = Status::read(&dir).unwrap();
        assert_eq!(status.phase, Phase::Stopped);
        assert!(status.stale);
        assert_eq!(status.ip(), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn live_process_with_marker() {
        let me = std::process::id();
        assert!(process_alive(me, ""));
        assert!(!process_alive(me, "definitely-not-in-my-cmdline"));
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = StateRecord::read(&path).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
