//! Peer tickets: what `--peer TICKET` takes. A ticket names a node (its
//! iroh endpoint id) and the direct addresses it can be reached at, so a
//! reader needs no relay and no address lookup.
//!
//! ```text
//! text:  "hyperospeer" ‖ base32 (RFC 4648, lowercase, no padding) of
//! bytes: format = 1 ‖ endpoint id (32) ‖ count N ≤ 16 ‖ N × address
//! address: 4 ‖ IPv4 (4) ‖ port (u16 LE)   or   6 ‖ IPv6 (16) ‖ port (u16 LE)
//! ```
//!
//! Decoding checks the text length before decoding (at most
//! [`MAX_TICKET_LEN`] characters) and accepts exactly what encoding writes;
//! the endpoint id must be a valid ed25519 point.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use iroh::{EndpointAddr, EndpointId};

/// The text every ticket starts with.
pub const TICKET_PREFIX: &str = "hyperospeer";
/// Most direct addresses in one ticket.
pub const MAX_TICKET_ADDRS: usize = 16;
/// Longest ticket text: the prefix and the base32 of the largest encoding.
pub const MAX_TICKET_LEN: usize = TICKET_PREFIX.len() + (MAX_BYTES * 8).div_ceil(5);

const FORMAT: u8 = 1;
const MAX_BYTES: usize = 1 + 32 + 1 + MAX_TICKET_ADDRS * (1 + 16 + 2);

/// Errors reading a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The text does not start with the prefix.
    #[error(
        "a peer ticket starts with \"{TICKET_PREFIX}\"; copy the whole ticket the peer printed"
    )]
    Prefix,
    /// The text is longer than any ticket.
    #[error(
        "the peer ticket is {0} characters, longer than any ticket; copy exactly the ticket the peer printed"
    )]
    TooLong(usize),
    /// The text is not base32.
    #[error("the peer ticket is damaged (not base32 after the prefix); copy it again")]
    Base32,
    /// The bytes are not a ticket.
    #[error("the peer ticket is damaged ({0}); copy it again")]
    Malformed(&'static str),
    /// A ticket needs at least one address (relays are not used).
    #[error(
        "the peer ticket has no address to reach the peer at; ask the peer for a ticket made after it bound its socket"
    )]
    NoAddress,
}

/// A node and the direct addresses it listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerTicket {
    /// The node's iroh endpoint id.
    pub id: EndpointId,
    /// Its direct UDP addresses.
    pub addrs: Vec<SocketAddr>,
}

impl PeerTicket {
    /// A ticket for `addr`'s id and IP addresses (relay addresses are left
    /// out; at most [`MAX_TICKET_ADDRS`] are kept).
    pub fn from_endpoint_addr(addr: &EndpointAddr) -> Self {
        Self {
            id: addr.id,
            addrs: addr.ip_addrs().copied().take(MAX_TICKET_ADDRS).collect(),
        }
    }

