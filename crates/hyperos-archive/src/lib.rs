//! HyperOS archives, without I/O: the types and rules every other part of
//! sharing builds on (like iroh's `iroh-base`). No network, no filesystem;
//! the only reading is [`Chunker`] over any [`std::io::Read`].
//!
//! # The model
//!
//! ```text
//! ArchiveKey (ed25519 public key)          dat://<key>[+N]      (link)
//!   │  announced under DiscoveryTopic = BLAKE3-derive_key(key)   (discovery)
//!   ▼
//! versions 1, 2, 3 …  each a SignedManifest, signed by ArchiveSecret
//!   │  verify(key, now, last seen) → Manifest
//!   ▼
//! Manifest: version, lifetime, image length, fs type, chunking,
//!           root_hash, prefetch list, OCI config
//!   │  root_hash = BLAKE3(chunk index)
//!   ▼
//! ChunkIndex: BLAKE3 hash of chunk 0 ‖ chunk 1 ‖ …   (an iroh-blobs HashSeq)
//!   │  each hash = BLAKE3 root of one chunk (an iroh blob)
//!   ▼
//! chunks of `chunk_size` bytes (the last may be short)
//!   │  byte ranges fetched in `fetch_granularity` units, each verified
//!   ▼  through the chunk's BLAKE3 tree (bao) before use
//! verified bytes of the image
//! ```
//!
//! Trust flows down this chain from the key alone: the key verifies the
//! manifest, the manifest's root verifies the chunk index, each index entry
//! verifies its chunk, and the chunk's BLAKE3 tree verifies every range of it.
//! Versions that share chunks share storage and transfer, because a chunk is
//! named by its content only.
//!
//! # Security invariants
//!
//! * **Nothing unverified reaches a reader.** The only way from a peer's bytes
//!   to a [`Manifest`] is [`SignedManifest::verify`]; the only way to a chunk
//!   index is [`ChunkIndex::decode_verified`] against a verified root. Chunk
//!   bytes are checked against their [`BlobHash`] by the transport (bao) before
//!   the store keeps or returns them.
//! * **The signature covers everything, domain-separated.** Every byte of the
//!   canonical manifest encoding is signed, prefixed with
//!   [`SIGNATURE_CONTEXT`]; verification is RFC 8032 strict.
//! * **Versions never go back.** [`SignedManifest::verify`] refuses a version
//!   older than the [`LastSeen`] one, and the same version with other bytes.
//! * **Discovery never reveals the key.** Peers announce and look up the
//!   [`DiscoveryTopic`], a keyed BLAKE3 derivation of the key.
//! * **Untrusted input cannot make us allocate without bound.** Every decoder
//!   refuses input above a fixed size ([`MAX_SIGNED_LEN`], [`MAX_MANIFEST_LEN`],
//!   [`MAX_CHUNKS`] hashes) before parsing, and every list has a limit.
//! * **Secrets stay secret.** [`ArchiveSecret`] is zeroized on drop and its
//!   `Debug` shows only the public key.
//!
//! The wire formats are described byte by byte in this crate's README.

mod hex;

pub mod chunk;
pub mod key;
pub mod link;
pub mod manifest;

pub use chunk::{
    BlobHash, Chunk, ChunkError, ChunkIndex, ChunkLayout, ChunkSpan, Chunker, Chunking,
    DEFAULT_CHUNK_SIZE, DEFAULT_FETCH_GRANULARITY, MAX_CHUNKS, index_bytes, index_reader,
};
pub use key::{ArchiveKey, ArchiveSecret, DiscoveryTopic, KeyError};
pub use link::{ArchiveLink, LinkError};
pub use manifest::{
    FsType, LastSeen, MAX_MANIFEST_LEN, MAX_SIGNED_LEN, Manifest, ManifestError, OciConfig,
    SIGNATURE_CONTEXT, SignedManifest,
};
