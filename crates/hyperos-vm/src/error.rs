//! Errors of the VM core. Each message says what failed and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "no instance named {0:?}: `hyperos ps` lists them, `hyperos boot --name {0}` creates it"
    )]
    UnknownInstance(String),
    #[error("instance {0:?} is already running: `hyperos halt {0}` stops it")]
    AlreadyRunning(String),
    #[error("instance {0:?} is not running: `hyperos boot --name {0}` starts it")]
    NotRunning(String),
    #[error("invalid instance name {0:?}: use 1-32 letters, digits, '-' or '_'")]
    InvalidName(String),
    #[error(
        "{program} was not found: install QEMU (Debian/Ubuntu: `apt-get install qemu-system-x86`, macOS: `brew install qemu`)"
    )]
    QemuMissing { program: String },
    #[error(
        "no HyperOS image at {0}: run `hyperos image build` first, or pass --kernel and --initrd"
    )]
    NoImage(PathBuf),
    #[error("{path} is not a Linux kernel (bzImage): {why}; rebuild it with `hyperos image build`")]
    BadKernel { path: PathBuf, why: String },
    #[error("{path} is not an initrd (gzip or cpio): rebuild it with `hyperos image build`")]
    BadInitrd { path: PathBuf },
    #[error(
        "port {0} on 127.0.0.1 is already in use: pick another with --ssh-port, or omit it for a free one"
    )]
    PortInUse(u16),
    #[error("invalid memory size {0:?}: give MiB (512) or a unit (512M, 1G), at least 128M")]
    BadMemory(String),
    #[error(
        "the VM did not become ready within {secs} s; it was stopped. Last lines of its console:\n{console}"
    )]
    BootTimeout { secs: u64, console: String },
    #[error("the VM failed to boot: {reason}. Last lines of its console:\n{console}")]
    BootFailed { reason: String, console: String },
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({source}); `hyperos rm` the instance if it persists")]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("watching {path} for changes failed: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("QEMU's monitor at {path} did not answer: {why}")]
    Qmp { path: PathBuf, why: String },
    #[error("{0}")]
    Unsupported(String),
}

impl VmError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> VmError {
        let path = path.into();
        move |source| VmError::Io {
            action,
            path,
            source,
        }
    }
}
