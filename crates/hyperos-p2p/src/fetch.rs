//! Opening an archive from peers and reading verified byte ranges of it.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyperos_archive::{
    ArchiveLink, BlobHash, ChunkError, ChunkIndex, ChunkLayout, LastSeen, Manifest, ManifestError,
    SignedManifest,
};
use iroh::endpoint::Connection;
use iroh::{EndpointAddr, EndpointId};
use iroh_blobs::api::remote::GetProgress;
use iroh_blobs::protocol::{ChunkRanges, ChunkRangesExt, GetRequest};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, instrument, warn};

use crate::discovery::Found;
use crate::node::{Inner, Node, NodeError, archive_tag, iroh_hash, lock, now_unix, store_err};
use crate::progress::Counters;
use crate::ticket::PeerTicket;
use crate::wire::{self, ManifestRequest, ManifestResponse};

/// How many range requests one read keeps in flight.
const MAX_PARALLEL: usize = 16;

/// How many range requests the background prefetch keeps in flight.
pub const PREFETCH_PARALLEL: usize = 2;

/// How much of the image one prefetch step fetches.
const PREFETCH_PIECE: u64 = 1 << 20;

/// Counts a foreground read while it runs.
struct Foreground<'a>(&'a AtomicUsize);

impl<'a> Foreground<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Foreground<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a lookup on the DHT and the LAN keeps adding peers.
const LOOKUP_WINDOW: Duration = Duration::from_secs(120);

/// After the first peer answered with a manifest that verifies, how long
/// `open` waits for other answers (a newer version may be among them).
const ANSWER_GRACE: Duration = Duration::from_millis(700);

/// How long a peer that could not be reached goes last in line; doubled
/// for each failure in a row, up to [`MAX_REST`].
const UNREACHABLE_REST: Duration = Duration::from_secs(2);

/// The longest a failing peer goes last in line.
const MAX_REST: Duration = Duration::from_secs(60);

/// Errors opening or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A node or store operation failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// No peer and no local copy had a manifest that verified.
    #[error(
        "no peer had a valid manifest of archive {archive} (tried {tried}; last problem: {last}); check the key, or give the ticket of a peer that has it (--peer)"
    )]
    NoManifest {
        archive: hyperos_archive::ArchiveKey,
        tried: usize,
        last: String,
    },
    /// A peer sent a manifest that did not verify.
    #[error("peer {peer} sent a manifest that was refused: {source}")]
    BadManifest {
        peer: EndpointId,
        #[source]
        source: ManifestError,
    },
    /// The version the link asks for is not the one peers have.
    #[error(
        "the link asks for version {wanted}, but the newest verified version is {found}; open the latest version (dat://<key>) or find a peer that has version {wanted}"
    )]
    VersionUnavailable { wanted: u64, found: u64 },
    /// The chunk index or a range is wrong.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// No peer is left to ask (none given, or all dropped for bad data).
    #[error(
        "no peer is left to fetch from; give a peer ticket (--peer) of a node that has the archive"
    )]
    NoPeers,
    /// Every peer left sent data that failed verification, and was dropped.
    #[error(
        "every peer that was asked sent data failing verification ({dropped} dropped), so nothing was returned; give a peer ticket (--peer) of a node you trust to have the archive"
    )]
    BadPeers { dropped: usize },
    /// The read did not complete within the deadline.
    #[error(
        "reading {len} bytes at offset {offset} did not complete within {deadline:?}: no peer delivered the data; check the network and the peers"
    )]
    Timeout {
        offset: u64,
        len: u64,
        deadline: Duration,
    },
}

/// One peer as an archive sees it.
#[derive(Debug, Clone)]
struct Peer {
    addr: EndpointAddr,
}

/// How a peer fared lately: failures in a row, and until when the other
/// peers are asked first.
#[derive(Debug, Clone, Copy)]
struct Health {
    failures: u32,
    rest_until: Instant,
}

