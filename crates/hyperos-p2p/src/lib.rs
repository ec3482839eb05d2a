//! The HyperOS node: shares and fetches archives over iroh.
//!
//! Transport is iroh (QUIC, TLS 1.3, ed25519 node ids) with relays disabled:
//! peers are reached at the direct addresses in their [`PeerTicket`]s.
//! Content moves with iroh-blobs' protocol and is verified with BLAKE3
//! (bao) before the store keeps a byte; the manifest moves over HyperOS's
//! own protocol over iroh ([`wire`], ALPN `hyperos/archive/1`).
//!
//! # Actors and tasks
//!
//! ```text
//!                       ┌──────────────────── Node ────────────────────┐
//!  peers ──QUIC──▶ iroh Endpoint ──▶ Router (accept loop task)         │
//!                       │   ├─ ALPN /iroh-bytes/4 ─▶ BlobsProtocol ──┐  │
//!                       │   │     (one task per connection)          │  │
//!                       │   └─ ALPN hyperos/archive/1 ─▶ ArchiveProtocol│
//!                       │         answers from `served` manifests    │  │
//!                       │                                            ▼  │
//!                       │   Store: iroh-blobs FsStore (<dir>/store,  │  │
//!                       │          own runtime threads) or MemStore ◀┘  │
//!                       │   StateDir: node.key, seen/, published/,      │
//!                       │             manifests/                        │
//!                       └───────────────────────────────────────────────┘
//!  publish(image) ── blocking chunker thread ─chunks─▶ store.add_bytes
//!                    ─▶ index (HashSeq, tagged) ─▶ sign ─▶ served
//!  open(link, peers) ── one task per peer (tickets, then each peer the DHT
//!                    or LAN finds, as found): ask manifest ─▶ verify(LastSeen);
//!                    first answer + 700 ms ─▶ persist LastSeen ─▶ fetch +
//!                    decode_verified index; later answers join in background
//!  Archive::read ── spans ─▶ granules missing locally ─▶ up to 16 tasks,
//!                   each tries peers round-robin from a different start,
//!                   peers that failed lately last (backoff 2 s … 60 s);
//!                   bad data drops the peer; the whole read has a deadline
//!                   ─▶ export verified bytes from the store
//! ```
//!
//! Invariants: nothing reaches a reader that was not verified (manifests by
//! `SignedManifest::verify`, the index by `ChunkIndex::decode_verified`,
//! chunk bytes by iroh-blobs' bao decoding into the store); the last seen
//! version of every archive is persisted before it is used, so a restart
//! never accepts an older one; every read ends by its deadline.

pub mod discovery;
pub mod fetch;
pub mod node;
pub mod progress;
pub mod shares;
pub mod state;
pub mod ticket;
pub mod wire;

pub use discovery::DiscoveryConfig;
pub use fetch::{Archive, FetchError};
pub use node::{DEFAULT_DEADLINE, DEFAULT_LIFETIME, Node, NodeConfig, NodeError, PublishOptions};
pub use progress::Progress;
pub use shares::{ShareKind, ShareRecord, local_shares};
pub use ticket::{PeerTicket, TicketError};
