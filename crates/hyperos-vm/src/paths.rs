//! Where HyperOS keeps its state.
//!
//! ```text
//! <state dir>/                      XDG_STATE_HOME/hyperos on Linux, Application Support on macOS,
//!   keys/id_ed25519{,.pub}          %LOCALAPPDATA% on Windows; --state-dir or HYPEROS_STATE_DIR
//!   instances/<name>/
//!     instance.json                 how to boot it (written by `boot`)
//!     state.json                    phase, pids, host key, timings (written by the supervisor)
//!     lease.json                    the guest's DHCP lease (written by the supervisor)
//!     guest-config.json             the fw_cfg payload
//!     known_hosts                   the pinned SSH host key
//!     console.log  qemu.log  supervisor.log
//!     agent.sock  qmp.sock          sockets, gone when the instance stops
//!     disk.img                      the persistent data disk (sparse)
//! ```

use std::path::{Path, PathBuf};

use crate::VmError;

/// Environment variable that overrides the state directory.
pub const STATE_DIR_ENV: &str = "HYPEROS_STATE_DIR";

/// The root of HyperOS's per-user state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Uses `explicit` if given, else `$HYPEROS_STATE_DIR`, else the
    /// platform's per-user state location.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<StateDir, VmError> {
        if let Some(root) = explicit {
            return Ok(StateDir { root });
        }
        if let Some(root) = std::env::var_os(STATE_DIR_ENV).filter(|v| !v.is_empty()) {
            return Ok(StateDir { root: root.into() });
        }
        let dirs =
            directories::ProjectDirs::from("org", "HyperOS", "hyperos").ok_or_else(|| {
                VmError::Unsupported(format!(
                    "no home directory found: set {STATE_DIR_ENV} or pass --state-dir"
                ))
            })?;
        let root = dirs
            .state_dir()
            .unwrap_or_else(|| dirs.data_local_dir())
            .to_path_buf();
        Ok(StateDir { root })
    }

    pub fn at(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    pub fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    pub fn instance(&self, name: &str) -> InstanceDir {
        InstanceDir {
            dir: self.instances_dir().join(name),
        }
    }
}

/// The files of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDir {
    dir: PathBuf,
}

impl InstanceDir {
    pub fn path(&self) -> &Path {
        &self.dir
    }
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    pub fn spec(&self) -> PathBuf {
        self.dir.join("instance.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn lease(&self) -> PathBuf {
        self.dir.join("lease.json")
    }
    pub fn guest_config(&self) -> PathBuf {
        self.dir.join("guest-config.json")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.img")
    }
    pub fn exists(&self) -> bool {
        self.spec().exists()
    }
}

/// The host name under which an instance's SSH host key is pinned in its
/// `known_hosts` (OpenSSH's `HostKeyAlias`).
pub fn known_hosts_alias(name: &str) -> String {
    format!("hyperos-{name}")
}

/// Writes `bytes` to `path` atomically: a reader sees the old or the new
/// content, never a mix, and a watcher sees one rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VmError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(VmError::io("create", &tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(VmError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(VmError::io("rename into place", path))
}

/// Creates a directory (and parents) readable only by the user.
pub fn create_private_dir(path: &Path) -> Result<(), VmError> {
    std::fs::create_dir_all(path).map_err(VmError::io("create directory", path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(VmError::io("set permissions of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins() {
        let dir = StateDir::resolve(Some("/x/y".into())).unwrap();
        assert_eq!(dir.root(), Path::new("/x/y"));
        assert_eq!(
            dir.instance("a").state(),
            Path::new("/x/y/instances/a/state.json")
        );
        assert_eq!(dir.instance("a").name(), "a");
    }

    #[test]
    fn atomic_write_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
