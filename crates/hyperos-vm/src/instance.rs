//! How an instance is booted: its persisted specification.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::VmError;

/// Default guest memory, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// Default number of virtual CPUs.
pub const DEFAULT_CPUS: u32 = 1;
/// Default size of the sparse data disk, in bytes.
pub const DEFAULT_DISK_BYTES: u64 = 8 << 30;
/// Default name of an instance.
pub const DEFAULT_NAME: &str = "default";

/// How the guest reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// QEMU user-mode networking: rootless; the guest's SSH port is
    /// forwarded to a localhost port.
    #[default]
    User,
    /// The guest sits on a host bridge whose DHCP server writes a lease file;
    /// the guest's IP is read from that file by hostname.
    Bridged,
}

impl std::str::FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(NetMode::User),
            "bridged" => Ok(NetMode::Bridged),
            other => Err(format!(
                "unknown network mode {other:?}: use user or bridged"
            )),
        }
    }
}

/// Everything needed to boot an instance, as written to `instance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    pub name: String,
    pub hostname: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub net: NetMode,
    /// Localhost port forwarded to the guest's SSH (user networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// Host bridge (bridged networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// DHCP lease file to watch (bridged networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_file: Option<PathBuf>,
    /// The guest NIC's MAC address.
    pub mac: String,
    /// OpenSSH public keys allowed to log in as root.
    pub authorized_keys: Vec<String>,
    /// Put the configuration on the kernel command line (`host=… sshkey="…"`)
    /// as the 2016 design did, instead of fw_cfg.
    #[serde(default)]
    pub legacy_cmdline: bool,
    /// Size of the sparse data disk; 0 for none.
    #[serde(default)]
    pub disk_bytes: u64,
    /// Seconds to wait for readiness.
    pub boot_timeout_secs: u64,
}

impl InstanceSpec {
    /// Host and port of the guest's SSH server: the forwarded localhost
    /// port (user networking), or port 22 at the guest's IP (bridged, once
    /// known).
    pub fn ssh_target(&self, ip: Option<&str>) -> Option<(String, u16)> {
        match self.net {
            NetMode::User => self.ssh_port.map(|port| ("127.0.0.1".to_owned(), port)),
            NetMode::Bridged => ip.map(|ip| (ip.to_owned(), 22)),
        }
    }
}

/// Checks an instance name: it becomes a directory name.
pub fn validate_name(name: &str) -> Result<(), VmError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidName(name.to_owned()))
    }
}

/// Parses a memory size: plain MiB (`512`) or with a unit (`512M`, `1G`, `1.5G`).
pub fn parse_memory(text: &str) -> Result<u32, VmError> {
    let bad = || VmError::BadMemory(text.to_owned());
    let t = text.trim();
    let (number, scale) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let scale = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "m" => 1.0,
                "g" => 1024.0,
                _ => return Err(bad()),
            };
            (&t[..i], scale)
        }
        None => (t, 1.0),
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    let mib = value * scale;
    if !(128.0..=(1u64 << 20) as f64).contains(&mib) {
        return Err(bad());
    }
    Ok(mib as u32)
}

/// A locally administered unicast MAC in QEMU's 52:54:00 range.
pub fn random_mac() -> String {
    let bytes: [u8; 3] = rand::random();
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        bytes[0], bytes[1], bytes[2]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512").unwrap(), 512);
        assert_eq!(parse_memory("512M").unwrap(), 512);
        assert_eq!(parse_memory("1G").unwrap(), 1024);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 1536);
        for bad in ["", "12", "abc", "1T", "-5", "1e9"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        validate_name("default").unwrap();
        validate_name("web_2").unwrap();
        for bad in ["", "../x", "a b", "-x", &"a".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_is_local_unicast() {
        let mac = random_mac();
        assert!(mac.starts_with("52:54:00:"));
        assert_eq!(mac.len(), 17);
    }

    #[test]
    fn net_modes_parse() {
        assert_eq!("user".parse::<NetMode>().unwrap(), NetMode::User);
        assert_eq!("bridged".parse::<NetMode>().unwrap(), NetMode::Bridged);
        assert!("tap".parse::<NetMode>().is_err());
    }
}
