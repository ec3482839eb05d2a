//! The front ends' entry point: boot, inspect, halt, kill and remove
//! instances.

use std::path::PathBuf;
use std::time::Duration;

use hyperos_proto::GuestConfig;

use crate::VmError;
use crate::accel::{self, Accel};
use crate::instance::{self, InstanceSpec, NetMode};
use crate::paths::{InstanceDir, StateDir, create_private_dir, write_atomic};
use crate::state::write_json;
use crate::state::{Phase, Status};
use crate::watch::InstanceWatch;

/// Extra time the front end waits beyond the supervisor's own boot
/// deadline before giving up on it.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(10);

/// What the user asked `boot` for. `None` keeps the instance's previous
/// value, or the default.
#[derive(Debug, Clone, Default)]
pub struct BootRequest {
    pub name: String,
    pub hostname: Option<String>,
    pub memory_mib: Option<u32>,
    pub cpus: Option<u32>,
    pub net: Option<NetMode>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub ssh_port: Option<u16>,
    pub bridge: Option<String>,
    pub lease_file: Option<PathBuf>,
    pub authorized_keys: Vec<String>,
    pub legacy_cmdline: bool,
    pub disk_bytes: Option<u64>,
    pub timeout: Duration,
}

/// Starts a supervisor process for an instance. The CLI re-executes itself
/// (`hyperos __supervise`); the desktop app does the same with its binary.
pub trait SupervisorLauncher {
    fn launch(
        &self,
        dir: &InstanceDir,
        qemu: &std::path::Path,
        accel: Accel,
    ) -> Result<(), VmError>;
}

/// The outcome of a successful boot.
#[derive(Debug, Clone)]
pub struct Booted {
    pub status: Status,
    pub spec: InstanceSpec,
    /// Set when the accelerator fell back to TCG.
    pub accel_warning: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Manager {
    state: StateDir,
}

impl Manager {
    pub fn new(state: StateDir) -> Manager {
        Manager { state }
    }

    pub fn state_dir(&self) -> &StateDir {
        &self.state
    }

    /// The directory of an existing instance.
    pub fn instance(&self, name: &str) -> Result<InstanceDir, VmError> {
        instance::validate_name(name)?;
        let dir = self.state.instance(name);
        if dir.exists() {
            Ok(dir)
        } else {
            Err(VmError::UnknownInstance(name.to_owned()))
        }
    }

    pub fn spec(&self, name: &str) -> Result<InstanceSpec, VmError> {
        let dir = self.instance(name)?;
        read_spec(&dir)
    }

    pub fn status(&self, name: &str) -> Result<Status, VmError> {
        Status::read(&self.instance(name)?)
    }

