//! The one VM the app manages, through `hyperos_vm::Manager`: the same
//! instance (`default`) and state directory the `hyperos` CLI uses, so
//! `hyperos ssh` reaches the VM the app started and the other way round.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hyperos_ssh::{Endpoint, UserKey};
use hyperos_vm::instance::DEFAULT_NAME;
use hyperos_vm::launcher::SelfExec;
use hyperos_vm::manager::BootRequest;
use hyperos_vm::{Manager, Phase, StateDir, Status};

use crate::view::VmView;

/// Seconds a boot may take: generous enough for emulation (TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Seconds a guest gets to power off before it is killed.
const HALT_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds to log in over SSH.
const SSH_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Vm {
    manager: Manager,
    name: String,
    image_dir: PathBuf,
    /// What the app is doing to the VM right now.
    busy: Mutex<Option<&'static str>>,
    action_error: Mutex<Option<String>>,
}

impl Vm {
    pub fn new(state: StateDir, image_dir: PathBuf) -> Vm {
        tracing::info!("kernel and initrd.gz from {}", image_dir.display());
        let name = std::env::var("HYPEROS_INSTANCE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        Vm {
            manager: Manager::new(state),
            name,
            image_dir,
            busy: Mutex::new(None),
            action_error: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state_dir(&self) -> &StateDir {
        self.manager.state_dir()
    }

    pub fn status(&self) -> Status {
        let dir = self.state_dir().instance(&self.name);
        Status::read(&dir).unwrap_or_else(|err| Status {
            name: self.name.clone(),
            phase: Phase::Failed,
            record: Some({
                let mut r = hyperos_vm::state::StateRecord::new(Phase::Failed);
                r.error = Some(err.to_string());
                r
            }),
            lease: None,
            stale: false,
        })
    }

    pub fn view(&self) -> VmView {
        let spec = self.manager.spec(&self.name).ok();
        VmView::from_status(spec.as_ref(), &self.status())
    }

    pub fn busy(&self) -> Option<&'static str> {
        *lock(&self.busy)
    }

    pub fn action_error(&self) -> Option<String> {
        lock(&self.action_error).clone()
    }

    /// Runs `action` unless another one is under way, recording its
    /// failure for the view. `on_change` is called when `busy` changes.
    pub fn act(
        &self,
        what: &'static str,
        on_change: &dyn Fn(),
        action: impl FnOnce(&Vm) -> Result<(), String>,
    ) -> Result<(), String> {
        {
            let mut busy = lock(&self.busy);
            if let Some(other) = *busy {
                return Err(format!("The VM is already {other}; wait for it to finish."));
            }
            *busy = Some(what);
            *lock(&self.action_error) = None;
        }
        on_change();
        let result = action(self);
        *lock(&self.busy) = None;
        if let Err(err) = &result {
            *lock(&self.action_error) = Some(err.clone());
        }
        on_change();
        result
    }

    /// Boots the VM with the bundled kernel and initrd and waits until SSH
    /// is ready (blocking).
    pub fn start(&self) -> Result<(), String> {
        let state = self.state_dir();
        let key = hyperos_ssh::keys::init(&state.keys_dir(), false)
            .map_err(|e| format!("Could not create your SSH key: {e}"))?;
        let mut launcher = SelfExec::current(state.root(), hyperos_vm::state::now_ms())
            .map_err(|e| e.to_string())?;
        // Run from an AppImage, this binary lives on the AppImage's FUSE
        // mount, which its runtime unmounts once the app quits: the
        // supervisor, which outlives the app, is started through the
        // AppImage file instead, so that it runs from a mount of its own
        // that lasts as long as it does. AppRun passes the arguments on
        // unchanged and starts it in usr/lib, as it started the app, so
        // even a relative path names the same file in both. (Extracted
        // instead, `--appimage-extract-and-run` on a host without FUSE, the
        // binary is a plain file that keeps running once it is deleted.)
        let on_mount = launcher.exe.ancestors().any(|dir| {
            dir.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".mount_"))
        });
        if let Some(appimage) = std::env::var_os("APPIMAGE")
            .map(PathBuf::from)
            .filter(|p| on_mount && p.is_file())
        {
            launcher.exe = appimage;
        }
        let request = BootRequest {
            name: self.name.clone(),
            kernel: self.image_dir.join("kernel"),
            initrd: self.image_dir.join("initrd.gz"),
            authorized_keys: vec![key.key.public_openssh()],
            timeout: BOOT_TIMEOUT,
            ..BootRequest::default()
        };
        self.manager
            .boot(request, &launcher)
            .map(drop)
            .map_err(|e| first_line(&e.to_string()))
    }

    /// Powers the VM off gracefully, killing it after a timeout (blocking).
    pub fn stop(&self) -> Result<(), String> {
        self.manager
            .halt(&self.name, HALT_TIMEOUT)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Where to log in, with the pinned host key, and the user's key.
    pub fn login(&self) -> Result<(Endpoint, UserKey), String> {
        let spec = self.manager.spec(&self.name).map_err(|e| e.to_string())?;
        let status = self.status();
        if status.phase != Phase::Running {
            return Err(format!(
                "The VM is {}; start it first (Start button or tray menu).",
                status.phase
            ));
        }
        let host_key = status
            .record
            .as_ref()
            .and_then(|r| r.host_key.clone())
            .ok_or("The guest reported no SSH host key; restart the VM.")?;
        let (host, port) = spec
            .ssh_target(status.ip())
            .ok_or("The VM has no SSH address yet.")?;
        let key = hyperos_ssh::keys::load(&self.state_dir().keys_dir())
            .map_err(|e| format!("Could not load your SSH key: {e}"))?;
        Ok((
            Endpoint {
                host,
                port,
                user: "root".into(),
                host_key,
            },
            key,
        ))
    }

    pub fn ssh_timeout(&self) -> Duration {
        SSH_TIMEOUT
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The first line of a core error: the console tail that follows it
/// belongs in the logs, not in the window's one-line error.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}

/// Where the kernel and initrd.gz are: `$HYPEROS_IMAGE_DIR`, else the
/// app's bundled resources, else (a development build run from the source
/// tree) `image/out`.
pub fn image_dir(resource_dir: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = std::env::var_os("HYPEROS_IMAGE_DIR").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    if let Some(dir) = resource_dir.filter(|d| d.join("kernel").is_file()) {
        return dir;
    }
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/out");
    if tree.join("kernel").is_file() {
        return tree;
    }
    PathBuf::from("image/out")
}
