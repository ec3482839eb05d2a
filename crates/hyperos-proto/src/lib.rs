//! The contract between the HyperOS host and its guest.
//!
//! Both sides of a HyperOS VM link this crate, so what one writes the other
//! reads with the same types. It does no I/O: the host's VM core and the
//! guest's PID 1 (`hyperos-init`) move the bytes.
//!
//! Two channels cross the VM boundary:
//!
//! * **Configuration, host → guest, once at boot**: a [`GuestConfig`] as JSON
//!   in the QEMU fw_cfg entry [`FW_CFG_NAME`]. For compatibility with the
//!   2016 design the guest also reads `host=` and `sshkey="…"` from the kernel
//!   command line ([`cmdline`]); fw_cfg wins where both are given.
//! * **The agent channel, both ways, for the VM's lifetime**: newline-delimited
//!   JSON over the virtio-serial port named [`AGENT_PORT_NAME`]. The guest sends
//!   [`GuestEvent`]s (started, lease, ready, stopping); the host sends
//!   [`HostCommand`]s (poweroff). See [`agent`].

pub mod agent;
pub mod cmdline;
pub mod config;

pub use agent::{GuestEvent, HostCommand, Lease};
pub use config::{ConfigError, GuestConfig};

/// Name of the fw_cfg entry that carries the guest configuration.
///
/// QEMU requires user entries to live under `opt/`; the guest reads it from
/// `/sys/firmware/qemu_fw_cfg/by_name/opt/org.hyperos/config/raw`.
pub const FW_CFG_NAME: &str = "opt/org.hyperos/config";

/// Name of the virtio-serial port that carries the agent channel.
pub const AGENT_PORT_NAME: &str = "org.hyperos.agent";

/// Serial number of the persistent data disk (virtio-blk) the host attaches;
/// the guest formats it on first boot and mounts it at `/var/lib/hyperos`.
pub const DATA_DISK_SERIAL: &str = "hyperos-data";

/// Version of the agent protocol and the configuration format.
pub const PROTOCOL_VERSION: u32 = 1;