    /// The same node at other direct addresses (at most [`MAX_TICKET_ADDRS`]
    /// are kept), for a reader that reaches the node through a NAT or port
    /// forward: a guest under QEMU user networking reaches the host's
    /// `127.0.0.1:PORT` at `10.0.2.2:PORT`.
    pub fn with_addrs(&self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            id: self.id,
            addrs: addrs.into_iter().take(MAX_TICKET_ADDRS).collect(),
        }
    }

    /// The iroh address to connect to.
    pub fn endpoint_addr(&self) -> EndpointAddr {
        self.addrs
            .iter()
            .fold(EndpointAddr::new(self.id), |a, ip| a.with_ip_addr(*ip))
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(self.id.as_bytes());
        let addrs = &self.addrs[..self.addrs.len().min(MAX_TICKET_ADDRS)];
        out.push(addrs.len() as u8);
        for addr in addrs {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&addr.port().to_le_bytes());
        }
        out
    }

    fn from_bytes(mut bytes: &[u8]) -> Result<Self, TicketError> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], TicketError> {
            if bytes.len() < n {
                return Err(TicketError::Malformed("it ends early"));
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Ok(head)
        }
        if take(&mut bytes, 1)?[0] != FORMAT {
            return Err(TicketError::Malformed("unknown format version"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(take(&mut bytes, 32)?);
        let id = EndpointId::from_bytes(&id)
            .map_err(|_| TicketError::Malformed("the node id is not a valid key"))?;
        let count = usize::from(take(&mut bytes, 1)?[0]);
        if count > MAX_TICKET_ADDRS {
            return Err(TicketError::Malformed("too many addresses"));
        }
        if count == 0 {
            return Err(TicketError::NoAddress);
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match take(&mut bytes, 1)?[0] {
                4 => {
                    let mut o = [0u8; 4];
                    o.copy_from_slice(take(&mut bytes, 4)?);
                    IpAddr::V4(Ipv4Addr::from(o))
                }
                6 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(take(&mut bytes, 16)?);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                _ => return Err(TicketError::Malformed("unknown address family")),
            };
            let mut port = [0u8; 2];
            port.copy_from_slice(take(&mut bytes, 2)?);
            addrs.push(SocketAddr::new(ip, u16::from_le_bytes(port)));
        }
        if !bytes.is_empty() {
            return Err(TicketError::Malformed("bytes follow its end"));
        }
        Ok(Self { id, addrs })
    }
}

impl fmt::Display for PeerTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TICKET_PREFIX)?;
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.to_bytes())
                .to_lowercase(),
        )
    }
}

impl FromStr for PeerTicket {
    type Err = TicketError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong(text.len()));
        }
        let body = text
            .strip_prefix(TICKET_PREFIX)
            .ok_or(TicketError::Prefix)?;
        // Lowercase only: one ticket has one spelling.
        if body.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(TicketError::Base32);
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::Base32)?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> PeerTicket {
        PeerTicket {
            id: iroh::SecretKey::from_bytes(&[5; 32]).public(),
            addrs: vec![
                "127.0.0.1:4242".parse().unwrap(),
                "[::1]:7".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn round_trip() {
        let t = ticket();
        let text = t.to_string();
        assert!(text.starts_with(TICKET_PREFIX));
        assert!(text.len() <= MAX_TICKET_LEN);
        assert_eq!(text.parse::<PeerTicket>().unwrap(), t);
        let addr = t.endpoint_addr();
        assert_eq!(PeerTicket::from_endpoint_addr(&addr), t);
    }

    #[test]
    fn with_addrs_keeps_the_node_and_replaces_the_addresses() {
        let t = ticket();
        let guest: SocketAddr = "10.0.2.2:4242".parse().unwrap();
        let moved = t.with_addrs([guest]);
        assert_eq!(moved.id, t.id);
        assert_eq!(moved.addrs, [guest]);
        let text = moved.to_string();
        assert_ne!(text, t.to_string());
        assert_eq!(text.parse::<PeerTicket>().unwrap(), moved);

        let many = (0..40u16).map(|port| SocketAddr::from(([10, 0, 2, 2], port)));
        let capped = t.with_addrs(many);
        assert_eq!(capped.addrs.len(), MAX_TICKET_ADDRS);
        assert_eq!(capped.to_string().parse::<PeerTicket>().unwrap(), capped);
        // No address is no ticket: it does not parse back.
        assert_eq!(
            t.with_addrs([]).to_string().parse::<PeerTicket>(),
            Err(TicketError::NoAddress)
        );
    }

    #[test]
    fn refuses_damage_without_panicking() {
        let text = ticket().to_string();
        for cut in 0..text.len() {
            assert!(text[..cut].parse::<PeerTicket>().is_err(), "cut {cut}");
        }
        assert_eq!(
            "x".repeat(MAX_TICKET_LEN + 1).parse::<PeerTicket>(),
            Err(TicketError::TooLong(MAX_TICKET_LEN + 1))
        );
        assert_eq!(
            text.to_uppercase().parse::<PeerTicket>(),
            Err(TicketError::Prefix)
        );
        let mut bytes = ticket().to_bytes();
        bytes.push(0);
        assert!(PeerTicket::from_bytes(&bytes).is_err());
    }
}