/// Held while one granule is fetched (see `Archive::granule_lock`).
type GranuleLock = tokio::sync::Mutex<()>;

/// The granules being fetched, by chunk hash and start.
type InFlight = HashMap<(BlobHash, u64), Weak<GranuleLock>>;

/// What one manifest request came to: the peer and its answer.
type Probe = (EndpointAddr, Result<ManifestResponse, String>);

/// An open archive: a verified manifest and chunk index, and the peers to
/// fetch from. Reads are verified before they return.
#[derive(Debug, Clone)]
pub struct Archive {
    inner: Arc<Inner>,
    manifest: Arc<Manifest>,
    signed: SignedManifest,
    layout: ChunkLayout,
    index: Arc<ChunkIndex>,
    peers: Arc<Mutex<Vec<Peer>>>,
    /// Peers that failed lately (absent: healthy).
    health: Arc<Mutex<HashMap<EndpointId, Health>>>,
    /// How many peers were dropped for sending bad data.
    dropped: Arc<std::sync::atomic::AtomicUsize>,
    /// Foreground reads in progress (prefetch waits for none).
    foreground: Arc<AtomicUsize>,
    /// Granules being fetched, by chunk and start: a second read of one
    /// waits for the first instead of fetching it again.
    in_flight: Arc<Mutex<InFlight>>,
    deadline: Duration,
}

