//! Live boot containers: `hyperos run`.
//!
//! A container runs from a `dat://` archive, mounted lazily (only what it
//! reads is fetched, verified before use), or from a local image, directory
//! or OCI archive. A writable overlay on top keeps what it changes per
//! container name under the state directory (`--volatile` discards it), and
//! systemd-nspawn runs it. On macOS and Windows, or with `--vm`, the same
//! happens inside a HyperOS VM, whose guest carries `hyperos` itself.
//!
//! * [`args`]: the command line (two forms: a container, or a command in
//!   the VM; `--sn-X` options for nspawn).
//! * [`store`]: containers' directories, records, cleanup after a crash.
//! * [`nspawn`]: the systemd-nspawn command line (least privilege).
//! * [`host`]: the run itself on a Linux host (mounts, nspawn, signals).
//! * [`guest`]: the `hyperos run` to send to a VM, and its peers.
//! * [`share`]: publishing an image and recording that this process
//!   serves it (`hyperos share`, the desktop app's dropped files).

pub mod args;
pub mod guest;
#[cfg(target_os = "linux")]
pub mod host;
mod mounts;
pub mod nspawn;
pub mod share;
pub mod store;

pub use args::{Parsed, RunRequest, Source, USAGE, UsageError, parse};
pub use store::{ContainerInfo, Containers};

/// Runs a container on this host (Linux).
#[cfg(target_os = "linux")]
pub fn run_on_host(state_root: &std::path::Path, request: &RunRequest) -> anyhow::Result<i32> {
    host::run(state_root, request)
}

/// Runs a container on this host: not possible outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn run_on_host(_state_root: &std::path::Path, _request: &RunRequest) -> anyhow::Result<i32> {
    anyhow::bail!("containers run on Linux: on this system they run in the HyperOS VM (--vm)")
}

/// Whether containers run in a VM unless asked otherwise: everywhere but
/// Linux.
pub const VM_BY_DEFAULT: bool = !cfg!(target_os = "linux");

/// Stops a container running on this host (Linux).
#[cfg(target_os = "linux")]
pub fn host_stop(
    state_root: &std::path::Path,
    name: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    host::stop(state_root, name, timeout)
}

/// Stops a container running on this host: none do outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn host_stop(
    _state_root: &std::path::Path,
    name: &str,
    _timeout: std::time::Duration,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "container {name} is not running on this host: containers run in the HyperOS VM here"
    )
}
