//! Peers that send bad data. A lying peer here is a proxy in front of an
//! honest node: it relays the archive protocol and iroh-blobs' protocol
//! (`/iroh-bytes/4`) verbatim until told to lie, then damages every blob
//! response (same hash asked, other bytes sent). Readers must return only
//! verified bytes, take them from an honest peer, drop the liar, and never
//! buffer more than the granules they asked for.

// Helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyperos_archive::{ArchiveLink, ArchiveSecret, Chunking, FsType};
use hyperos_p2p::wire;
use hyperos_p2p::{FetchError, Node, NodeConfig, PeerTicket, PublishOptions};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use rand::RngCore;

const KIB: usize = 1024;
const GRANULE: u64 = 16 * KIB as u64;

/// How a liar damages a blob response (after its 8-byte size header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lie {
    /// One bit of the last byte flipped (the last leaf no longer hashes).
    Flip,
    /// Every byte after the header replaced by random bytes.
    Substitute,
    /// Only the first half of the response, then the end of the stream.
    Truncate,
    /// The honest response followed by 64 MiB of junk.
    Oversize,
}

#[derive(Debug, Default)]
struct Seen {
    /// Blob requests the liar received.
    blob_requests: AtomicU64,
    /// Junk bytes the reader's stream accepted (Oversize).
    junk_accepted: AtomicU64,
}

#[derive(Debug, Clone)]
struct Proxy {
    endpoint: iroh::Endpoint,
    upstream: iroh::EndpointAddr,
    alpn: &'static [u8],
    lie: Lie,
    lying: Arc<AtomicBool>,
    seen: Arc<Seen>,
}

impl ProtocolHandler for Proxy {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        let Ok(up) = self
            .endpoint
            .connect(self.upstream.clone(), self.alpn)
            .await
        else {
            return Ok(());
        };
        while let Ok((send, recv)) = connection.accept_bi().await {
            let (this, up) = (self.clone(), up.clone());
            tokio::spawn(async move { this.relay(up, send, recv).await });
        }
        Ok(())
    }
}

