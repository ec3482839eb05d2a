//! Manifests: what one version of an archive is, and the signature that
//! makes a peer's copy of it trustworthy.
//!
//! A [`Manifest`] names the archive, the version, its lifetime, the image
//! (length, filesystem, root hash of the chunk index, chunking), an optional
//! prefetch list and an optional OCI config. Its encoding is canonical —
//! fixed-width little-endian integers, length-prefixed lists, no optional
//! padding, no trailing bytes, every value range-checked — so one manifest
//! has exactly one encoding and [`Manifest::decode`] accepts only what
//! [`Manifest::encode`] writes. The byte layout is in the crate README.
//!
//! A [`SignedManifest`] is the encoded manifest and an ed25519 signature over
//! `"hyperos-manifest-v1\0" || manifest bytes` ([`SIGNATURE_CONTEXT`]). The
//! signature covers every byte of the manifest, and the context string keeps a
//! manifest signature from ever being valid as any other message signed with
//! the same key, and the other way round.
//!
//! The only way from bytes a peer sent to a [`Manifest`] one may act on is
//! [`SignedManifest::verify`]: it checks, in this order, the envelope and the
//! size limits, the manifest's structure, that it names the expected archive,
//! the signature, the expiry, and that the version does not go back.

use std::fmt;
use std::ops::Range;

use crate::chunk::{BlobHash, ChunkError, ChunkLayout, Chunking, HASH_LEN};
use crate::key::{ArchiveKey, ArchiveSecret, KEY_LEN, KeyError, SIGNATURE_LEN};

/// The first 8 bytes of an encoded manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"HYOSMANI";
/// The first 8 bytes of an encoded signed manifest.
pub const SIGNED_MAGIC: [u8; 8] = *b"HYOSSIGN";
/// The format version this crate writes and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;
/// What is signed before the manifest bytes (domain separation).
pub const SIGNATURE_CONTEXT: &[u8] = b"hyperos-manifest-v1\0";

/// Largest encoded manifest (64 KiB).
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;
/// Largest encoded signed manifest: the envelope around the largest manifest.
pub const MAX_SIGNED_LEN: usize = SIGNED_HEADER_LEN + MAX_MANIFEST_LEN + SIGNATURE_LEN;
/// Most ranges in a prefetch list.
pub const MAX_PREFETCH_RANGES: usize = 2048;
/// Most entries in each OCI list (entrypoint, cmd, env).
pub const MAX_OCI_LIST: usize = 256;
/// Longest OCI string (an argument, an environment entry, the working
/// directory, the user), in bytes.
pub const MAX_OCI_STRING: usize = 4096;

/// Bytes before the first variable-length field of a manifest.
const MANIFEST_FIXED_LEN: usize = 8 + 2 + KEY_LEN + 8 * 4 + 1 + 4 + 4 + HASH_LEN;
/// Bytes of a signed manifest before the manifest: magic, format, length.
const SIGNED_HEADER_LEN: usize = 8 + 2 + 4;

/// The filesystem inside the image, which decides how it is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FsType {
    /// ext4 (mounted read-only, `noload`).
    Ext4 = 1,
    /// EROFS.
    Erofs = 2,
    /// squashfs.
    Squashfs = 3,
}

impl FsType {
    /// The name `mount -t` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
            Self::Erofs => "erofs",
            Self::Squashfs => "squashfs",
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Ext4),
            2 => Some(Self::Erofs),
            3 => Some(Self::Squashfs),
            _ => None,
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a container started from the image runs, taken from an OCI image
/// config. Empty lists and strings mean "not set".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OciConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`.
    pub user: String,
}