impl Node {
    /// Opens an archive: asks every peer for its manifest, verifies each
    /// against the key and the persisted last-seen version (refusing older
    /// versions, also after a restart), takes the newest, then gets and
    /// verifies the chunk index. With no peer answering, a manifest kept from
    /// an earlier session is used if it still verifies, so a warm cache reads
    /// with no network.
    #[instrument(skip_all, fields(archive = %link.key))]
    pub async fn open(
        &self,
        link: ArchiveLink,
        peers: &[PeerTicket],
    ) -> Result<Archive, FetchError> {
        let inner = self.inner.clone();
        let key = link.key;
        let topic = key.discovery_topic();
        let last_seen = inner.state.seen(&topic).map_err(NodeError::from)?;
        let min_version = link
            .version
            .unwrap_or(0)
            .max(last_seen.map_or(0, |s| s.version));
        let now = now_unix()?;

        let mut good: Vec<Peer> = Vec::new();
        let mut best: Option<(SignedManifest, Manifest)> = None;
        let mut last_problem = String::from(if inner.discovery.enabled() {
            "no peer given, and none found on the DHT or the LAN"
        } else {
            "no peer given"
        });
        let consider = |signed: SignedManifest,
                        best: &mut Option<(SignedManifest, Manifest)>,
                        seen: Option<LastSeen>|
         -> Result<(), ManifestError> {
            let manifest = signed.verify(&key, now, seen)?;
            if best
                .as_ref()
                .is_none_or(|(_, b)| b.version < manifest.version)
            {
                *best = Some((signed, manifest));
            }
            Ok(())
        };
        // Every candidate (tickets, then peers found on the DHT or the LAN)
        // is asked at once, as it appears: a dead peer (a stale DHT record,
        // a ticket of a stopped node) costs no time while another answers.
        // With no ticket given, wait up to the deadline for the first; once
        // a peer has answered with a manifest that verifies, wait a moment
        // (`ANSWER_GRACE`) for others that may have a newer version. Peers
        // still unanswered then are left to a background task that adds
        // them when they answer.
        let own_id = inner.endpoint.id();
        let mut found = inner
            .discovery
            .enabled()
            .then(|| inner.discovery.lookup(&key, LOOKUP_WINDOW));
        let request = ManifestRequest {
            topic: *topic.as_bytes(),
            min_version,
        };
        let mut asked: HashSet<EndpointId> = HashSet::from([own_id]);
        let mut asks = JoinSet::new();
        for peer in peers {
            if asked.insert(peer.id) {
                asks.spawn(probe(inner.clone(), peer.endpoint_addr(), request));
            }
        }
        let wait_for_lookup = peers.is_empty();
        let give_up = tokio::time::Instant::now() + inner.deadline;
        let mut settle: Option<tokio::time::Instant> = None;
        let mut unreachable: Vec<Peer> = Vec::new();
        loop {
            if settle.is_none() && best.is_some() && !good.is_empty() {
                settle = Some(tokio::time::Instant::now() + ANSWER_GRACE);
            }
            if asks.is_empty() && !(wait_for_lookup && found.is_some()) {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(settle.unwrap_or(give_up)) => break,
                Some(joined) = asks.join_next(), if !asks.is_empty() => {
                    let Ok((addr, answer)) = joined else { continue };
                    match answer {
                        Ok(ManifestResponse::Found(signed)) => {
                            match consider(signed, &mut best, last_seen) {
                                Ok(()) => good.push(Peer { addr }),
                                Err(source) => {
                                    let e = FetchError::BadManifest {
                                        peer: addr.id,
                                        source,
                                    };
                                    warn!("{e}");
                                    last_problem = e.to_string();
                                }
                            }
                        }
                        // Has no (new enough) manifest, but may hold chunks.
                        Ok(ManifestResponse::None) => good.push(Peer { addr }),
                        Err(e) => {
                            debug!(peer = %addr.id, "manifest request failed: {e}");
                            last_problem = format!("peer {}: {e}", addr.id);
                            unreachable.push(Peer { addr });
                        }
                    }
                }
                next = next_found(&mut found) => match next {
                    Some(Found::Peer(t)) => {
                        if asked.insert(t.id) {
                            debug!(peer = %t.id, "found a peer");
                            asks.spawn(probe(inner.clone(), t.endpoint_addr(), request));
                        }
                    }
                    Some(Found::Manifest(m)) => {
                        if let Err(e) = consider(m, &mut best, last_seen) {
                            last_problem = format!("the manifest found on the DHT: {e}");
                        }
                    }
                    None => found = None,
                },
            }
        }
        let tried = asked.len() - 1;
        if best.is_none()
            && let Some(bytes) = inner.state.manifest(&topic).map_err(NodeError::from)?
            && let Ok(signed) = SignedManifest::decode(&bytes)
            && let Err(e) = consider(signed, &mut best, last_seen)
        {
            last_problem = format!("the kept manifest: {e}");
        }
        let Some((signed, manifest)) = best else {
            return Err(FetchError::NoManifest {
                archive: key,
                tried,
                last: last_problem,
            });
        };
        if let Some(wanted) = link.version
            && wanted != manifest.version
        {
            return Err(FetchError::VersionUnavailable {
                wanted,
                found: manifest.version,
            });
        }
        let seen = signed.last_seen(&manifest);
        if last_seen != Some(seen) {
            inner
                .state
                .set_seen(&topic, seen)
                .map_err(NodeError::from)?;
        }
        inner
            .state
            .set_manifest(&topic, &signed.encode())
            .map_err(NodeError::from)?;
        inner.serve(signed.clone(), &manifest);
        Counters::add(
            &inner.counters.peers_known,
            (good.len() + unreachable.len()) as u64,
        );

        let layout = manifest.layout()?;
        let archive = Archive {
            inner: inner.clone(),
            manifest: Arc::new(manifest),
            signed,
            layout,
            index: Arc::new(ChunkIndex::default()),
            peers: Arc::new(Mutex::new(good)),
            health: Arc::default(),
            dropped: Arc::default(),
            foreground: Arc::default(),
            in_flight: Arc::default(),
            deadline: inner.deadline,
        };
        // Peers that did not answer stay, last in line (a ticket's node may
        // come back), until an attempt at them succeeds.
        for peer in unreachable {
            archive.add_unreachable(peer);
        }
        // Answers still to come, and peers found from now on, join in the
        // background (also while the index is fetched).
        if !asks.is_empty() || found.is_some() {
            let archive = archive.clone();
            tokio::spawn(async move {
                archive.join_later(asks, found, asked, request).await;
            });
        }
        let index = tokio::time::timeout(archive.deadline, archive.fetch_index())
            .await
            .map_err(|_| FetchError::Timeout {
                offset: 0,
                len: 0,
                deadline: archive.deadline,
            })??;
        inner
            .store
            .tags()
            .set(
                archive_tag(&key),
                iroh_blobs::HashAndFormat::hash_seq(iroh_hash(&archive.manifest.root_hash)),
            )
            .await
            .map_err(|e| store_err("tag the archive", e))?;
        info!(
            version = archive.manifest.version,
            chunks = index.len(),
            "archive open"
        );
        let archive = Archive {
            index: Arc::new(index),
            ..archive
        };
        Ok(archive)
    }
}