impl Proxy {
    async fn relay(&self, up: Connection, mut send: SendStream, mut recv: RecvStream) {
        let Ok(request) = recv.read_to_end(64 * KIB).await else {
            return;
        };
        let Ok((mut up_send, mut up_recv)) = up.open_bi().await else {
            return;
        };
        if up_send.write_all(&request).await.is_err() || up_send.finish().is_err() {
            return;
        }
        let Ok(mut response) = up_recv.read_to_end(16 * 1024 * KIB).await else {
            return;
        };
        let blobs = self.alpn == iroh_blobs::ALPN;
        if blobs {
            self.seen.blob_requests.fetch_add(1, Ordering::Relaxed);
        }
        let lie = (blobs && self.lying.load(Ordering::Relaxed)).then_some(self.lie);
        match lie {
            Some(Lie::Flip) => {
                if let Some(last) = response.last_mut() {
                    *last ^= 1;
                }
            }
            Some(Lie::Substitute) => {
                if response.len() > 8 {
                    rand::thread_rng().fill_bytes(&mut response[8..]);
                }
            }
            Some(Lie::Truncate) => response.truncate(response.len() / 2),
            Some(Lie::Oversize) | None => {}
        }
        if send.write_all(&response).await.is_err() {
            return;
        }
        if lie == Some(Lie::Oversize) {
            let junk = vec![0xA5u8; 64 * KIB];
            for _ in 0..1024 {
                match tokio::time::timeout(Duration::from_secs(2), send.write_all(&junk)).await {
                    Ok(Ok(())) => {
                        self.seen
                            .junk_accepted
                            .fetch_add(junk.len() as u64, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
        }
        let _ = send.finish();
    }
}

/// A liar in front of `honest`: its own endpoint and id, relaying both
/// protocols, lying on blob responses once `lying` is set.
struct Liar {
    router: Router,
    ticket: PeerTicket,
    lying: Arc<AtomicBool>,
    seen: Arc<Seen>,
}

impl Liar {
    async fn start(honest: &PeerTicket, lie: Lie) -> Liar {
        let endpoint = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
            .relay_mode(iroh::RelayMode::Disabled)
            .clear_ip_transports()
            .bind_addr("127.0.0.1:0")
            .unwrap()
            .bind()
            .await
            .unwrap();
        let ticket = PeerTicket {
            id: endpoint.id(),
            addrs: endpoint.bound_sockets(),
        };
        let lying = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let proxy = |alpn| Proxy {
            endpoint: endpoint.clone(),
            upstream: honest.endpoint_addr(),
            alpn,
            lie,
            lying: lying.clone(),
            seen: seen.clone(),
        };
        let router = Router::builder(endpoint.clone())
            .accept(wire::ALPN, proxy(wire::ALPN))
            .accept(iroh_blobs::ALPN, proxy(iroh_blobs::ALPN))
            .spawn();
        Liar {
            router,
            ticket,
            lying,
            seen,
        }
    }

    fn lie(&self) {
        self.lying.store(true, Ordering::Relaxed);
    }

    fn blob_requests(&self) -> u64 {
        self.seen.blob_requests.load(Ordering::Relaxed)
    }
}

fn config(dir: &Path, deadline: Duration) -> NodeConfig {
    NodeConfig {
        bind: Some("127.0.0.1:0".parse().unwrap()),
        deadline,
        ..NodeConfig::new(dir)
    }
}

/// An honest node sharing a random image of `len` bytes (64 KiB chunks,
/// 16 KiB granules).
async fn honest(dir: &Path, len: usize) -> (Node, ArchiveLink, Vec<u8>, PeerTicket) {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    let image = dir.join("img");
    std::fs::write(&image, &data).unwrap();
    let node = Node::spawn(config(&dir.join("honest"), Duration::from_secs(5)))
        .await
        .unwrap();
    let options = PublishOptions {
        chunking: Chunking {
            chunk_size: 64 * KIB as u32,
            fetch_granularity: GRANULE as u32,
        },
        ..PublishOptions::new(FsType::Ext4)
    };
    let secret = ArchiveSecret::generate().unwrap();
    let (_, link) = node.publish(&image, &secret, options).await.unwrap();
    let ticket = node.ticket().await;
    (node, ArchiveLink::latest(link.key), data, ticket)
}

/// Next to an honest peer, a peer that sends damaged data: every read
/// returns the right bytes, the liar is dropped after its first bad answer
/// and not asked again.
async fn honest_wins_over(lie: Lie) {
    let tmp = tempfile::tempdir().unwrap();
    let len = 1024 * KIB + 333;
    let (a, link, data, a_ticket) = honest(tmp.path(), len).await;
    let liar = Liar::start(&a_ticket, lie).await;
    let b = Node::spawn(config(&tmp.path().join("b"), Duration::from_secs(5)))
        .await
        .unwrap();
    // The liar first, so the first requests go to it.
    let archive = b
        .open(link, &[liar.ticket.clone(), a_ticket])
        .await
        .unwrap();
    assert_eq!(archive.peer_count(), 2);
    liar.lie();
    let before = b.progress();
    let got = archive.read(1000, 300 * KIB as u64).await.unwrap();
    assert!(got == data[1000..1000 + 300 * KIB], "{lie:?}: wrong bytes");
    let p = b.progress();
    assert!(
        liar.blob_requests() > 0,
        "{lie:?}: the liar was never asked"
    );
    assert!(p.failed_requests > before.failed_requests, "{lie:?}: {p:?}");
    // Nothing beyond the granules asked for was taken in: 300 KiB at
    // offset 1000 spans 20 granules.
    assert!(
        p.bytes_fetched - before.bytes_fetched <= 20 * GRANULE,
        "{lie:?}: {p:?}"
    );
    match lie {
        Lie::Flip | Lie::Substitute => {
            assert_eq!(archive.peer_count(), 1, "{lie:?}: the liar was not dropped");
            assert_eq!(archive.dropped_peers(), 1);
            assert_eq!(p.peers_known, 1, "{p:?}");
            // Dropped: not asked again.
            let asked = liar.blob_requests();
            let got = archive
                .read(700 * KIB as u64, 200 * KIB as u64)
                .await
                .unwrap();
            assert!(got == data[700 * KIB..900 * KIB]);
            assert_eq!(
                liar.blob_requests(),
                asked,
                "{lie:?}: a dropped peer was asked"
            );
        }
        // Short data may mean the peer lacks it: it rests, not dropped.
        Lie::Truncate | Lie::Oversize => {}
    }
    // Everything reads right in the end.
    let all = archive.read(0, len as u64).await.unwrap();
    assert!(all == data, "{lie:?}: wrong bytes");
    liar.router.shutdown().await.unwrap();
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_comes_from_the_honest_peer_and_the_liar_is_dropped() {
    honest_wins_over(Lie::Flip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substituted_data_comes_from_the_honest_peer_and_the_liar_is_dropped() {
    honest_wins_over(Lie::Substitute).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_data_comes_from_the_honest_peer() {
    honest_wins_over(Lie::Truncate).await;
}

/// A peer that sends the right bytes and then an endless tail: the reader
/// takes what it asked for and no more than a flow-control window of the
/// rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_answers_are_not_buffered() {
    let tmp = tempfile::tempdir().unwrap();
    let len = 512 * KIB;
    let (a, link, data, a_ticket) = honest(tmp.path(), len).await;
    let liar = Liar::start(&a_ticket, Lie::Oversize).await;
    let b = Node::spawn(config(&tmp.path().join("b"), Duration::from_secs(5)))
        .await
        .unwrap();
    let archive = b
        .open(link, std::slice::from_ref(&liar.ticket))
        .await
        .unwrap();
    liar.lie();
    let before = b.progress();
    let started = Instant::now();
    let got = archive.read(100 * KIB as u64 + 7, 100).await.unwrap();
    assert!(got == data[100 * KIB + 7..100 * KIB + 107]);
    assert!(started.elapsed() < Duration::from_secs(5));
    let p = b.progress();
    assert_eq!(p.bytes_fetched - before.bytes_fetched, GRANULE, "{p:?}");
    // Give the liar time to push all it can: at most about one QUIC stream
    // receive window (measured: 1.1 MiB), then the reader stops the stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let junk = liar.seen.junk_accepted.load(Ordering::Relaxed);
    eprintln!("the reader's stream accepted {junk} junk bytes");
    assert!(
        junk <= 4 * 1024 * KIB as u64,
        "the reader took {junk} junk bytes"
    );
    liar.router.shutdown().await.unwrap();
    b.shutdown().await;
    a.shutdown().await;
}

/// The only peer lies: the read fails with a clear error instead of
/// returning its bytes, and fails at once afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peer_lying_fails_the_read_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, link, _, a_ticket) = honest(tmp.path(), 256 * KIB).await;
    let liar = Liar::start(&a_ticket, Lie::Substitute).await;
    let b = Node::spawn(config(&tmp.path().join("b"), Duration::from_secs(5)))
        .await
        .unwrap();
    let archive = b
        .open(link, std::slice::from_ref(&liar.ticket))
        .await
        .unwrap();
    liar.lie();
    let err = archive.read(70_000, 5000).await.unwrap_err();
    assert!(
        matches!(err, FetchError::BadPeers { dropped: 1 }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("failing verification"), "{text}");
    assert_eq!(archive.peer_count(), 0);
    assert_eq!(b.progress().peers_known, 0);
    let started = Instant::now();
    assert!(matches!(
        archive.read(0, 10).await,
        Err(FetchError::BadPeers { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
    liar.router.shutdown().await.unwrap();
    b.shutdown().await;
    a.shutdown().await;
}
