//! The node: an iroh endpoint, the blob store, the archive protocol server,
//! and publishing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyperos_archive::{
    ArchiveKey, ArchiveLink, ArchiveSecret, BlobHash, ChunkIndex, Chunker, Chunking, FsType,
    MAX_CHUNKS, Manifest, OciConfig, SignedManifest,
};
use iroh::endpoint::{Connection, presets};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointId, RelayMode};
use iroh_blobs::api::Store;
use iroh_blobs::api::blobs::AddBytesOptions;
use iroh_blobs::{BlobFormat, BlobsProtocol};
use tracing::{debug, info, instrument, warn};

use crate::discovery::{Discovery, DiscoveryConfig};
use crate::progress::{Counters, Progress};
use crate::state::{StateDir, StateError};
use crate::ticket::PeerTicket;
use crate::wire::{self, ManifestRequest, ManifestResponse};

/// The default deadline of one read: after it, the read fails with
/// [`crate::FetchError::Timeout`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The default lifetime of a published version: 30 days.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The state directory: node key, seen versions, blob store.
    pub dir: PathBuf,
    /// The UDP address to bind; `None` binds any address on a random port
    /// (IPv4 and IPv6).
    pub bind: Option<SocketAddr>,
    /// Keep blobs in memory only (`--ram`): nothing of an image is written to
    /// disk; the node key and seen versions still are.
    pub ram: bool,
    /// How long one read may take before it fails.
    pub deadline: Duration,
    /// Finding peers on the DHT and the LAN (default: off, tickets only).
    pub discovery: DiscoveryConfig,
}

impl NodeConfig {
    /// Defaults: bind any address, persistent store, 30 s deadline.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            bind: None,
            ram: false,
            deadline: DEFAULT_DEADLINE,
            discovery: DiscoveryConfig::default(),
        }
    }
}

/// What to publish besides the image.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// How to cut the image.
    pub chunking: Chunking,
    /// The filesystem inside the image.
    pub fs_type: FsType,
    /// The container config, for images made from OCI images.
    pub oci: Option<OciConfig>,
    /// Image byte ranges a reader should fetch first.
    pub prefetch: Vec<Range<u64>>,
    /// How long the version stays valid.
    pub lifetime: Duration,
}

impl PublishOptions {
    /// Default chunking, no OCI config, no prefetch list, 30 days.
    pub fn new(fs_type: FsType) -> Self {
        Self {
            chunking: Chunking::default(),
            fs_type,
            oci: None,
            prefetch: Vec::new(),
            lifetime: DEFAULT_LIFETIME,
        }
    }
}

/// Errors of the node and of publishing.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A state file failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The blob store could not be opened.
    #[error(
        "could not open the blob store at {path} ({reason}); check the directory, or that no other HyperOS process uses it"
    )]
    Store { path: PathBuf, reason: String },
    /// The blob store failed an operation.
    #[error("the blob store failed to {action} ({reason}); check free disk space and retry")]
    StoreOp {
        action: &'static str,
        reason: String,
    },
    /// The endpoint could not bind.
    #[error(
        "could not bind the network endpoint ({0}); check the bind address and that the port is free"
    )]
    Bind(String),
    /// The image could not be read.
    #[error("could not read the image {path}; check the path and its permissions")]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The chunking or the image size is out of limits.
    #[error(transparent)]
    Chunk(#[from] hyperos_archive::ChunkError),
    /// The manifest could not be built or signed.
    #[error(transparent)]
    Manifest(#[from] hyperos_archive::ManifestError),
    /// The clock is before 1970.
    #[error("the system clock is before 1970; set the clock")]
    Clock,
}

/// A manifest this node serves, with the fields the server needs.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub signed: SignedManifest,
    pub version: u64,
}

