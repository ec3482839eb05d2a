//! DHCP server lease files, read to find a bridged guest's address by its
//! hostname, as the 2016 CLI did with macOS's `/var/db/dhcpd_leases`.
//!
//! Two formats are understood:
//!
//! * dnsmasq (Linux): one lease a line,
//!   `<expiry> <mac> <ip> <hostname|*> <client-id|*>`, expiry 0 = infinite.
//! * macOS bootpd (`/var/db/dhcpd_leases`, used by vmnet): blocks of
//!   `key=value` lines between `{` and `}`, with `name`, `ip_address`,
//!   `hw_address` and `lease` (expiry, hex seconds).

use std::path::PathBuf;

/// One lease from a server's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLease {
    pub hostname: String,
    pub ip: String,
    pub mac: Option<String>,
    /// Expiry, seconds since the Unix epoch; `None` for infinite.
    pub expires: Option<u64>,
}

/// The lease file a platform's DHCP server writes.
pub fn default_lease_file() -> PathBuf {
    if cfg!(target_os = "macos") {
        PathBuf::from("/var/db/dhcpd_leases")
    } else {
        PathBuf::from("/var/lib/misc/dnsmasq.leases")
    }
}

/// Parses a lease file in either format (told apart by its first
/// non-blank character).
pub fn parse(text: &str) -> Vec<ServerLease> {
    if text.trim_start().starts_with('{') {
        parse_bootpd(text)
    } else {
        parse_dnsmasq(text)
    }
}

/// Parses dnsmasq's lease file; malformed lines are skipped.
pub fn parse_dnsmasq(text: &str) -> Vec<ServerLease> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let expiry: u64 = f.next()?.parse().ok()?;
            let mac = f.next()?.to_owned();
            let ip = f.next()?.to_owned();
            let hostname = f.next()?.to_owned();
            if hostname == "*" || ip.parse::<std::net::IpAddr>().is_err() {
                return None;
            }
            Some(ServerLease {
                hostname,
                ip,
                mac: Some(mac),
                expires: (expiry != 0).then_some(expiry),
            })
        })
        .collect()
}

/// Parses macOS bootpd's `dhcpd_leases`; incomplete blocks are skipped.
pub fn parse_bootpd(text: &str) -> Vec<ServerLease> {
    let mut leases = Vec::new();
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for line in text.lines().map(str::trim) {
        match line {
            "{" => fields.clear(),
            "}" => {
                let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
                if let (Some(name), Some(ip)) = (get("name"), get("ip_address")) {
                    leases.push(ServerLease {
                        hostname: name.to_owned(),
                        ip: ip.to_owned(),
                        // "1,52:54:0:12:34:56": hardware type, then the address.
                        mac: get("hw_address")
                            .map(|hw| hw.split_once(',').map_or(hw, |(_, m)| m).to_owned()),
                        expires: get("lease")
                            .and_then(|l| u64::from_str_radix(l.trim_start_matches("0x"), 16).ok()),
                    });
                }
                fields.clear();
            }
            _ => {
                if let Some(kv) = line.split_once('=') {
                    fields.push(kv);
                }
            }
        }
    }
    leases
}

/// The current lease for `hostname`: the one that expires last, ignoring
/// expired ones (`now` in seconds since the Unix epoch).
pub fn find(leases: &[ServerLease], hostname: &str, now: u64) -> Option<ServerLease> {
    leases
        .iter()
        .filter(|l| l.hostname.eq_ignore_ascii_case(hostname))
        .filter(|l| l.expires.is_none_or(|e| e > now))
        .max_by_key(|l| l.expires.unwrap_or(u64::MAX))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNSMASQ: &str = "\
1764000000 52:54:00:aa:bb:cc 10.77.0.23 merry-otter 01:52:54:00:aa:bb:cc
1764000500 52:54:00:aa:bb:dd 10.77.0.24 * *
0 52:54:00:aa:bb:ee 10.77.0.25 forever-cat *
garbage line
1764000900 52:54:00:aa:bb:cc 10.77.0.30 merry-otter *
";

    const BOOTPD: &str = "\
{
\tname=tabby-tom
\tip_address=192.168.64.2
\thw_address=1,52:54:0:12:34:56
\tidentifier=1,52:54:0:12:34:56
\tlease=0x692a1b00
}
{
\tname=merry-otter
\tip_address=192.168.64.3
\thw_address=1,52:54:0:12:34:57
\tlease=0x692a1c00
}
{
\tname=broken
}
";

    #[test]
    fn dnsmasq_format() {
        let leases = parse(DNSMASQ);
        assert_eq!(leases.len(), 3);
        let latest = find(&leases, "merry-otter", 1_700_000_000).unwrap();
        assert_eq!(latest.ip, "10.77.0.30");
        assert_eq!(
            find(&leases, "forever-cat", u64::MAX - 1).unwrap().expires,
            None
        );
        assert_eq!(find(&leases, "merry-otter", 1_764_001_000), None, "expired");
        assert_eq!(find(&leases, "nobody", 0), None);
    }

    #[test]
    fn macos_bootpd_format() {
        let leases = parse(BOOTPD);
        assert_eq!(leases.len(), 2);
        let tom = find(&leases, "tabby-tom", 0).unwrap();
        assert_eq!(tom.ip, "192.168.64.2");
        assert_eq!(tom.mac.as_deref(), Some("52:54:0:12:34:56"));
        assert_eq!(tom.expires, Some(0x692a1b00));
        assert_eq!(find(&leases, "MERRY-OTTER", 0).unwrap().ip, "192.168.64.3");
    }

    #[test]
    fn empty_files() {
        assert!(parse("").is_empty());
        assert!(parse("\n\n").is_empty());
    }
}
