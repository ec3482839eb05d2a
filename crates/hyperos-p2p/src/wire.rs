//! The HyperOS archive protocol: HyperOS's own small protocol over iroh, on
//! its own ALPN ([`ALPN`]), by which one node asks another for the latest
//! signed manifest it holds of an archive. Chunk data does not move here but
//! over iroh-blobs' protocol.
//!
//! One request per bidirectional QUIC stream; the client finishes its side
//! after the request, the server after the response. Integers are
//! little-endian.
//!
//! ```text
//! request  (48 bytes, exactly): "HYOSGET1" ‖ discovery topic (32) ‖ min version (u64)
//! response: "HYOSMAN1" ‖ 0                               no manifest (or none ≥ min version)
//!           "HYOSMAN1" ‖ 1 ‖ length L (u32) ‖ L bytes    a signed manifest, L ≤ MAX_SIGNED_LEN
//! ```
//!
//! The request names the archive by its discovery topic, never by its key.
//! Both decoders check the total size before parsing and accept exactly what
//! the encoders write; the response is read with a limit of
//! [`MAX_RESPONSE_LEN`] bytes, so a peer cannot make a reader allocate more.
//! Nothing in a response is trusted: the manifest still goes through
//! `SignedManifest::verify`.

use hyperos_archive::{MAX_SIGNED_LEN, SignedManifest};

/// The ALPN of the HyperOS archive protocol.
pub const ALPN: &[u8] = b"hyperos/archive/1";

/// The first bytes of a request.
pub const REQUEST_MAGIC: [u8; 8] = *b"HYOSGET1";
/// The first bytes of a response.
pub const RESPONSE_MAGIC: [u8; 8] = *b"HYOSMAN1";
/// The length of every request.
pub const REQUEST_LEN: usize = 8 + 32 + 8;
/// The longest response: a header and the largest signed manifest.
pub const MAX_RESPONSE_LEN: usize = 8 + 1 + 4 + MAX_SIGNED_LEN;

/// Errors decoding a message of the archive protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message has the wrong length.
    #[error(
        "the peer's {what} is {len} bytes where {expected} were expected; the peer does not speak hyperos/archive/1, use another peer"
    )]
    Length {
        what: &'static str,
        len: usize,
        expected: String,
    },
    /// The message does not start with the magic bytes.
    #[error("the peer's {what} does not start with the protocol's magic bytes; use another peer")]
    Magic { what: &'static str },
    /// The status byte of a response is neither 0 nor 1.
    #[error("the peer's response has the unknown status {0}; use another peer")]
    Status(u8),
    /// The manifest inside a response is not a signed manifest.
    #[error("the peer sent a damaged manifest ({0}); use another peer")]
    Manifest(#[source] hyperos_archive::ManifestError),
}

/// A request for the latest signed manifest of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestRequest {
    /// The archive, by the bytes of its discovery topic
    /// ([`hyperos_archive::DiscoveryTopic::as_bytes`]).
    pub topic: [u8; 32],
    /// Answer only with a version at least this (0: any).
    pub min_version: u64,
}

impl ManifestRequest {
    /// The 48-byte encoding.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[..8].copy_from_slice(&REQUEST_MAGIC);
        out[8..40].copy_from_slice(&self.topic);
        out[40..].copy_from_slice(&self.min_version.to_le_bytes());
        out
    }

    /// Reads a request; anything but exactly 48 well-formed bytes is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != REQUEST_LEN {
            return Err(WireError::Length {
                what: "request",
                len: bytes.len(),
                expected: REQUEST_LEN.to_string(),
            });
        }
        if bytes[..8] != REQUEST_MAGIC {
            return Err(WireError::Magic { what: "request" });
        }
        let mut topic = [0u8; 32];
        topic.copy_from_slice(&bytes[8..40]);
        let mut version = [0u8; 8];
        version.copy_from_slice(&bytes[40..]);
        Ok(Self {
            topic,
            min_version: u64::from_le_bytes(version),
        })
    }
}

/// The answer to a [`ManifestRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestResponse {
    /// The peer holds no manifest of the archive at or above the version asked.
    None,
    /// The latest signed manifest the peer holds (not yet verified).
    Found(SignedManifest),
}

impl ManifestResponse {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = RESPONSE_MAGIC.to_vec();
        match self {
            Self::None => out.push(0),
            Self::Found(signed) => {
                let bytes = signed.encode();
                out.push(1);
                // A SignedManifest encodes to at most MAX_SIGNED_LEN bytes.
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    /// Reads a response, at most [`MAX_RESPONSE_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "response";
        if bytes.len() < 9 || bytes.len() > MAX_RESPONSE_LEN {
            return Err(WireError::Length {
                what: WHAT,
                len: bytes.len(),
                expected: format!("9 to {MAX_RESPONSE_LEN}"),
            });
        }
        if bytes[..8] != RESPONSE_MAGIC {
            return Err(WireError::Magic { what: WHAT });
        }
        match bytes[8] {
            0 if bytes.len() == 9 => Ok(Self::None),
            0 => Err(WireError::Length {
                what: WHAT,
                len: bytes.len(),
                expected: "9".into(),
            }),
            1 => {
                let Some(len) = bytes.get(9..13) else {
                    return Err(WireError::Length {
                        what: WHAT,
                        len: bytes.len(),
                        expected: "at least 13".into(),
                    });
                };
                let mut len4 = [0u8; 4];
                len4.copy_from_slice(len);
                let len = u32::from_le_bytes(len4) as usize;
                let body = &bytes[13..];
                if len > MAX_SIGNED_LEN || body.len() != len {
                    return Err(WireError::Length {
                        what: WHAT,
                        len: bytes.len(),
                        expected: format!("13 + {len} (at most 13 + {MAX_SIGNED_LEN})"),
                    });
                }
                SignedManifest::decode(body)
                    .map(Self::Found)
                    .map_err(WireError::Manifest)
            }
            status => Err(WireError::Status(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperos_archive::ArchiveSecret;

    #[test]
    fn request_round_trip_and_refusals() {
        let topic = *ArchiveSecret::from_bytes(&[3; 32])
            .public()
            .discovery_topic()
            .as_bytes();
        let req = ManifestRequest {
            topic,
            min_version: 7,
        };
        let bytes = req.encode();
        assert_eq!(ManifestRequest::decode(&bytes).unwrap(), req);
        assert!(ManifestRequest::decode(&bytes[..47]).is_err());
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(
            ManifestRequest::decode(&bad),
            Err(WireError::Magic { what: "request" })
        );
    }

    #[test]
    fn response_refuses_every_truncation() {
        let none = ManifestResponse::None.encode();
        assert_eq!(
            ManifestResponse::decode(&none).unwrap(),
            ManifestResponse::None
        );
        let mut long = none.clone();
        long.push(0);
        assert!(ManifestResponse::decode(&long).is_err());
        let mut status = none;
        status[8] = 2;
        assert_eq!(ManifestResponse::decode(&status), Err(WireError::Status(2)));
        // A bogus length never allocates or panics.
        let mut huge = RESPONSE_MAGIC.to_vec();
        huge.push(1);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(ManifestResponse::decode(&huge).is_err());
        for cut in 0..huge.len() {
            assert!(ManifestResponse::decode(&huge[..cut]).is_err());
        }
    }
}