/// One version of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The archive this is a version of; must be the signer's key.
    pub archive: ArchiveKey,
    /// The version number; each new version's is larger than the last.
    pub version: u64,
    /// When this manifest was made (unix seconds).
    pub created: u64,
    /// When it stops being valid (unix seconds, later than `created`).
    pub expires: u64,
    /// The image's length in bytes.
    pub image_len: u64,
    /// The filesystem inside the image.
    pub fs_type: FsType,
    /// How the image is cut into chunks.
    pub chunking: Chunking,
    /// The BLAKE3 hash of the chunk index (see [`crate::ChunkIndex::root`]).
    pub root_hash: BlobHash,
    /// Byte ranges of the image worth fetching first, sorted, disjoint and
    /// not touching, none empty, at most [`MAX_PREFETCH_RANGES`].
    pub prefetch: Vec<Range<u64>>,
    /// The container config, for images made from OCI images.
    pub oci: Option<OciConfig>,
}

/// Errors decoding, signing or verifying a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The input is larger than any valid manifest.
    #[error(
        "the {what} is {len} bytes, more than the {max} allowed; it is not a HyperOS manifest, get it from another peer"
    )]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The input ends in the middle of a field.
    #[error("the {what} ends in the middle of its {field}; it is truncated, get it again")]
    Truncated {
        what: &'static str,
        field: &'static str,
    },
    /// The input does not start with the magic bytes.
    #[error("this is not a HyperOS {what} (its first bytes are wrong); check where it came from")]
    Magic { what: &'static str },
    /// The input is in a format version this build does not read.
    #[error(
        "the {what} is in format version {found}, but this build reads only version 1; update HyperOS"
    )]
    FormatVersion { what: &'static str, found: u16 },
    /// Bytes follow the end of the input's last field.
    #[error("the {what} has {count} bytes after its end; it is damaged, get it again")]
    TrailingBytes { what: &'static str, count: usize },
    /// A field holds a value the format does not allow.
    #[error(
        "the manifest's {field} is invalid: {reason}; the publisher must fix it and sign again"
    )]
    Invalid { field: &'static str, reason: String },
    /// The archive key in the manifest is not a valid ed25519 key.
    #[error(
        "the manifest's archive key is invalid ({0}); it was not made by HyperOS, get it from another peer"
    )]
    Key(#[source] KeyError),
    /// The chunking in the manifest is out of limits.
    #[error("the manifest's chunking is invalid: {0}")]
    Chunking(#[source] ChunkError),
    /// The secret given to sign does not belong to the manifest's archive.
    #[error(
        "the secret given is for archive {secret_key}, not for {archive}; sign with the archive's own secret"
    )]
    WrongSecret {
        archive: ArchiveKey,
        secret_key: ArchiveKey,
    },
    /// The manifest is for another archive.
    #[error(
        "this manifest is for archive {found}, not {expected}; a peer sent the wrong archive, ask another peer"
    )]
    WrongArchive {
        expected: ArchiveKey,
        found: ArchiveKey,
    },
    /// The signature does not verify.
    #[error(
        "the manifest's signature does not verify against archive {archive}; it is forged or damaged, drop the peer that sent it"
    )]
    BadSignature { archive: ArchiveKey },
    /// The manifest has expired.
    #[error(
        "version {version} of the archive expired at {expires} (unix seconds; now is {now}); ask the publisher to publish a new version, or check this machine's clock"
    )]
    Expired {
        version: u64,
        expires: u64,
        now: u64,
    },
    /// The version is older than one already seen.
    #[error(
        "version {version} is older than version {last_seen}, which was already seen; a peer replayed an old manifest, ask another peer"
    )]
    Rollback { version: u64, last_seen: u64 },
    /// The version was already seen with different contents.
    #[error(
        "version {version} was already seen with different contents; the publisher signed two different manifests with one version number, so this archive cannot be trusted until it publishes a newer version"
    )]
    Equivocation { version: u64 },
}

/// What a reader remembers of the newest manifest it accepted, to refuse
/// older ones later (persist it: it must survive a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LastSeen {
    /// Its version.
    pub version: u64,
    /// The BLAKE3 hash of its manifest bytes ([`SignedManifest::digest`]).
    pub digest: BlobHash,
}