/// Asks one peer for the latest manifest over the HyperOS archive protocol.
async fn ask_manifest(
    inner: &Inner,
    addr: &EndpointAddr,
    request: ManifestRequest,
) -> Result<ManifestResponse, String> {
    Counters::add(&inner.counters.requests, 1);
    let conn = inner
        .endpoint
        .connect(addr.clone(), wire::ALPN)
        .await
        .map_err(|e| format!("could not connect: {e}"))?;
    let result = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&request.encode())
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let bytes = recv
            .read_to_end(wire::MAX_RESPONSE_LEN)
            .await
            .map_err(|e| e.to_string())?;
        ManifestResponse::decode(&bytes).map_err(|e| e.to_string())
    }
    .await;
    conn.close(0u32.into(), b"done");
    if result.is_err() {
        Counters::add(&inner.counters.failed_requests, 1);
    }
    result
}

/// Asks one peer for its manifest, giving up after the deadline.
async fn probe(inner: Arc<Inner>, addr: EndpointAddr, request: ManifestRequest) -> Probe {
    let answer = tokio::time::timeout(inner.deadline, ask_manifest(&inner, &addr, request))
        .await
        .unwrap_or_else(|_| Err("did not answer in time".to_owned()));
    (addr, answer)
}

/// The next thing a lookup found; never, once there is no lookup.
async fn next_found(found: &mut Option<mpsc::Receiver<Found>>) -> Option<Found> {
    match found {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What happened to one range request.
enum Attempt {
    Done(u64),
    /// The peer could not be reached or did not have the data.
    Failed(String),
    /// The peer sent data that failed verification: drop it.
    BadData(String),
}

impl Archive {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The signed manifest (to relay to other peers).
    pub fn signed_manifest(&self) -> &SignedManifest {
        &self.signed
    }

    /// The verified chunk index.
    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    /// How many peers are left (peers that sent bad data are dropped).
    pub fn peer_count(&self) -> usize {
        lock(&self.peers).len()
    }

    /// How many peers were dropped because their data failed verification.
    pub fn dropped_peers(&self) -> usize {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds a peer to fetch from.
    pub fn add_peer(&self, peer: &PeerTicket) {
        let mut peers = lock(&self.peers);
        if !peers.iter().any(|p| p.addr.id == peer.id) {
            peers.push(Peer {
                addr: peer.endpoint_addr(),
            });
            Counters::add(&self.inner.counters.peers_known, 1);
        }
    }

    /// Adds a peer that did not answer: it goes last in line until an
    /// attempt at it succeeds.
    fn add_unreachable(&self, peer: Peer) {
        let id = peer.addr.id;
        {
            let mut peers = lock(&self.peers);
            if !peers.iter().any(|p| p.addr.id == id) {
                peers.push(peer);
            }
        }
        self.failed(id);
    }

    /// Adds, as their answers come, the peers `open` did not wait for, and
    /// asks each peer the lookup finds from now on (each once): a peer that
    /// answers joins, one that does not joins last in line.
    async fn join_later(
        self,
        mut asks: JoinSet<Probe>,
        mut found: Option<mpsc::Receiver<Found>>,
        mut asked: HashSet<EndpointId>,
        request: ManifestRequest,
    ) {
        while !(asks.is_empty() && found.is_none()) {
            tokio::select! {
                Some(joined) = asks.join_next(), if !asks.is_empty() => {
                    let Ok((addr, answer)) = joined else { continue };
                    let now = now_unix().unwrap_or(0);
                    match answer {
                        Ok(ManifestResponse::Found(signed))
                            if signed.verify(&self.manifest.archive, now, None).is_err() =>
                        {
                            warn!(peer = %addr.id, "not using a peer whose manifest was refused");
                        }
                        Ok(_) => {
                            debug!(peer = %addr.id, "a peer joined");
                            let mut peers = lock(&self.peers);
                            if !peers.iter().any(|p| p.addr.id == addr.id) {
                                peers.push(Peer { addr });
                                Counters::add(&self.inner.counters.peers_known, 1);
                            }
                        }
                        Err(e) => {
                            debug!(peer = %addr.id, "a peer found did not answer: {e}");
                            Counters::add(&self.inner.counters.peers_known, 1);
                            self.add_unreachable(Peer { addr });
                        }
                    }
                }
                next = next_found(&mut found) => match next {
                    Some(Found::Peer(t)) => {
                        if asked.insert(t.id) {
                            debug!(peer = %t.id, "found a peer");
                            asks.spawn(probe(self.inner.clone(), t.endpoint_addr(), request));
                        }
                    }
                    Some(Found::Manifest(_)) => {}
                    None => found = None,
                },
            }
        }
    }

    async fn fetch_index(&self) -> Result<ChunkIndex, FetchError> {
        let root = self.manifest.root_hash;
        let len = self.layout.chunk_count() * 32;
        if len > 0 {
            self.ensure_local(root, 0..len, 0).await?;
        }
        let bytes = self
            .inner
            .store
            .blobs()
            .export_ranges(iroh_hash(&root), 0..len)
            .concatenate()
            .await
            .map_err(|e| store_err("read the chunk index", e))?;
        Ok(ChunkIndex::decode_verified(&bytes, &self.layout, &root)?)
    }

    /// Reads `len` bytes at `offset` of the image (clipped to its end):
    /// fetches only the granules not yet in the store, from several peers at
    /// once, verifies them against the chunk hashes before anything is
    /// returned, and fails with [`FetchError::Timeout`] after the deadline.
    #[instrument(skip(self), fields(archive = %self.manifest.archive))]
    pub async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        let end = offset.saturating_add(len).min(self.layout.image_len());
        let start = offset.min(end);
        let _foreground = Foreground::enter(&self.foreground);
        tokio::time::timeout(self.deadline, self.read_range(start, end))
            .await
            .map_err(|_| FetchError::Timeout {
                offset,
                len,
                deadline: self.deadline,
            })?
    }

    /// Fetches `ranges` of the image in the background, at low priority:
    /// at most [`PREFETCH_PARALLEL`] requests in flight, and none started
    /// while a foreground [`Archive::read`] is pending. Returns the bytes
    /// made local; a piece that fails is skipped (a read fetches it later).
    #[instrument(skip_all, fields(archive = %self.manifest.archive))]
    pub async fn prefetch(&self, ranges: &[Range<u64>]) -> u64 {
        let image_len = self.layout.image_len();
        let mut done = 0u64;
        for range in ranges {
            let mut at = range.start.min(image_len);
            let end = range.end.min(image_len);
            while at < end {
                let piece = at..(at + PREFETCH_PIECE).min(end);
                while self.foreground.load(Ordering::Relaxed) > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let fetched = tokio::time::timeout(
                    self.deadline,
                    self.fetch_range(piece.start, piece.end, PREFETCH_PARALLEL),
                )
                .await;
                match fetched {
                    Ok(Ok(_)) => done += piece.end - piece.start,
                    Ok(Err(e)) => debug!(?piece, "prefetch skipped a piece: {e}"),
                    Err(_) => debug!(?piece, "prefetch skipped a piece: no peer in time"),
                }
                at = piece.end;
            }
        }
        info!(bytes = done, "prefetch done");
        done
    }

    async fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, FetchError> {
        let cached = self.fetch_range(start, end, MAX_PARALLEL).await?;
        Counters::add(&self.inner.counters.bytes_from_cache, cached);
        self.export_range(start, end).await
    }

    /// Makes `start..end` of the image local with up to `parallel` requests
    /// in flight; returns how many of its bytes were local already.
    async fn fetch_range(&self, start: u64, end: u64, parallel: usize) -> Result<u64, FetchError> {
        let spans = self.layout.spans(start..end)?;
        let granularity = u64::from(self.layout.chunking().fetch_granularity);
        let mut jobs = JoinSet::new();
        let mut job = 0usize;
        let mut cached = 0u64;
        for span in &spans {
            let hash = self.chunk_hash(span.chunk)?;
            let have = self.local_ranges(hash).await?;
            let granules = span.granules(self.layout.chunking().fetch_granularity);
            let mut at = granules.start;
            while at < granules.end {
                let g = at..(at + granularity).min(granules.end);
                if have.is_superset(&ChunkRanges::bytes(g.clone())) {
                    let used =
                        g.end.min(span.range_in_chunk.end) - g.start.max(span.range_in_chunk.start);
                    cached += used;
                } else {
                    if jobs.len() >= parallel
                        && let Some(done) = jobs.join_next().await
                    {
                        flatten(done)?;
                    }
                    let this = self.clone();
                    let first_peer = job;
                    jobs.spawn(async move { this.ensure_local(hash, g, first_peer).await });
                    job += 1;
                }
                at += granularity;
            }
        }
        while let Some(done) = jobs.join_next().await {
            flatten(done)?;
        }
        Ok(cached)
    }

    /// The verified bytes `start..end` of the image, all local.
    async fn export_range(&self, start: u64, end: u64) -> Result<Vec<u8>, FetchError> {
        let spans = self.layout.spans(start..end)?;
        let mut out = Vec::with_capacity((end - start) as usize);
        for span in spans {
            let hash = self.chunk_hash(span.chunk)?;
            let bytes = self
                .inner
                .store
                .blobs()
                .export_ranges(iroh_hash(&hash), span.range_in_chunk.clone())
                .concatenate()
                .await
                .map_err(|e| store_err("read a chunk", e))?;
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    fn chunk_hash(&self, chunk: u64) -> Result<BlobHash, FetchError> {
        self.index
            .get(chunk)
            .ok_or(FetchError::Chunk(ChunkError::OutOfRange {
                start: chunk,
                end: chunk,
                image_len: self.layout.image_len(),
            }))
    }

    async fn local_ranges(&self, hash: BlobHash) -> Result<ChunkRanges, FetchError> {
        let bitfield = self
            .inner
            .store
            .blobs()
            .observe(iroh_hash(&hash))
            .await
            .map_err(|e| store_err("look up a chunk", e))?;
        Ok(bitfield.ranges)
    }

    /// The lock of the granule of chunk `hash` starting at `start`, shared
    /// by every read of it in flight (the map keeps only live ones).
    fn granule_lock(&self, hash: BlobHash, start: u64) -> Arc<GranuleLock> {
        let mut in_flight = lock(&self.in_flight);
        if let Some(held) = in_flight.get(&(hash, start)).and_then(Weak::upgrade) {
            return held;
        }
        in_flight.retain(|_, granule| granule.strong_count() > 0);
        let granule = Arc::new(GranuleLock::new(()));
        in_flight.insert((hash, start), Arc::downgrade(&granule));
        granule
    }

    /// Makes `range` of blob `hash` local: asks the peers in turn, starting
    /// with peer `first_peer` (so parallel requests spread over the peers),
    /// dropping peers that send bad data, and going round again after a
    /// pause until it succeeds (the caller's deadline ends it).
    async fn ensure_local(
        &self,
        hash: BlobHash,
        range: std::ops::Range<u64>,
        first_peer: usize,
    ) -> Result<(), FetchError> {
        let wanted = ChunkRanges::bytes(range.clone());
        // One fetch per granule at a time; whoever waited finds it local.
        let granule = self.granule_lock(hash, range.start);
        let _fetching = granule.lock().await;
        let mut pause = Duration::from_millis(50);
        loop {
            if self.local_ranges(hash).await?.is_superset(&wanted) {
                return Ok(());
            }
            let peers = self.peers_in_turn(first_peer);
            if peers.is_empty() {
                let dropped = self.dropped_peers();
                return Err(if dropped > 0 {
                    FetchError::BadPeers { dropped }
                } else {
                    FetchError::NoPeers
                });
            }
            for peer in &peers {
                let attempt = tokio::time::timeout(
                    self.attempt_timeout(),
                    self.attempt(peer, hash, wanted.clone()),
                )
                .await
                .unwrap_or_else(|_| Attempt::Failed("no answer in time".into()));
                match attempt {
                    Attempt::Done(bytes) => {
                        Counters::add(&self.inner.counters.bytes_fetched, bytes);
                        lock(&self.health).remove(&peer.addr.id);
                        if self.local_ranges(hash).await?.is_superset(&wanted) {
                            return Ok(());
                        }
                        debug!(peer = %peer.addr.id, %hash, "peer does not have the range");
                        self.rest(peer, pause);
                    }
                    Attempt::Failed(e) => {
                        Counters::add(&self.inner.counters.failed_requests, 1);
                        debug!(peer = %peer.addr.id, %hash, "range request failed: {e}");
                        lock(&self.inner.connections).remove(&peer.addr.id);
                        self.failed(peer.addr.id);
                    }
                    Attempt::BadData(e) => {
                        Counters::add(&self.inner.counters.failed_requests, 1);
                        warn!(peer = %peer.addr.id, %hash, "dropping a peer that sent data failing verification: {e}");
                        lock(&self.inner.connections).remove(&peer.addr.id);
                        let mut peers = lock(&self.peers);
                        let before = peers.len();
                        peers.retain(|p| p.addr.id != peer.addr.id);
                        if peers.len() < before {
                            self.dropped
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            self.inner
                                .counters
                                .peers_known
                                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// The peers to try, starting at `first` (so parallel requests spread
    /// over the peers): peers in good health first, then peers whose last
    /// attempt failed but whose rest is over, then resting peers, the one
    /// resting longest last. A peer that failed is so never the first try
    /// while another peer is in good health: a dead address costs a read
    /// nothing unless every other peer fails too.
    fn peers_in_turn(&self, first: usize) -> Vec<Peer> {
        let peers = lock(&self.peers).clone();
        if peers.is_empty() {
            return peers;
        }
        let now = Instant::now();
        let health = lock(&self.health);
        let rank = |p: &Peer| match health.get(&p.addr.id) {
            None => (0, None),
            Some(h) if h.rest_until <= now => (u8::from(h.failures > 0), None),
            Some(h) => (2, Some(h.rest_until)),
        };
        let mut in_turn: Vec<Peer> = (0..peers.len())
            .map(|i| peers[(first + i) % peers.len()].clone())
            .collect();
        // Stable: the rotation holds within each rank.
        in_turn.sort_by_key(|p| rank(p));
        in_turn
    }

    /// Lets the other peers go first for `time`.
    fn rest(&self, peer: &Peer, time: Duration) {
        let mut health = lock(&self.health);
        let entry = health.entry(peer.addr.id).or_insert(Health {
            failures: 0,
            rest_until: Instant::now(),
        });
        entry.rest_until = entry.rest_until.max(Instant::now() + time);
    }

    /// Records that a peer could not be reached or did not answer in time:
    /// it goes last in line for [`UNREACHABLE_REST`], twice as long after
    /// each failure in a row, so a dead address costs one timeout now and
    /// then rather than one per read.
    fn failed(&self, id: EndpointId) {
        let mut health = lock(&self.health);
        let entry = health.entry(id).or_insert(Health {
            failures: 0,
            rest_until: Instant::now(),
        });
        entry.failures = entry.failures.saturating_add(1);
        let rest = UNREACHABLE_REST
            .saturating_mul(1 << (entry.failures - 1).min(6))
            .min(MAX_REST);
        entry.rest_until = Instant::now() + rest;
    }

    /// How long one attempt at one peer may take before the next peer is
    /// tried: a quarter of the deadline, at least half a second.
    fn attempt_timeout(&self) -> Duration {
        (self.deadline / 4).max(Duration::from_millis(500))
    }

    async fn connection(&self, peer: &Peer) -> Result<Connection, String> {
        if let Some(conn) = lock(&self.inner.connections).get(&peer.addr.id)
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let conn = self
            .inner
            .endpoint
            .connect(peer.addr.clone(), iroh_blobs::ALPN)
            .await
            .map_err(|e| format!("could not connect: {e}"))?;
        lock(&self.inner.connections).insert(peer.addr.id, conn.clone());
        Ok(conn)
    }

    async fn attempt(&self, peer: &Peer, hash: BlobHash, ranges: ChunkRanges) -> Attempt {
        Counters::add(&self.inner.counters.requests, 1);
        let conn = match self.connection(peer).await {
            Ok(conn) => conn,
            Err(e) => return Attempt::Failed(e),
        };
        let request = GetRequest::blob_ranges(iroh_hash(&hash), ranges);
        let progress: GetProgress = self.inner.store.remote().execute_get(conn, request);
        match progress.complete().await {
            Ok(stats) => Attempt::Done(stats.payload_bytes_read),
            Err(e) => {
                let text = format!("{e:#}");
                if is_verification_failure(&e) {
                    Attempt::BadData(text)
                } else {
                    Attempt::Failed(text)
                }
            }
        }
    }

    /// Fetches every chunk not yet in the store (for `seed`), from several
    /// peers at once, with the deadline applied to each chunk. The node
    /// serves what it has all along.
    #[instrument(skip(self), fields(archive = %self.manifest.archive))]
    pub async fn fetch_all(&self) -> Result<(), FetchError> {
        let mut distinct: Vec<(BlobHash, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for chunk in 0..self.layout.chunk_count() {
            let hash = self.chunk_hash(chunk)?;
            if seen.insert(hash) {
                let len = self.layout.chunk_len(chunk).unwrap_or(0);
                distinct.push((hash, len));
            }
        }
        let mut jobs = JoinSet::new();
        for (n, (hash, len)) in distinct.into_iter().enumerate() {
            if jobs.len() >= MAX_PARALLEL
                && let Some(done) = jobs.join_next().await
            {
                flatten(done)?;
            }
            let this = self.clone();
            jobs.spawn(async move {
                tokio::time::timeout(this.deadline, this.ensure_local(hash, 0..len, n))
                    .await
                    .map_err(|_| FetchError::Timeout {
                        offset: 0,
                        len,
                        deadline: this.deadline,
                    })?
            });
        }
        while let Some(done) = jobs.join_next().await {
            flatten(done)?;
        }
        Ok(())
    }
}

fn flatten(
    joined: Result<Result<(), FetchError>, tokio::task::JoinError>,
) -> Result<(), FetchError> {
    joined.map_err(|e| FetchError::Node(store_err("run a fetch task", e)))?
}

/// Whether a get failed because the peer's data did not verify (as opposed
/// to the peer being unreachable or lacking the data).
fn is_verification_failure(e: &iroh_blobs::get::GetError) -> bool {
    use iroh_blobs::get::fsm::DecodeError;
    matches!(
        e,
        iroh_blobs::get::GetError::Decode {
            source: DecodeError::LeafHashMismatch { .. } | DecodeError::ParentHashMismatch { .. },
            ..
        }
    )
}