/// State shared by the node, its protocol handler and open archives.
#[derive(Debug)]
pub(crate) struct Inner {
    pub endpoint: Endpoint,
    pub store: Store,
    pub state: StateDir,
    pub deadline: Duration,
    pub counters: Counters,
    /// Served manifests, by discovery topic bytes.
    pub served: Mutex<HashMap<[u8; 32], Served>>,
    /// Open connections of the blobs protocol, by peer.
    pub connections: Mutex<HashMap<EndpointId, Connection>>,
    /// The DHT and LAN discovery services.
    pub discovery: Discovery,
}

impl Inner {
    pub fn serve(&self, signed: SignedManifest, manifest: &Manifest) {
        let topic = *manifest.archive.discovery_topic().as_bytes();
        let mut served = lock(&self.served);
        let newer = served
            .get(&topic)
            .is_none_or(|s| s.version < manifest.version);
        if newer {
            served.insert(
                topic,
                Served {
                    signed,
                    version: manifest.version,
                },
            );
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn now_unix() -> Result<u64, NodeError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| NodeError::Clock)
}

/// The manifest inside a signed manifest, without checking the signature:
/// for the server's own bookkeeping only (what version it holds), never to
/// trust its contents. The envelope is 14 bytes of header and a 64-byte
/// signature (see hyperos-archive's README).
pub(crate) fn peek_manifest(signed: &SignedManifest) -> Option<Manifest> {
    let bytes = signed.encode();
    let body = bytes.get(14..bytes.len().checked_sub(64)?)?;
    Manifest::decode(body).ok()
}

/// A HyperOS node: serves blobs and manifests, publishes and opens archives.
#[derive(Debug)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
    router: Router,
}