impl Manifest {
    /// The layout of the image: where each byte lives.
    pub fn layout(&self) -> Result<ChunkLayout, ChunkError> {
        self.chunking.layout(self.image_len)
    }

    /// Checks every field against the format's rules and limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.layout().map_err(ManifestError::Chunking)?;
        if self.expires <= self.created {
            return Err(invalid(
                "expiry",
                format!(
                    "it expires at {} but was created at {}, so it is never valid",
                    self.expires, self.created
                ),
            ));
        }
        validate_prefetch(&self.prefetch, self.image_len)?;
        if let Some(oci) = &self.oci {
            validate_oci(oci)?;
        }
        Ok(())
    }

    /// The canonical encoding (validated first; see the README for the layout).
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let mut out = Vec::with_capacity(MANIFEST_FIXED_LEN + 3 + 16 * self.prefetch.len());
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(self.archive.as_bytes());
        for n in [self.version, self.created, self.expires, self.image_len] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(self.fs_type as u8);
        out.extend_from_slice(&self.chunking.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.chunking.fetch_granularity.to_le_bytes());
        out.extend_from_slice(self.root_hash.as_bytes());
        put_len(&mut out, self.prefetch.len());
        for range in &self.prefetch {
            out.extend_from_slice(&range.start.to_le_bytes());
            out.extend_from_slice(&(range.end - range.start).to_le_bytes());
        }
        match &self.oci {
            None => out.push(0),
            Some(oci) => {
                out.push(1);
                for list in [&oci.entrypoint, &oci.cmd, &oci.env] {
                    put_len(&mut out, list.len());
                    for s in list {
                        put_str(&mut out, s);
                    }
                }
                put_str(&mut out, &oci.working_dir);
                put_str(&mut out, &oci.user);
            }
        }
        if out.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge {
                what: "manifest",
                len: out.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        Ok(out)
    }

    /// Reads an encoded manifest, checking structure and limits but **not**
    /// any signature: for tools that inspect manifests. Bytes from a peer go
    /// through [`SignedManifest::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        const WHAT: &str = "manifest";
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge {
                what: WHAT,
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        let mut r = Reader::new(bytes, WHAT);
        if r.array::<8>("magic")? != MANIFEST_MAGIC {
            return Err(ManifestError::Magic { what: WHAT });
        }
        let format = r.u16("format version")?;
        if format != FORMAT_VERSION {
            return Err(ManifestError::FormatVersion {
                what: WHAT,
                found: format,
            });
        }
        let archive =
            ArchiveKey::from_bytes(r.array("archive key")?).map_err(ManifestError::Key)?;
        let version = r.u64("version")?;
        let created = r.u64("creation time")?;
        let expires = r.u64("expiry time")?;
        let image_len = r.u64("image length")?;
        let fs_byte = r.u8("filesystem type")?;
        let fs_type = FsType::from_byte(fs_byte).ok_or_else(|| {
            invalid(
                "filesystem type",
                format!("{fs_byte} is not 1 (ext4), 2 (erofs) or 3 (squashfs)"),
            )
        })?;
        let chunking = Chunking {
            chunk_size: r.u32("chunk size")?,
            fetch_granularity: r.u32("fetch granularity")?,
        };
        let root_hash = BlobHash::from_bytes(r.array("root hash")?);
        let count = r.len("prefetch count", MAX_PREFETCH_RANGES)?;
        let mut prefetch = Vec::with_capacity(count);
        for _ in 0..count {
            let start = r.u64("prefetch range")?;
            let len = r.u64("prefetch range")?;
            let end = start.checked_add(len).ok_or_else(|| {
                invalid("prefetch list", format!("a range {start}+{len} overflows"))
            })?;
            prefetch.push(start..end);
        }
        let oci = match r.u8("OCI config flag")? {
            0 => None,
            1 => Some(OciConfig {
                entrypoint: r.strings("OCI entrypoint")?,
                cmd: r.strings("OCI cmd")?,
                env: r.strings("OCI env")?,
                working_dir: r.string("OCI working directory")?,
                user: r.string("OCI user")?,
            }),
            other => {
                return Err(invalid(
                    "OCI config flag",
                    format!("{other} is neither 0 (absent) nor 1 (present)"),
                ));
            }
        };
        r.finish()?;
        let manifest = Self {
            archive,
            version,
            created,
            expires,
            image_len,
            fs_type,
            chunking,
            root_hash,
            prefetch,
            oci,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Signs the manifest with the archive's secret.
    pub fn sign(&self, secret: &ArchiveSecret) -> Result<SignedManifest, ManifestError> {
        let secret_key = secret.public();
        if secret_key != self.archive {
            return Err(ManifestError::WrongSecret {
                archive: self.archive,
                secret_key,
            });
        }
        let manifest = self.encode()?;
        let signature = secret.sign(&signed_message(&manifest));
        Ok(SignedManifest {
            manifest,
            signature,
        })
    }
}

fn invalid(field: &'static str, reason: String) -> ManifestError {
    ManifestError::Invalid { field, reason }
}

fn validate_prefetch(ranges: &[Range<u64>], image_len: u64) -> Result<(), ManifestError> {
    const FIELD: &str = "prefetch list";
    if ranges.len() > MAX_PREFETCH_RANGES {
        return Err(invalid(
            FIELD,
            format!(
                "it has {} ranges, more than {MAX_PREFETCH_RANGES}",
                ranges.len()
            ),
        ));
    }
    let mut previous_end = None;
    for range in ranges {
        if range.start >= range.end {
            return Err(invalid(FIELD, format!("the range {range:?} is empty")));
        }
        if range.end > image_len {
            return Err(invalid(
                FIELD,
                format!("the range {range:?} reaches past the image's {image_len} bytes"),
            ));
        }
        if previous_end.is_some_and(|end| range.start <= end) {
            return Err(invalid(
                FIELD,
                format!(
                    "the range {range:?} is out of order or touches the one before; sort and merge the ranges"
                ),
            ));
        }
        previous_end = Some(range.end);
    }
    Ok(())
}

fn validate_oci(oci: &OciConfig) -> Result<(), ManifestError> {
    for (field, list) in [
        ("OCI entrypoint", &oci.entrypoint),
        ("OCI cmd", &oci.cmd),
        ("OCI env", &oci.env),
    ] {
        if list.len() > MAX_OCI_LIST {
            return Err(invalid(
                field,
                format!("it has {} entries, more than {MAX_OCI_LIST}", list.len()),
            ));
        }
        for s in list {
            validate_oci_string(field, s)?;
        }
    }
    for entry in &oci.env {
        if entry.split_once('=').is_none_or(|(key, _)| key.is_empty()) {
            return Err(invalid(
                "OCI env",
                format!("the entry {entry:?} is not of the form KEY=VALUE"),
            ));
        }
    }
    validate_oci_string("OCI working directory", &oci.working_dir)?;
    validate_oci_string("OCI user", &oci.user)
}

fn validate_oci_string(field: &'static str, s: &str) -> Result<(), ManifestError> {
    if s.len() > MAX_OCI_STRING {
        return Err(invalid(
            field,
            format!("an entry is {} bytes, more than {MAX_OCI_STRING}", s.len()),
        ));
    }
    if s.contains('\0') {
        return Err(invalid(
            field,
            format!("the entry {s:?} contains a NUL byte"),
        ));
    }
    Ok(())
}

/// Lengths are validated before encoding, so they fit a u16.
fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + manifest.len());
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.extend_from_slice(manifest);
    message
}

