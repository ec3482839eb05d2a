//! What the window and the tray show: one snapshot, rebuilt from the
//! instance's files whenever they change.

use serde::Serialize;

use hyperos_vm::{InstanceSpec, Phase, Status};

/// The VM as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmView {
    /// booting, running, stopping, stopped or failed.
    pub state: String,
    pub hostname: Option<String>,
    pub ip: Option<String>,
    /// `host:port` of the guest's SSH server.
    pub ssh: Option<String>,
    /// When the current phase began, ms since the Unix epoch (uptime when running).
    pub since_ms: Option<u64>,
    pub memory_mib: Option<u32>,
    /// Memory in use in the guest right after boot.
    pub mem_used_kib: Option<u64>,
    pub accel: Option<String>,
    /// Why it failed, for `failed`.
    pub error: Option<String>,
}

impl VmView {
    pub fn from_status(spec: Option<&InstanceSpec>, status: &Status) -> VmView {
        let record = status.record.as_ref();
        let live = status.phase.is_live();
        VmView {
            state: status.phase.to_string(),
            hostname: spec.map(|s| s.hostname.clone()),
            ip: status.ip().map(str::to_owned),
            ssh: spec
                .filter(|_| live)
                .and_then(|s| s.ssh_target(status.ip()))
                .map(|(host, port)| format!("{host}:{port}")),
            since_ms: record.filter(|_| live).map(|r| r.since_ms),
            memory_mib: spec.map(|s| s.memory_mib),
            mem_used_kib: record
                .filter(|_| status.phase == Phase::Running)
                .and_then(|r| r.guest_mem_used_kib),
            accel: record
                .map(|r| r.accel.clone())
                .filter(|a| !a.is_empty() && live),
            error: record
                .and_then(|r| r.error.clone())
                .filter(|_| status.phase == Phase::Failed),
        }
    }

    pub fn phase(&self) -> &str {
        &self.state
    }
}

/// Everything the front end shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppView {
    pub instance: String,
    pub vm: VmView,
    /// An action the app is doing: "starting", "stopping", "restarting".
    pub busy: Option<String>,
    /// The last action's failure, until the next action.
    pub action_error: Option<String>,
    /// Where the SSH key is kept: "keychain" or "file".
    pub key_store: String,
    /// The same, in words.
    pub key_store_detail: String,
    pub autostart: bool,
    pub boot_at_login: bool,
}

/// The icon the tray shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrayState {
    Stopped,
    Booting,
    Running,
    Error,
}

impl AppView {
    pub fn tray_state(&self) -> TrayState {
        match self.vm.phase() {
            "running" if self.busy.is_none() => TrayState::Running,
            "booting" | "stopping" | "running" => TrayState::Booting,
            "failed" => TrayState::Error,
            _ if self.busy.is_some() => TrayState::Booting,
            _ if self.action_error.is_some() => TrayState::Error,
            _ => TrayState::Stopped,
        }
    }
}
