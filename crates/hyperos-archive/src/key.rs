//! Archive keys: the ed25519 key pair that names an archive and signs its
//! manifests, and the discovery topic peers announce under.
//!
//! * [`ArchiveKey`] is the public half. It *is* the archive's address, written
//!   as 64 lowercase hex digits (inside a `dat://` link, see [`crate::link`]).
//! * [`ArchiveSecret`] is the 32-byte ed25519 seed (RFC 8032 "secret key"),
//!   held only by the publisher. It is zeroized on drop, its `Debug` prints no
//!   byte of it, and it has no `Display`: writing it out is always explicit
//!   ([`ArchiveSecret::to_hex`], [`ArchiveSecret::to_bytes`]), and both return
//!   [`Zeroizing`] buffers.
//! * [`DiscoveryTopic`] is what peers announce and look up, so that the DHT
//!   and the LAN never see the key itself.
//!
//! The key types are ed25519-dalek 3's, the same crate (and version) iroh
//! uses for node ids, but archive keys are deliberately a different Rust type
//! from iroh's `PublicKey`: an archive key is never a node id.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::hex;

/// Length of an archive key and of an archive secret in bytes.
pub const KEY_LEN: usize = 32;

/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// The context string of the discovery topic's BLAKE3 key derivation.
///
/// Changing it moves every archive to a new topic: it is part of the wire
/// format.
pub const DISCOVERY_CONTEXT: &str = "hyperos archive discovery v1";

/// Errors reading a key or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text has the wrong number of characters.
    #[error(
        "an archive key is 64 hex digits, but this one has {found} characters; copy the whole key"
    )]
    HexLength { found: usize },
    /// A character is not a hex digit.
    #[error(
        "character {position} of the key ({found:?}) is not a hex digit (0-9, a-f); check the key for typos"
    )]
    NotHex { position: usize, found: char },
    /// The 32 bytes are not a point on the curve (public keys only).
    #[error(
        "these 32 bytes are not a valid ed25519 public key; check that the key was copied correctly"
    )]
    NotOnCurve,
    /// The raw secret has the wrong number of bytes.
    #[error(
        "an archive secret is 32 raw bytes or 64 hex digits, but this one has {found} bytes; the secret file is damaged or not a HyperOS secret"
    )]
    SecretLength { found: usize },
    /// The operating system's random number generator failed.
    #[error(
        "the operating system's random number generator failed ({0}); try again, and check that /dev/urandom (or the platform's equivalent) works"
    )]
    Random(String),
}

/// The public key of an archive: its address.
///
/// Only keys that decode to a point on the curve are representable, so a
/// value of this type can always verify signatures. Comparison is on the 32
/// bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchiveKey([u8; KEY_LEN]);

impl ArchiveKey {
    /// Reads a key from its 32 bytes, refusing bytes that are not a curve point.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotOnCurve)?;
        Ok(Self(bytes))
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Reads 64 hex digits (either case), as written in a link.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode_32(text)?;
        Self::from_bytes(bytes)
    }

    /// The key as 64 lowercase hex digits (the same as `Display`).
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// The topic under which peers announce this archive (see [`DiscoveryTopic`]).
    pub fn discovery_topic(&self) -> DiscoveryTopic {
        DiscoveryTopic(blake3::derive_key(DISCOVERY_CONTEXT, &self.0))
    }

    /// Verifies `signature` over `message` with RFC 8032 strict rules (no
    /// malleable signatures, no weak keys).
    pub(crate) fn verify_strict(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Display for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveKey({self})")
    }
}

impl FromStr for ArchiveKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

/// The secret half of an archive's key pair: whoever holds it can publish
/// versions of the archive.
///
/// Stored as the 32-byte ed25519 seed. Two encodings, both without OpenSSH:
/// 32 raw bytes ([`ArchiveSecret::from_bytes`], for a 0600 file or the OS
/// keychain's binary secrets) and 64 lowercase hex digits
/// ([`ArchiveSecret::from_hex`], for keychains that store text). The public
/// key is derived from it, never stored beside it.
pub struct ArchiveSecret(SigningKey);