    /// Every instance, sorted by name.
    pub fn list(&self) -> Result<Vec<(InstanceSpec, Status)>, VmError> {
        let root = self.state.instances_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VmError::io("list", root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = self.state.instance(&name);
            if !dir.exists() {
                continue;
            }
            out.push((read_spec(&dir)?, Status::read(&dir)?));
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    /// Boots an instance and waits until it is running.
    pub fn boot(
        &self,
        request: BootRequest,
        launcher: &dyn SupervisorLauncher,
    ) -> Result<Booted, VmError> {
        instance::validate_name(&request.name)?;
        let dir = self.state.instance(&request.name);
        let previous = if dir.exists() {
            let status = Status::read(&dir)?;
            if status.phase.is_live() {
                return Err(VmError::AlreadyRunning(request.name));
            }
            Some(read_spec(&dir)?)
        } else {
            None
        };
        for path in [&request.kernel, &request.initrd] {
            if !path.is_file() {
                return Err(VmError::NoImage(path.clone()));
            }
        }
        crate::qemu::check_kernel(&request.kernel)?;
        crate::qemu::check_initrd(&request.initrd)?;
        for key in &request.authorized_keys {
            hyperos_proto::config::validate_public_key(key)
                .map_err(|e| VmError::Unsupported(e.to_string()))?;
        }
        let qemu = crate::qemu::find_qemu()?;

        let net = request
            .net
            .or(previous.as_ref().map(|p| p.net))
            .unwrap_or_default();
        let ssh_port = match (net, request.ssh_port) {
            (NetMode::Bridged, _) => None,
            (NetMode::User, Some(port)) => {
                check_port_free(port)?;
                Some(port)
            }
            (NetMode::User, None) => Some(free_port()?),
        };
        let hostname = request
            .hostname
            .clone()
            .or(previous.as_ref().map(|p| p.hostname.clone()))
            .unwrap_or_else(crate::names::random_hostname);
        hyperos_proto::config::validate_hostname(&hostname)
            .map_err(|e| VmError::Unsupported(e.to_string()))?;
        let spec = InstanceSpec {
            name: request.name.clone(),
            hostname: hostname.clone(),
            memory_mib: request
                .memory_mib
                .or(previous.as_ref().map(|p| p.memory_mib))
                .unwrap_or(instance::DEFAULT_MEMORY_MIB),
            cpus: request
                .cpus
                .or(previous.as_ref().map(|p| p.cpus))
                .unwrap_or(instance::DEFAULT_CPUS)
                .max(1),
            kernel: absolute(&request.kernel),
            initrd: absolute(&request.initrd),
            net,
            ssh_port,
            bridge: request.bridge.clone(),
            lease_file: request.lease_file.clone(),
            mac: previous
                .as_ref()
                .map(|p| p.mac.clone())
                .unwrap_or_else(instance::random_mac),
            authorized_keys: request.authorized_keys.clone(),
            legacy_cmdline: request.legacy_cmdline,
            disk_bytes: request
                .disk_bytes
                .or(previous.as_ref().map(|p| p.disk_bytes))
                .unwrap_or(instance::DEFAULT_DISK_BYTES),
            boot_timeout_secs: request.timeout.as_secs().max(1),
        };

        create_private_dir(dir.path())?;
        write_json(&dir.spec(), &spec)?;
        let config = GuestConfig {
            hostname: Some(hostname),
            authorized_keys: spec.authorized_keys.clone(),
            ..GuestConfig::default()
        };
        write_atomic(&dir.guest_config(), &config.to_json())?;
        if spec.disk_bytes > 0 {
            ensure_sparse_disk(&dir.disk(), spec.disk_bytes)?;
        }
        for stale in [dir.state(), dir.lease()] {
            let _ = std::fs::remove_file(stale);
        }

        let choice = accel::detect(&qemu);
        let watch = InstanceWatch::new(&dir)?;
        launcher.launch(&dir, &qemu, choice.accel)?;
        let (status, done) = watch.wait_until(request.timeout + SUPERVISOR_SLACK, |s| {
            s.record.is_some() && !matches!(s.phase, Phase::Booting)
        })?;
        if !done {
            let _ = self.kill(&spec.name);
            return Err(VmError::BootTimeout {
                secs: request.timeout.as_secs(),
                console: console_tail(&dir, 20),
            });
        }
        match status.phase {
            Phase::Running => Ok(Booted {
                status,
                spec,
                accel_warning: choice.warning,
            }),
            _ => {
                let reason = status
                    .record
                    .as_ref()
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| format!("it is {}", status.phase));
                if reason.contains("not ready within") {
                    Err(VmError::BootTimeout {
                        secs: request.timeout.as_secs(),
                        console: console_tail(&dir, 20),
                    })
                } else {
                    Err(VmError::BootFailed {
                        reason,
                        console: console_tail(&dir, 20),
                    })
                }
            }
        }
    }

    /// Asks the guest to power off (ACPI), waits up to `timeout` for it to
    /// stop, then kills it.
    pub fn halt(&self, name: &str, timeout: Duration) -> Result<Status, VmError> {
        let dir = self.instance(name)?;
        let status = Status::read(&dir)?;
        if !status.phase.is_live() {
            return Err(VmError::NotRunning(name.to_owned()));
        }
        let watch = InstanceWatch::new(&dir)?;
        if crate::qmp::execute(&dir.qmp_socket(), "system_powerdown").is_err() {
            // No monitor: the supervisor asks the guest over the agent channel.
            if let Some(pid) = status.record.as_ref().and_then(|r| r.supervisor_pid) {
                signal(pid, Signal::Term);
            }
        }
        let (status, done) = watch.wait_until(timeout, |s| !s.phase.is_live())?;
        if done {
            return Ok(status);
        }
        tracing::warn!(
            instance = name,
            "the guest did not stop in time; killing it"
        );
        self.kill(name)
    }

    /// Kills the VM at once (SIGKILL to QEMU), as pulling the plug would.
    pub fn kill(&self, name: &str) -> Result<Status, VmError> {
        let dir = self.instance(name)?;
        let status = Status::read(&dir)?;
        if !status.phase.is_live() {
            return Err(VmError::NotRunning(name.to_owned()));
        }
        let watch = InstanceWatch::new(&dir)?;
        let record = status.record.clone();
        match record.as_ref().and_then(|r| r.qemu_pid) {
            Some(pid) => signal(pid, Signal::Kill),
            None => {
                if let Some(pid) = record.as_ref().and_then(|r| r.supervisor_pid) {
                    signal(pid, Signal::Kill);
                }
            }
        }
        let (status, done) = watch.wait_until(Duration::from_secs(10), |s| !s.phase.is_live())?;
        if !done {
            if let Some(pid) = record.and_then(|r| r.supervisor_pid) {
                signal(pid, Signal::Kill);
            }
            return Ok(watch
                .wait_until(Duration::from_secs(5), |s| !s.phase.is_live())?
                .0);
        }
        Ok(status)
    }

    /// Deletes a stopped instance and everything it kept (its data disk too).
    pub fn remove(&self, name: &str) -> Result<(), VmError> {
        let dir = self.instance(name)?;
        if Status::read(&dir)?.phase.is_live() {
            return Err(VmError::AlreadyRunning(name.to_owned()));
        }
        std::fs::remove_dir_all(dir.path()).map_err(VmError::io("remove", dir.path()))
    }
}

/// The last `lines` lines of an instance's console (or of QEMU's own log
/// when the console is empty), for error messages.
pub fn console_tail(dir: &InstanceDir, lines: usize) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let mut text = read(dir.console_log());
    if text.trim().is_empty() {
        text = read(dir.qemu_log());
    }
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "  (the console is empty)".to_owned()
    } else {
        tail.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn read_spec(dir: &InstanceDir) -> Result<InstanceSpec, VmError> {
    crate::state::read_json(&dir.spec())?.ok_or_else(|| VmError::UnknownInstance(dir.name()))
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn ensure_sparse_disk(path: &std::path::Path, bytes: u64) -> Result<(), VmError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        // The guest's data (container layers later) is the user's alone.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(VmError::io("create", path))?;
    let len = file.metadata().map_err(VmError::io("inspect", path))?.len();
    if len < bytes {
        file.set_len(bytes).map_err(VmError::io("size", path))?;
    }
    Ok(())
}

fn check_port_free(port: u16) -> Result<(), VmError> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|_| VmError::PortInUse(port))
}

fn free_port() -> Result<u16, VmError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(VmError::io("find a free port on", "127.0.0.1"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(VmError::io("find a free port on", "127.0.0.1"))
}

enum Signal {
    Term,
    Kill,
}

fn signal(pid: u32, signal: Signal) {
    #[cfg(unix)]
    {
        let sig = match signal {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: sending a signal has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_instances_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Manager::new(StateDir::at(tmp.path()));
        assert!(matches!(m.status("nope"), Err(VmError::UnknownInstance(_))));
        assert!(matches!(m.status("../x"), Err(VmError::InvalidName(_))));
        assert!(m.list().unwrap().is_empty());
    }

    #[test]
    fn port_in_use_is_detected() {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(matches!(check_port_free(port), Err(VmError::PortInUse(p)) if p == port));
        drop(l);
        check_port_free(port).unwrap();
    }

    #[test]
    fn sparse_disk_keeps_content() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("disk.img");
        ensure_sparse_disk(&p, 1 << 20).unwrap();
        std::fs::write(&p, b"data").unwrap();
        ensure_sparse_disk(&p, 1 << 20).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..4], b"data");
        assert_eq!(bytes.len(), 1 << 20);
    }
}