impl Node {
    /// Starts a node: loads (or creates) its key, opens the store, binds the
    /// endpoint with relays disabled, and starts serving.
    #[instrument(skip_all, fields(dir = %config.dir.display()))]
    pub async fn spawn(config: NodeConfig) -> Result<Self, NodeError> {
        let state = StateDir::new(&config.dir);
        let secret = state.node_key()?;
        let store: Store = if config.ram {
            iroh_blobs::store::mem::MemStore::new().into()
        } else {
            let path = state.store_dir();
            iroh_blobs::store::fs::FsStore::load(&path)
                .await
                .map_err(|e| NodeError::Store {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .into()
        };
        let mut builder = Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .secret_key(secret);
        if let Some(addr) = config.bind {
            builder = builder
                .clear_ip_transports()
                .bind_addr(addr)
                .map_err(|e| NodeError::Bind(e.to_string()))?;
        }
        let endpoint = builder
            .bind()
            .await
            .map_err(|e| NodeError::Bind(e.to_string()))?;
        let inner = Arc::new(Inner {
            endpoint: endpoint.clone(),
            store: store.clone(),
            state,
            deadline: config.deadline,
            counters: Counters::default(),
            served: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            discovery: Discovery::start(&config.discovery).await,
        });
        for (name, bytes) in inner.state.manifests()? {
            match SignedManifest::decode(&bytes).ok().and_then(|s| {
                let m = peek_manifest(&s)?;
                (m.archive.discovery_topic().to_string() == name).then_some((s, m))
            }) {
                Some((signed, manifest)) => inner.serve(signed, &manifest),
                None => warn!(file = %name, "skipping a damaged kept manifest"),
            }
        }
        let router = Router::builder(endpoint)
            .accept(iroh_blobs::ALPN, BlobsProtocol::new(&store, None))
            .accept(
                wire::ALPN,
                ArchiveProtocol {
                    inner: inner.clone(),
                },
            )
            .spawn();
        info!(id = %inner.endpoint.id(), "node started");
        Ok(Self { inner, router })
    }

    /// The node's endpoint id.
    pub fn id(&self) -> EndpointId {
        self.inner.endpoint.id()
    }

    /// The node's ticket: its id and direct addresses. Waits up to two
    /// seconds for the endpoint to know its addresses.
    pub async fn ticket(&self) -> PeerTicket {
        let endpoint = &self.inner.endpoint;
        let mut ticket = PeerTicket::from_endpoint_addr(&endpoint.addr());
        for _ in 0..40 {
            if !ticket.addrs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            ticket = PeerTicket::from_endpoint_addr(&endpoint.addr());
        }
        for bound in endpoint.bound_sockets() {
            if !bound.ip().is_unspecified() && !ticket.addrs.contains(&bound) {
                ticket.addrs.push(bound);
            }
        }
        ticket.addrs.truncate(crate::ticket::MAX_TICKET_ADDRS);
        ticket
    }

    /// A snapshot of the counters.
    pub fn progress(&self) -> Progress {
        let connected = lock(&self.inner.connections)
            .values()
            .filter(|c| c.close_reason().is_none())
            .count() as u64;
        self.inner.counters.snapshot(connected)
    }

    /// How many blobs (complete or partial) the store holds.
    pub async fn stored_blob_count(&self) -> Result<usize, NodeError> {
        let hashes = self
            .inner
            .store
            .blobs()
            .list()
            .hashes()
            .await
            .map_err(|e| NodeError::StoreOp {
                action: "list blobs",
                reason: e.to_string(),
            })?;
        Ok(hashes.len())
    }

    /// Publishes the next version of the archive of `secret` from the image
    /// at `image`: chunks it into the store (chunks already stored, from
    /// earlier versions or other archives, are not stored again), signs the
    /// manifest and starts serving it. Returns it and the link to this version.
    #[instrument(skip_all, fields(image = %image.display(), archive = %secret.public()))]
    pub async fn publish(
        &self,
        image: &Path,
        secret: &ArchiveSecret,
        options: PublishOptions,
    ) -> Result<(SignedManifest, ArchiveLink), NodeError> {
        let key = secret.public();
        let topic = key.discovery_topic();
        options.chunking.validate()?;
        let state = &self.inner.state;
        let previous = [
            state.published(&topic)?,
            state.seen(&topic)?.map(|s| s.version),
            lock(&self.inner.served)
                .get(topic.as_bytes())
                .map(|s| s.version),
        ];
        let version = previous.into_iter().flatten().max().unwrap_or(0) + 1;

        let file = std::fs::File::open(image).map_err(|source| NodeError::Image {
            path: image.to_owned(),
            source,
        })?;
        let chunker = Chunker::new(std::io::BufReader::new(file), options.chunking)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let reader = tokio::task::spawn_blocking(move || {
            for chunk in chunker {
                let stop = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || stop {
                    break;
                }
            }
        });
        let mut hashes = Vec::new();
        let mut image_len = 0u64;
        let mut temp_tags = Vec::new();
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|source| NodeError::Image {
                path: image.to_owned(),
                source,
            })?;
            image_len += chunk.bytes.len() as u64;
            if hashes.len() as u64 >= MAX_CHUNKS {
                return Err(hyperos_archive::ChunkError::TooManyChunks {
                    image_len,
                    chunk_size: options.chunking.chunk_size,
                }
                .into());
            }
            let tag = self
                .inner
                .store
                .add_bytes(chunk.bytes)
                .temp_tag()
                .await
                .map_err(|e| store_err("add a chunk", e))?;
            debug_assert_eq!(tag.hash().as_bytes(), chunk.hash.as_bytes());
            hashes.push(chunk.hash);
            temp_tags.push(tag);
        }
        reader.await.map_err(|e| NodeError::Image {
            path: image.to_owned(),
            source: std::io::Error::other(e),
        })?;
        let index = ChunkIndex::new(hashes);
        // The index is a HashSeq, tagged per archive: the tag keeps the index
        // and every chunk it lists when a garbage collector runs.
        self.inner
            .store
            .add_bytes_with_opts(AddBytesOptions {
                data: index.encode().into(),
                format: BlobFormat::HashSeq,
            })
            .with_named_tag(archive_tag(&key))
            .await
            .map_err(|e| store_err("add the chunk index", e))?;
        drop(temp_tags);

        let created = now_unix()?;
        let manifest = Manifest {
            archive: key,
            version,
            created,
            expires: created.saturating_add(options.lifetime.as_secs().max(1)),
            image_len,
            fs_type: options.fs_type,
            chunking: options.chunking,
            root_hash: index.root(),
            prefetch: options.prefetch,
            oci: options.oci,
        };
        let signed = manifest.sign(secret)?;
        state.set_published(&topic, version)?;
        state.set_manifest(&topic, &signed.encode())?;
        state.set_seen(&topic, signed.last_seen(&manifest))?;
        self.inner.serve(signed.clone(), &manifest);
        info!(version, image_len, chunks = index.len(), "published");
        Ok((signed, ArchiveLink::at_version(key, version)))
    }