/// A manifest as published: its encoding and the archive's signature over it.
///
/// Holding one proves nothing; [`SignedManifest::verify`] does.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedManifest {
    manifest: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for SignedManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SignedManifest({} manifest bytes, digest {})",
            self.manifest.len(),
            self.digest()
        )
    }
}

impl SignedManifest {
    /// The encoding: magic, format version, manifest length, manifest,
    /// signature (see the README).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNED_HEADER_LEN + self.manifest.len() + SIGNATURE_LEN);
        out.extend_from_slice(&SIGNED_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        // A SignedManifest's manifest is at most MAX_MANIFEST_LEN bytes.
        out.extend_from_slice(&(self.manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.manifest);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads the envelope of a signed manifest, checking its structure and
    /// size, nothing more: the manifest inside is neither parsed nor
    /// verified until [`SignedManifest::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        const WHAT: &str = "signed manifest";
        if bytes.len() > MAX_SIGNED_LEN {
            return Err(ManifestError::TooLarge {
                what: WHAT,
                len: bytes.len(),
                max: MAX_SIGNED_LEN,
            });
        }
        let mut r = Reader::new(bytes, WHAT);
        if r.array::<8>("magic")? != SIGNED_MAGIC {
            return Err(ManifestError::Magic { what: WHAT });
        }
        let format = r.u16("format version")?;
        if format != FORMAT_VERSION {
            return Err(ManifestError::FormatVersion {
                what: WHAT,
                found: format,
            });
        }
        let len = r.u32("manifest length")? as usize;
        if len > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge {
                what: "manifest",
                len,
                max: MAX_MANIFEST_LEN,
            });
        }
        let manifest = r.take(len, "manifest")?.to_vec();
        let signature = r.array("signature")?;
        r.finish()?;
        Ok(Self {
            manifest,
            signature,
        })
    }

    /// The BLAKE3 hash of the manifest bytes: tells two manifests with the
    /// same version apart (see [`LastSeen`]).
    pub fn digest(&self) -> BlobHash {
        BlobHash::of(&self.manifest)
    }

    /// Checks everything and returns the manifest if, and only if:
    /// the manifest is well-formed and within limits, it is for
    /// `expected_key`, its signature verifies (strictly, domain-separated),
    /// it has not expired at `now` (unix seconds), and its version is newer
    /// than `last_seen` — or the same version with identical bytes, so a
    /// manifest heard again from another peer still verifies.
    pub fn verify(
        &self,
        expected_key: &ArchiveKey,
        now: u64,
        last_seen: Option<LastSeen>,
    ) -> Result<Manifest, ManifestError> {
        let manifest = Manifest::decode(&self.manifest)?;
        if manifest.archive != *expected_key {
            return Err(ManifestError::WrongArchive {
                expected: *expected_key,
                found: manifest.archive,
            });
        }
        if !expected_key.verify_strict(&signed_message(&self.manifest), &self.signature) {
            return Err(ManifestError::BadSignature {
                archive: *expected_key,
            });
        }
        if now >= manifest.expires {
            return Err(ManifestError::Expired {
                version: manifest.version,
                expires: manifest.expires,
                now,
            });
        }
        if let Some(seen) = last_seen {
            if manifest.version < seen.version {
                return Err(ManifestError::Rollback {
                    version: manifest.version,
                    last_seen: seen.version,
                });
            }
            if manifest.version == seen.version && self.digest() != seen.digest {
                return Err(ManifestError::Equivocation {
                    version: manifest.version,
                });
            }
        }
        Ok(manifest)
    }

    /// What to remember after [`SignedManifest::verify`] accepted this with
    /// `manifest` as its result.
    pub fn last_seen(&self, manifest: &Manifest) -> LastSeen {
        LastSeen {
            version: manifest.version,
            digest: self.digest(),
        }
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked and names the
/// field it was reading, and nothing is allocated beyond the input's length.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ManifestError> {
        if self.bytes.len() < n {
            return Err(ManifestError::Truncated {
                what: self.what,
                field,
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ManifestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ManifestError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ManifestError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ManifestError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A u16 count, refused above `max`.
    fn len(&mut self, field: &'static str, max: usize) -> Result<usize, ManifestError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(invalid(field, format!("{len} is more than {max}")));
        }
        Ok(len)
    }

    fn string(&mut self, field: &'static str) -> Result<String, ManifestError> {
        let len = self.len(field, MAX_OCI_STRING)?;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid(field, "an entry is not UTF-8".to_owned()))
    }

    fn strings(&mut self, field: &'static str) -> Result<Vec<String>, ManifestError> {
        let count = self.len(field, MAX_OCI_LIST)?;
        // Each string takes at least its 2-byte length, so a count the
        // remaining input cannot hold is refused before allocating.
        if count * 2 > self.bytes.len() {
            return Err(ManifestError::Truncated {
                what: self.what,
                field,
            });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.string(field)?);
        }
        Ok(out)
    }

    fn finish(self) -> Result<(), ManifestError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::TrailingBytes {
                what: self.what,
                count: self.bytes.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{ChunkIndex, index_bytes};

    const NOW: u64 = 1_750_000_000;

    fn secret() -> ArchiveSecret {
        ArchiveSecret::from_bytes(&[3; 32])
    }

    fn manifest(version: u64) -> Manifest {
        let chunking = Chunking::default();
        let data = vec![0u8; 600 * 1024];
        let index = index_bytes(&data, chunking).unwrap();
        Manifest {
            archive: secret().public(),
            version,
            created: NOW - 10,
            expires: NOW + 3600,
            image_len: data.len() as u64,
            fs_type: FsType::Erofs,
            chunking,
            root_hash: index.root(),
            prefetch: vec![0..4096, 8192..16384],
            oci: Some(OciConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["echo hi".into()],
                env: vec!["PATH=/usr/bin:/bin".into(), "EMPTY=".into()],
                working_dir: "/srv".into(),
                user: "1000:1000".into(),
            }),
        }
    }

    #[test]
    fn encoding_round_trips_and_has_the_documented_header() {
        let m = manifest(1);
        let bytes = m.encode().unwrap();
        assert_eq!(&bytes[..8], b"HYOSMANI");
        assert_eq!(&bytes[8..10], &[1, 0]);
        assert_eq!(&bytes[10..42], m.archive.as_bytes());
        assert_eq!(&bytes[42..50], &1u64.to_le_bytes());
        assert_eq!(bytes[74], 2);
        assert_eq!(&bytes[83..115], m.root_hash.as_bytes());
        assert_eq!(MANIFEST_FIXED_LEN, 115);
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        let without_oci = Manifest {
            oci: None,
            prefetch: vec![],
            ..m
        };
        let bytes = without_oci.encode().unwrap();
        assert_eq!(bytes.len(), MANIFEST_FIXED_LEN + 2 + 1);
        assert_eq!(Manifest::decode(&bytes).unwrap(), without_oci);
    }

    #[test]
    fn sign_and_verify() {
        let m = manifest(5);
        let signed = m.sign(&secret()).unwrap();
        let wire = signed.encode();
        assert_eq!(&wire[..8], b"HYOSSIGN");
        let back = SignedManifest::decode(&wire).unwrap();
        assert_eq!(back, signed);
        let key = secret().public();
        assert_eq!(back.verify(&key, NOW, None).unwrap(), m);
        let seen = back.last_seen(&m);
        // The same manifest again, from another peer: fine.
        assert_eq!(back.verify(&key, NOW, Some(seen)).unwrap(), m);
        // A newer one: fine.
        let newer = manifest(6).sign(&secret()).unwrap();
        assert_eq!(newer.verify(&key, NOW, Some(seen)).unwrap().version, 6);
    }

    #[test]
    fn signature_is_domain_separated() {
        let m = manifest(1);
        let bytes = m.encode().unwrap();
        let plain = secret().sign(&bytes);
        let forged = SignedManifest {
            manifest: bytes,
            signature: plain,
        };
        assert!(matches!(
            forged.verify(&secret().public(), NOW, None),
            Err(ManifestError::BadSignature { .. })
        ));
    }

    #[test]
    fn refusals() {
        let key = secret().public();
        let m = manifest(5);
        let signed = m.sign(&secret()).unwrap();
        let seen = signed.last_seen(&m);

        // Forged: signed by someone else but claiming this archive.
        let mallory = ArchiveSecret::from_bytes(&[4; 32]);
        let forged = SignedManifest {
            manifest: signed.manifest.clone(),
            signature: mallory.sign(&signed_message(&signed.manifest)),
        };
        assert_eq!(
            forged.verify(&key, NOW, None),
            Err(ManifestError::BadSignature { archive: key })
        );

        // Another archive's manifest, validly signed by it.
        let other = Manifest {
            archive: mallory.public(),
            ..m.clone()
        }
        .sign(&mallory)
        .unwrap();
        assert_eq!(
            other.verify(&key, NOW, None),
            Err(ManifestError::WrongArchive {
                expected: key,
                found: mallory.public()
            })
        );

        // Expired, with the expiry in the message.
        let err = signed.verify(&key, m.expires, None).unwrap_err();
        assert_eq!(
            err,
            ManifestError::Expired {
                version: 5,
                expires: m.expires,
                now: m.expires
            }
        );
        assert!(err.to_string().contains(&m.expires.to_string()), "{err}");

        // Older than seen.
        let older = manifest(4).sign(&secret()).unwrap();
        assert_eq!(
            older.verify(&key, NOW, Some(seen)),
            Err(ManifestError::Rollback {
                version: 4,
                last_seen: 5
            })
        );

        // Same version, different bytes.
        let twin = Manifest {
            expires: m.expires + 1,
            ..m.clone()
        }
        .sign(&secret())
        .unwrap();
        assert_eq!(
            twin.verify(&key, NOW, Some(seen)),
            Err(ManifestError::Equivocation { version: 5 })
        );

        // Signing with the wrong secret.
        assert!(matches!(
            m.sign(&mallory),
            Err(ManifestError::WrongSecret { .. })
        ));
    }

    #[test]
    fn decode_refusals() {
        let m = manifest(1);
        let bytes = m.encode().unwrap();
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(
            Manifest::decode(&bad),
            Err(ManifestError::Magic { what: "manifest" })
        );
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert_eq!(
            Manifest::decode(&bad),
            Err(ManifestError::FormatVersion {
                what: "manifest",
                found: 2
            })
        );
        let mut bad = bytes.clone();
        bad[74] = 9;
        assert!(matches!(
            Manifest::decode(&bad),
            Err(ManifestError::Invalid {
                field: "filesystem type",
                ..
            })
        ));
        let mut bad = bytes.clone();
        bad.push(0);
        assert_eq!(
            Manifest::decode(&bad),
            Err(ManifestError::TrailingBytes {
                what: "manifest",
                count: 1
            })
        );
        for cut in [0, 7, 50, MANIFEST_FIXED_LEN, bytes.len() - 1] {
            assert!(
                matches!(
                    Manifest::decode(&bytes[..cut]),
                    Err(ManifestError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let huge = vec![0u8; MAX_MANIFEST_LEN + 1];
        assert!(matches!(
            Manifest::decode(&huge),
            Err(ManifestError::TooLarge { .. })
        ));
        let huge = vec![0u8; MAX_SIGNED_LEN + 1];
        assert!(matches!(
            SignedManifest::decode(&huge),
            Err(ManifestError::TooLarge { .. })
        ));
        // A signed envelope claiming a 4 GiB manifest.
        let mut envelope = SIGNED_MAGIC.to_vec();
        envelope.extend_from_slice(&1u16.to_le_bytes());
        envelope.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            SignedManifest::decode(&envelope),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // a prefetch list of one range
    fn validation_rules() {
        let base = manifest(1);
        let cases: Vec<(Manifest, &str)> = vec![
            (
                Manifest {
                    expires: base.created,
                    ..base.clone()
                },
                "expiry",
            ),
            (
                Manifest {
                    prefetch: vec![10..10],
                    ..base.clone()
                },
                "prefetch list",
            ),
            (
                Manifest {
                    prefetch: vec![0..10, 10..20],
                    ..base.clone()
                },
                "prefetch list",
            ),
            (
                Manifest {
                    prefetch: vec![20..30, 0..10],
                    ..base.clone()
                },
                "prefetch list",
            ),
            (
                Manifest {
                    prefetch: vec![0..base.image_len + 1],
                    ..base.clone()
                },
                "prefetch list",
            ),
            (
                Manifest {
                    prefetch: (0..MAX_PREFETCH_RANGES as u64 + 1)
                        .map(|i| 2 * i..2 * i + 1)
                        .collect(),
                    image_len: 1 << 20,
                    ..base.clone()
                },
                "prefetch list",
            ),
            (
                Manifest {
                    oci: Some(OciConfig {
                        env: vec!["=x".into()],
                        ..OciConfig::default()
                    }),
                    ..base.clone()
                },
                "OCI env",
            ),
            (
                Manifest {
                    oci: Some(OciConfig {
                        cmd: vec!["a\0b".into()],
                        ..OciConfig::default()
                    }),
                    ..base.clone()
                },
                "OCI cmd",
            ),
            (
                Manifest {
                    oci: Some(OciConfig {
                        working_dir: "x".repeat(MAX_OCI_STRING + 1),
                        ..OciConfig::default()
                    }),
                    ..base.clone()
                },
                "OCI working directory",
            ),
            (
                Manifest {
                    oci: Some(OciConfig {
                        entrypoint: vec![String::new(); MAX_OCI_LIST + 1],
                        ..OciConfig::default()
                    }),
                    ..base.clone()
                },
                "OCI entrypoint",
            ),
        ];
        for (m, field) in cases {
            match m.encode() {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let bad_chunking = Manifest {
            chunking: Chunking {
                chunk_size: 1000,
                fetch_granularity: 1024,
            },
            ..base.clone()
        };
        assert!(matches!(
            bad_chunking.encode(),
            Err(ManifestError::Chunking(ChunkError::ChunkSize(1000)))
        ));
        // Within every list limit, but over the total size.
        let too_big = Manifest {
            oci: Some(OciConfig {
                env: vec![format!("K={}", "v".repeat(MAX_OCI_STRING - 2)); 17],
                ..OciConfig::default()
            }),
            ..base
        };
        assert!(matches!(
            too_big.encode(),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_chain_from_key_to_chunk() {
        // Publisher side.
        let chunking = Chunking::default();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let index = index_bytes(&data, chunking).unwrap();
        let m = Manifest {
            image_len: data.len() as u64,
            root_hash: index.root(),
            prefetch: vec![],
            ..manifest(1)
        };
        let wire = m.sign(&secret()).unwrap().encode();
        let index_wire = index.encode();

        // Reader side: only the key is trusted.
        let key = secret().public();
        let verified = SignedManifest::decode(&wire)
            .unwrap()
            .verify(&key, NOW, None)
            .unwrap();
        let layout = verified.layout().unwrap();
        let index = ChunkIndex::decode_verified(&index_wire, &layout, &verified.root_hash).unwrap();
        let (chunk, offset) = layout.locate(300_000).unwrap();
        let chunk_range = layout.chunk_range(chunk).unwrap();
        let chunk_bytes = &data[chunk_range.start as usize..chunk_range.end as usize];
        assert_eq!(index.get(chunk), Some(BlobHash::of(chunk_bytes)));
        assert_eq!(chunk_bytes[offset as usize], data[300_000]);
    }
}