impl ArchiveSecret {
    /// A new secret from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(seed.as_mut_slice()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Reads the 32-byte seed.
    pub fn from_bytes(seed: &[u8; KEY_LEN]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// Reads the seed from a slice, refusing any length but 32 (for a secret file).
    pub fn from_slice(seed: &[u8]) -> Result<Self, KeyError> {
        let seed: &[u8; KEY_LEN] = seed
            .try_into()
            .map_err(|_| KeyError::SecretLength { found: seed.len() })?;
        Ok(Self::from_bytes(seed))
    }

    /// Reads 64 hex digits (either case; surrounding whitespace is ignored,
    /// so a file with a trailing newline reads).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let seed = Zeroizing::new(hex::decode_32(text.trim())?);
        Ok(Self::from_bytes(&seed))
    }

    /// The 32-byte seed, zeroized when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The seed as 64 lowercase hex digits, zeroized when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&*self.to_bytes()))
    }

    /// The public key: the archive's address.
    pub fn public(&self) -> ArchiveKey {
        ArchiveKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` (ed25519, deterministic).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for ArchiveSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveSecret(for {}, redacted)", self.public())
    }
}

/// The 32-byte name peers announce an archive under, in the DHT and on the LAN:
/// `BLAKE3::derive_key("hyperos archive discovery v1", key bytes)`.
///
/// Anyone who knows the key can compute the topic, but the topic does not
/// reveal the key, so a DHT node that sees an announce learns nothing it could
/// fetch or verify with. The BitTorrent Mainline DHT takes 20-byte info-hashes:
/// use [`DiscoveryTopic::info_hash`], the first 20 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveryTopic([u8; 32]);

impl DiscoveryTopic {
    /// The 32 bytes of the topic.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 20 bytes: the info-hash to announce on the Mainline DHT.
    pub fn info_hash(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out.copy_from_slice(&self.0[..20]);
        out
    }
}

impl fmt::Display for DiscoveryTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for DiscoveryTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiscoveryTopic({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_differ_and_round_trip() {
        let a = ArchiveSecret::generate().unwrap();
        let b = ArchiveSecret::generate().unwrap();
        assert_ne!(a.public(), b.public());
        let hex = a.to_hex();
        assert_eq!(hex.len(), 64);
        let back = ArchiveSecret::from_hex(&format!("{}\n", hex.to_uppercase())).unwrap();
        assert_eq!(back.public(), a.public());
        let raw = ArchiveSecret::from_slice(a.to_bytes().as_slice()).unwrap();
        assert_eq!(raw.public(), a.public());
    }

    #[test]
    fn secret_debug_prints_no_secret() {
        let secret = ArchiveSecret::from_bytes(&[7u8; 32]);
        let debug = format!("{secret:?}");
        assert!(!debug.contains(secret.to_hex().as_str()), "{debug}");
        assert!(debug.contains("redacted"));
        assert!(debug.contains(&secret.public().to_hex()));
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 section 7.1, TEST 1.
        let secret = ArchiveSecret::from_hex(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        )
        .unwrap();
        assert_eq!(
            secret.public().to_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = secret.sign(b"");
        assert_eq!(
            hex::encode(&sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(secret.public().verify_strict(b"", &sig));
        assert!(!secret.public().verify_strict(b"x", &sig));
    }

    #[test]
    fn key_errors_are_precise() {
        assert_eq!(
            ArchiveKey::from_hex("abc"),
            Err(KeyError::HexLength { found: 3 })
        );
        let mut text = "a".repeat(64);
        text.replace_range(10..11, "g");
        assert_eq!(
            ArchiveKey::from_hex(&text),
            Err(KeyError::NotHex {
                position: 11,
                found: 'g'
            })
        );
        assert_eq!(
            ArchiveSecret::from_slice(&[0; 31]).map(|_| ()),
            Err(KeyError::SecretLength { found: 31 })
        );
    }

    #[test]
    fn off_curve_keys_are_refused() {
        // y = 2 is not the y-coordinate of any point on edwards25519.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        assert_eq!(ArchiveKey::from_bytes(bytes), Err(KeyError::NotOnCurve));
    }

    #[test]
    fn topic_is_derived_not_the_key() {
        let key = ArchiveSecret::from_bytes(&[1; 32]).public();
        let topic = key.discovery_topic();
        assert_ne!(topic.as_bytes(), key.as_bytes());
        assert_eq!(
            topic.as_bytes(),
            &blake3::derive_key(DISCOVERY_CONTEXT, key.as_bytes())
        );
        assert_eq!(&topic.info_hash()[..], &topic.as_bytes()[..20]);
        let other = ArchiveSecret::from_bytes(&[2; 32]).public();
        assert_ne!(other.discovery_topic(), topic);
    }
}