    /// Announces on the DHT and the LAN (as configured) that this node
    /// serves the archive `key`, with the latest manifest it serves, until
    /// shutdown.
    pub async fn announce(&self, key: &ArchiveKey) {
        let ticket = self.ticket().await;
        let served = lock(&self.inner.served)
            .get(key.discovery_topic().as_bytes())
            .map(|s| (s.version, s.signed.clone()));
        self.inner.discovery.announce(key, &ticket, served);
    }

    /// Stops serving the archive `key`: its manifest is no longer given to
    /// peers (so none can open it from this node) and it is no longer
    /// announced. Its blobs stay in the store. Returns whether it was served.
    pub fn withdraw(&self, key: &ArchiveKey) -> bool {
        self.inner.discovery.withdraw(key);
        lock(&self.inner.served)
            .remove(key.discovery_topic().as_bytes())
            .is_some()
    }

    /// Stops serving, closes the endpoint and shuts the store down (its
    /// files are then free for another node).
    #[instrument(skip_all)]
    pub async fn shutdown(self) {
        self.inner.discovery.shutdown();
        if let Err(e) = self.router.shutdown().await {
            warn!("shutting down the node: {e}");
        }
        // The router shuts the blobs protocol, and with it the store, down.
        let _ = self.inner.store.shutdown().await;
    }
}

/// The store tag that keeps an archive's latest index and chunks.
pub(crate) fn archive_tag(key: &ArchiveKey) -> String {
    format!("hyperos/archive/{}", key.discovery_topic())
}

pub(crate) fn store_err(action: &'static str, e: impl std::fmt::Display) -> NodeError {
    NodeError::StoreOp {
        action,
        reason: e.to_string(),
    }
}

/// Converts between the archive crate's hash and iroh-blobs' (same bytes).
pub(crate) fn iroh_hash(hash: &BlobHash) -> iroh_blobs::Hash {
    iroh_blobs::Hash::from_bytes(*hash.as_bytes())
}

/// The HyperOS archive protocol's server side.
#[derive(Debug, Clone)]
struct ArchiveProtocol {
    inner: Arc<Inner>,
}

impl ProtocolHandler for ArchiveProtocol {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        let peer = connection.remote_id();
        // Each request comes on its own stream; serve until the peer closes.
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let request = match recv.read_to_end(wire::REQUEST_LEN).await {
                Ok(bytes) => ManifestRequest::decode(&bytes),
                Err(e) => {
                    debug!(%peer, "bad request stream: {e}");
                    break;
                }
            };
            let response = match request {
                Ok(request) => {
                    let served = lock(&self.inner.served);
                    match served.get(&request.topic) {
                        Some(s) if s.version >= request.min_version => {
                            ManifestResponse::Found(s.signed.clone())
                        }
                        _ => ManifestResponse::None,
                    }
                }
                Err(e) => {
                    debug!(%peer, "refusing a request: {e}");
                    connection.close(1u32.into(), b"bad request");
                    break;
                }
            };
            if send.write_all(&response.encode()).await.is_err() || send.finish().is_err() {
                break;
            }
        }
        Ok(())
    }
}
