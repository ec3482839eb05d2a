//! Networking: the interfaces, the DHCP client, and the lease it reports.
//!
//! busybox `udhcpc` does DHCP; it runs this very binary as its script (see
//! [`crate::dhcp_hook`]), which configures the interface, writes the lease
//! to [`LEASE_FILE`] and sends PID 1 a `SIGHUP`.

use std::net::Ipv4Addr;
use std::process::Command;

use hyperos_proto::Lease;

use crate::error::{Context, Error, Result};
use crate::process::{command, service_command};

/// The lease as the hook last wrote it (`hyperos_proto::Lease` JSON).
pub const LEASE_FILE: &str = "/run/hyperos/lease.json";
/// The hook: a symlink to `/init`.
pub const DHCP_HOOK: &str = "/usr/libexec/hyperos/dhcp-hook";

/// The interface to configure: the first one in name order that isn't `lo`.
pub fn pick_interface(mut names: Vec<String>) -> Option<String> {
    names.sort();
    names.into_iter().find(|name| name != "lo")
}

/// The network interface, if one has appeared yet.
pub fn find_interface() -> Option<String> {
    let names = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    pick_interface(names)
}

/// Runs busybox `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<()> {
    let status = command("ip")
        .args(args)
        .status()
        .context(|| "could not run ip".to_owned())?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "ip {} failed ({status})",
            args.join(" ")
        )))
    }
}

/// The supervised DHCP client for `interface`, sending `hostname`.
pub fn udhcpc(interface: &str, hostname: &str) -> Command {
    let mut udhcpc = service_command("udhcpc");
    udhcpc.args([
        "-f", // foreground, so PID 1 supervises it
        "-i",
        interface,
        "-s",
        DHCP_HOOK,
        "-x",
        &format!("hostname:{hostname}"),
        "-t",
        "20",
        "-T",
        "1",
        "-A",
        "3", // retry soon after a failed round
    ]);
    udhcpc
}

/// The prefix length of a dotted netmask, `None` if not contiguous.
pub fn prefix_len(mask: &str) -> Option<u8> {
    let bits = u32::from(mask.trim().parse::<Ipv4Addr>().ok()?);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// The lease udhcpc describes in its script environment (`interface`, `ip`,
/// `subnet` or `mask`, `router`, `dns`, `lease`).
pub fn lease_from_env(var: impl Fn(&str) -> Option<String>) -> std::result::Result<Lease, String> {
    let required = |name: &str| var(name).ok_or_else(|| format!("udhcpc gave no {name}"));
    let interface = required("interface")?;
    let ip = required("ip")?;
    ip.parse::<Ipv4Addr>()
        .map_err(|_| format!("udhcpc gave an invalid ip {ip:?}"))?;
    let prefix_len = match (var("subnet"), var("mask")) {
        (Some(subnet), _) => {
            prefix_len(&subnet).ok_or_else(|| format!("invalid subnet mask {subnet:?}"))?
        }
        (None, Some(mask)) => mask
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|len| *len <= 32)
            .ok_or_else(|| format!("invalid prefix length {mask:?}"))?,
        // What a DHCP server that sends no mask means (RFC 2131 leaves it open).
        (None, None) => 32,
    };
    let list = |name: &str| -> Vec<String> {
        var(name)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    Ok(Lease {
        interface,
        ip,
        prefix_len,
        router: list("router").into_iter().next(),
        dns: list("dns"),
        lease_secs: var("lease")
            .and_then(|secs| secs.trim().parse().ok())
            .unwrap_or(0),
    })
}

/// The lease in [`LEASE_FILE`], if there is one.
pub fn read_lease() -> Option<Lease> {
    let bytes = std::fs::read(LEASE_FILE).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `/etc/resolv.conf` for the lease.
pub fn resolv_conf(lease: &Lease, domain: Option<&str>) -> String {
    let mut text = String::new();
    if let Some(domain) = domain.filter(|d| !d.is_empty()) {
        text.push_str(&format!("search {domain}\n"));
    }
    for server in &lease.dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn masks_to_prefix_lengths() {
        assert_eq!(prefix_len("255.255.255.0"), Some(24));
        assert_eq!(prefix_len("255.255.255.255"), Some(32));
        assert_eq!(prefix_len("0.0.0.0"), Some(0));
        assert_eq!(prefix_len("255.255.240.0"), Some(20));
        assert_eq!(prefix_len("255.0.255.0"), None);
        assert_eq!(prefix_len("0.255.255.255"), None);
        assert_eq!(prefix_len("nonsense"), None);
    }

    #[test]
    fn picks_the_first_interface_that_is_not_loopback() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            pick_interface(names(&["lo", "eth1", "eth0"])).as_deref(),
            Some("eth0")
        );
        assert_eq!(pick_interface(names(&["lo"])), None);
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn lease_from_udhcpc_environment() {
        let lease = lease_from_env(env(&[
            ("interface", "eth0"),
            ("ip", "10.0.2.15"),
            ("subnet", "255.255.255.0"),
            ("router", "10.0.2.2 10.0.2.1"),
            ("dns", "10.0.2.3  1.1.1.1"),
            ("lease", "86400"),
        ]))
        .unwrap();
        assert_eq!(
            lease,
            Lease {
                interface: "eth0".into(),
                ip: "10.0.2.15".into(),
                prefix_len: 24,
                router: Some("10.0.2.2".into()),
                dns: vec!["10.0.2.3".into(), "1.1.1.1".into()],
                lease_secs: 86400,
            }
        );
        assert_eq!(
            resolv_conf(&lease, Some("lan")),
            "search lan\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn lease_with_mask_only_or_missing_fields() {
        let lease = lease_from_env(env(&[
            ("interface", "eth0"),
            ("ip", "192.168.1.9"),
            ("mask", "16"),
        ]))
        .unwrap();
        assert_eq!(lease.prefix_len, 16);
        assert_eq!(lease.router, None);
        assert!(lease.dns.is_empty());
        assert_eq!(lease.lease_secs, 0);
        assert!(lease_from_env(env(&[("interface", "eth0")])).is_err());
        assert!(lease_from_env(env(&[("interface", "eth0"), ("ip", "x")])).is_err());
        assert!(
            lease_from_env(env(&[
                ("interface", "e"),
                ("ip", "1.2.3.4"),
                ("subnet", "255.0.255.0")
            ]))
            .is_err()
        );
    }
}
