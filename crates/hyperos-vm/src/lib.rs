//! The HyperOS VM core: instances of the HyperOS image running under QEMU.
//!
//! ```text
//!   front end (CLI, desktop app)                  supervisor process (one per instance)
//!   ─────────────────────────────                 ─────────────────────────────────────
//!   Manager::boot ── spawns ──────────────────▶  supervisor::run
//!        │                                          │ starts QEMU (child), accepts the agent
//!        │                                          │ channel, watches the DHCP lease file
//!        │                                          ▼
//!        └── watch::wait_for ◀── notify ──  <state dir>/instances/<name>/state.json, lease.json
//! ```
//!
//! Every fact about an instance lives in files in its directory ([`paths`]);
//! only its supervisor writes `state.json` and `lease.json`, always
//! atomically, and front ends learn about changes by watching the directory
//! with `notify`, never by polling the VM. A supervisor that died (host
//! crash, `kill -9`) leaves a stale pid behind: [`state::Status::read`]
//! checks liveness, so a dead instance reads as *stopped*, never as an error.

pub mod accel;
pub mod error;
pub mod instance;
pub mod launcher;
pub mod lease;
pub mod manager;
pub mod names;
pub mod paths;
pub mod qemu;
pub mod qmp;
pub mod state;
#[cfg(unix)]
pub mod supervisor;
pub mod watch;

pub use error::VmError;
pub use instance::{InstanceSpec, NetMode};
pub use manager::{BootRequest, Manager};
pub use paths::StateDir;
pub use state::{Phase, Status};
