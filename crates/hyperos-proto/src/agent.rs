//! Messages of the agent channel.
//!
//! One JSON object per line, in UTF-8, over the virtio-serial port
//! [`AGENT_PORT_NAME`](crate::AGENT_PORT_NAME). A guest boot produces, in order:
//!
//! ```text
//! started ─▶ lease ─▶ ready ─▶ (lease …) ─▶ stopping
//! ```
//!
//! `lease` repeats on every renewal. The host treats the VM as *running* from
//! `ready` on: by then dropbear listens and its host key is known, so the host
//! can pin it. Unknown events are skipped, so a newer guest can talk to an
//! older host.

use serde::{Deserialize, Serialize};

/// Longest line either side accepts, in bytes.
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// What the guest tells the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GuestEvent {
    /// PID 1 runs.
    Started {
        /// Version of `hyperos-init`.
        version: String,
        /// Time since the kernel started, from `/proc/uptime`.
        uptime_ms: u64,
    },
    /// A DHCP lease was bound or renewed.
    Lease(Lease),
    /// SSH accepts logins with the authorised keys.
    Ready {
        /// The SSH host public key, in OpenSSH form (`ssh-ed25519 AAAA…`).
        host_key: String,
        /// Time since the kernel started.
        uptime_ms: u64,
        /// Memory in use (MemTotal − MemAvailable), in KiB.
        mem_used_kib: u64,
        /// Total memory seen by the guest, in KiB.
        mem_total_kib: u64,
    },
    /// The guest is shutting down.
    Stopping {
        /// Why: "poweroff", "acpi", "signal", "reboot".
        reason: String,
    },
    /// Something went wrong that the host should show the user.
    Error { message: String },
}

/// A DHCP lease as the guest's client bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub interface: String,
    pub ip: String,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Lease time granted by the server, in seconds.
    pub lease_secs: u64,
}

/// What the host asks of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum HostCommand {
    /// Stop services, sync, unmount and power off.
    Poweroff,
}

/// Encodes a message as one line, newline included.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Every message type here serialises infallibly (no maps with non-string keys).
    let mut line = serde_json::to_vec(message).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Decodes one line (without its newline). `None` for an unknown or
/// malformed message, which the reader skips.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Option<T> {
    if line.len() > MAX_LINE_LEN {
        return None;
    }
    serde_json::from_slice(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_single_lines() {
        let events = [
            GuestEvent::Started {
                version: "0.1.0".into(),
                uptime_ms: 812,
            },
            GuestEvent::Lease(Lease {
                interface: "eth0".into(),
                ip: "10.0.2.15".into(),
                prefix_len: 24,
                router: Some("10.0.2.2".into()),
                dns: vec!["10.0.2.3".into()],
                lease_secs: 86400,
            }),
            GuestEvent::Ready {
                host_key: "ssh-ed25519 AAAA x".into(),
                uptime_ms: 1500,
                mem_used_kib: 20_000,
                mem_total_kib: 500_000,
            },
            GuestEvent::Stopping {
                reason: "acpi".into(),
            },
        ];
        for event in events {
            let line = encode(&event);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let back: GuestEvent = decode(&line[..line.len() - 1]).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn unknown_and_oversized_lines_are_skipped() {
        assert_eq!(decode::<GuestEvent>(br#"{"event":"future"}"#), None);
        assert_eq!(decode::<GuestEvent>(b"garbage"), None);
        let big = vec![b'x'; MAX_LINE_LEN + 1];
        assert_eq!(decode::<GuestEvent>(&big), None);
        assert_eq!(
            decode::<HostCommand>(br#"{"command":"poweroff"}"#),
            Some(HostCommand::Poweroff)
        );
    }
}
