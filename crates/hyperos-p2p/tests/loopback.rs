//! Real nodes on loopback in one process, relays disabled: each has its own
//! endpoint, state directory and store.

// Helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use hyperos_archive::{ArchiveLink, ArchiveSecret, Chunking, FsType};
use hyperos_p2p::wire::{self, ManifestResponse};
use hyperos_p2p::{FetchError, Node, NodeConfig, PeerTicket, PublishOptions};
use rand::RngCore;

const KIB: usize = 1024;

fn config(dir: &Path, deadline: Duration) -> NodeConfig {
    NodeConfig {
        bind: Some("127.0.0.1:0".parse().unwrap()),
        deadline,
        ..NodeConfig::new(dir)
    }
}

/// A node in `dir` on loopback with reads bounded by `deadline`.
async fn spawn(dir: &Path, deadline: Duration) -> Node {
    Node::spawn(config(dir, deadline)).await.unwrap()
}

fn random_image(dir: &Path, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn options() -> PublishOptions {
    PublishOptions {
        chunking: Chunking {
            chunk_size: 64 * KIB as u32,
            fetch_granularity: 16 * KIB as u32,
        },
        ..PublishOptions::new(FsType::Ext4)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_verified_cached_offline_and_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(2);
    let a = spawn(&tmp.path().join("a"), deadline).await;
    let (image, data) = random_image(tmp.path(), "img", 3 * 1024 * KIB + 12345);
    let secret = ArchiveSecret::generate().unwrap();
    let (_, link) = a.publish(&image, &secret, options()).await.unwrap();
    let ticket: PeerTicket = a.ticket().await.to_string().parse().unwrap();

    let b_dir = tmp.path().join("b");
    let b = spawn(&b_dir, deadline).await;
    let archive = b
        .open(ArchiveLink::latest(link.key), &[ticket])
        .await
        .unwrap();
    assert_eq!(archive.manifest().image_len, data.len() as u64);
    // Unaligned ranges, across chunk boundaries, and the short last chunk.
    let ranges = [
        (0u64, 100u64),
        (65_000, 70_000),
        (1_000_000, 300_000),
        (data.len() as u64 - 5000, 5000),
        (data.len() as u64 - 10, 100), // clipped at the end
    ];
    for (offset, len) in ranges {
        let got = archive.read(offset, len).await.unwrap();
        let end = (offset + len).min(data.len() as u64) as usize;
        assert_eq!(got, data[offset as usize..end], "range {offset}+{len}");
    }
    let p = b.progress();
    assert!(
        p.bytes_fetched > 0 && p.bytes_fetched < data.len() as u64 / 2,
        "{p:?}"
    );

    // A goes away: cached ranges still read, an uncached one times out.
    a.shutdown().await;
    let got = archive.read(65_000, 70_000).await.unwrap();
    assert_eq!(got, data[65_000..135_000]);
    let started = Instant::now();
    let err = archive.read(2 * 1024 * 1024, 4096).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < deadline + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(archive);
    b.shutdown().await;

    // B restarts on the same directory, with no peer at all.
    let b = spawn(&b_dir, deadline).await;
    let archive = b.open(ArchiveLink::latest(link.key), &[]).await.unwrap();
    let before = b.progress();
    let got = archive.read(1_000_000, 300_000).await.unwrap();
    assert_eq!(got, data[1_000_000..1_300_000]);
    let after = b.progress();
    assert_eq!(after.bytes_fetched, before.bytes_fetched);
    assert_eq!(after.bytes_from_cache - before.bytes_from_cache, 300_000);
    assert!(matches!(
        archive.read(2 * 1024 * 1024, 10).await,
        Err(FetchError::NoPeers)
    ));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_go_forward_also_after_restart_and_dedup() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(2);
    let secret = ArchiveSecret::generate().unwrap();
    let (image, mut data) = random_image(tmp.path(), "v1", 1024 * KIB);

    // C publishes version 1 and keeps serving it (a stale peer).
    let c = spawn(&tmp.path().join("c"), deadline).await;
    let (stale_v1, _) = c.publish(&image, &secret, options()).await.unwrap();
    let a_dir = tmp.path().join("a");
    let a = spawn(&a_dir, deadline).await;
    let (_, v1) = a.publish(&image, &secret, options()).await.unwrap();
    assert_eq!(v1.version, Some(1));
    let blobs_v1 = a.stored_blob_count().await.unwrap();
    assert_eq!(blobs_v1, 16 + 1);

    // B sees version 1 first.
    let latest = ArchiveLink::latest(v1.key);
    let b_dir = tmp.path().join("b");
    let b = spawn(&b_dir, deadline).await;
    let archive = b.open(latest, &[c.ticket().await]).await.unwrap();
    assert_eq!(archive.manifest().version, 1);
    drop(archive);

    // Version 2 differs in one chunk: the store grows by that chunk and the index.
    data[5 * 64 * KIB + 7] ^= 0xff;
    let image2 = tmp.path().join("v2");
    std::fs::write(&image2, &data).unwrap();
    let (_, v2) = a.publish(&image2, &secret, options()).await.unwrap();
    assert_eq!(v2.version, Some(2));
    assert_eq!(a.stored_blob_count().await.unwrap(), blobs_v1 + 2);

    // `--update` after a restart continues from the persisted version.
    a.shutdown().await;
    let a = spawn(&a_dir, deadline).await;

    // B accepts version 2 (newer than the version 1 it saw) and reads it.
    let archive = b
        .open(latest, &[c.ticket().await, a.ticket().await])
        .await
        .unwrap();
    assert_eq!(archive.manifest().version, 2);
    assert_eq!(archive.read(0, data.len() as u64).await.unwrap(), data);
    drop(archive);
    b.shutdown().await;

    // After a restart, and without the kept copy of version 2, B still
    // refuses version 1 from a peer that pushes it.
    std::fs::remove_dir_all(b_dir.join("manifests")).unwrap();
    let b = spawn(&b_dir, deadline).await;
    let (router, stale) = liar(ManifestResponse::Found(stale_v1).encode()).await;
    let err = b.open(latest, &[stale]).await.unwrap_err();
    assert!(matches!(err, FetchError::NoManifest { .. }), "{err}");
    assert!(err.to_string().contains("older than version 2"), "{err}");
    router.shutdown().await.unwrap();
    b.shutdown().await;

    let (_, v3) = a.publish(&image, &secret, options()).await.unwrap();
    assert_eq!(v3.version, Some(3));
    a.shutdown().await;
    c.shutdown().await;
}

/// A peer that answers every manifest request with fixed bytes.
#[derive(Debug, Clone)]
struct Liar(Vec<u8>);

impl iroh::protocol::ProtocolHandler for Liar {
    async fn accept(
        &self,
        connection: iroh::endpoint::Connection,
    ) -> Result<(), iroh::protocol::AcceptError> {
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let _ = recv.read_to_end(wire::REQUEST_LEN).await;
            let _ = send.write_all(&self.0).await;
            let _ = send.finish();
        }
        Ok(())
    }
}

async fn liar(answer: Vec<u8>) -> (iroh::protocol::Router, PeerTicket) {
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
    let router = iroh::protocol::Router::builder(endpoint)
        .accept(wire::ALPN, Liar(answer))
        .spawn();
    (router, ticket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_other_archive_manifests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(2);
    let (image, _) = random_image(tmp.path(), "img", 200 * KIB);
    let a = spawn(&tmp.path().join("a"), deadline).await;
    let wanted = ArchiveSecret::generate().unwrap();
    let other = ArchiveSecret::generate().unwrap();
    let (signed_other, _) = a.publish(&image, &other, options()).await.unwrap();
    let (signed_wanted, _) = a.publish(&image, &wanted, options()).await.unwrap();
    a.shutdown().await;

    let mut forged = signed_wanted.encode();
    let last = forged.len() - 1;
    forged[last] ^= 1; // the signature
    let b = spawn(&tmp.path().join("b"), deadline).await;
    for (bytes, expect) in [
        (signed_other.encode(), "this manifest is for archive"),
        (forged, "signature does not verify"),
    ] {
        let signed = hyperos_archive::SignedManifest::decode(&bytes).unwrap();
        let (router, ticket) = liar(ManifestResponse::Found(signed).encode()).await;
        let err = b
            .open(ArchiveLink::latest(wanted.public()), &[ticket])
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::NoManifest { .. }), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
        router.shutdown().await.unwrap();
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_seed_relays_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(5);
    let (image, data) = random_image(tmp.path(), "img", 2 * 1024 * KIB + 777);
    let secret = ArchiveSecret::generate().unwrap();
    let a = spawn(&tmp.path().join("a"), deadline).await;
    let (_, link) = a
        .publish(&image, &secret, PublishOptions::new(FsType::Erofs))
        .await
        .unwrap();
    let b = Node::spawn(NodeConfig {
        ram: true,
        ..config(&tmp.path().join("b"), deadline)
    })
    .await
    .unwrap();
    let seeded = b
        .open(ArchiveLink::latest(link.key), &[a.ticket().await])
        .await
        .unwrap();
    seeded.fetch_all().await.unwrap();
    assert!(b.progress().bytes_fetched >= data.len() as u64);
    a.shutdown().await;

    // C knows only B (the seeder) and A's dead address: it fails over to B.
    let c = spawn(&tmp.path().join("c"), deadline).await;
    let dead = PeerTicket {
        id: iroh::SecretKey::generate().public(),
        addrs: vec!["127.0.0.1:9".parse().unwrap()],
    };
    let archive = c.open(link, &[dead, b.ticket().await]).await.unwrap();
    assert_eq!(archive.read(0, data.len() as u64).await.unwrap(), data);
    c.shutdown().await;
    b.shutdown().await;
}

/// A node that is gone (as a stale DHT record or an old ticket names it)
/// costs neither `open` nor reads a deadline: every candidate is asked at
/// once and the archive opens when a live peer has answered; the dead one
/// joins once its request has failed, but is never the first try while a
/// live peer serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_costs_open_and_reads_no_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(6);
    let a = spawn(&tmp.path().join("a"), deadline).await;
    let (image, data) = random_image(tmp.path(), "img", 1024 * KIB);
    let secret = ArchiveSecret::generate().unwrap();
    let (_, link) = a.publish(&image, &secret, options()).await.unwrap();
    let live = a.ticket().await;
    let gone = spawn(&tmp.path().join("gone"), deadline).await;
    let dead = gone.ticket().await;
    gone.shutdown().await;

    let b = spawn(&tmp.path().join("b"), deadline).await;
    let started = Instant::now();
    let archive = b
        .open(ArchiveLink::latest(link.key), &[dead, live])
        .await
        .unwrap();
    let opened = started.elapsed();
    assert!(opened < deadline / 2, "open took {opened:?}");

    // The dead peer's request fails at the deadline; then it is in line.
    let joined_by = started + deadline + Duration::from_secs(3);
    while archive.peer_count() < 2 {
        assert!(Instant::now() < joined_by, "the dead peer never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its rest (2 s) over, it is still not asked first: 64 granules in 16
    // parallel requests, half of which would start at it in plain rotation,
    // each then waiting for an attempt (deadline / 4 = 1.5 s) to time out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = Instant::now();
    let got = archive.read(0, data.len() as u64).await.unwrap();
    let took = started.elapsed();
    assert!(got == data, "the image read back differs");
    assert!(took < Duration::from_millis(1400), "the read took {took:?}");
    drop(archive);
    b.shutdown().await;
    a.shutdown().await;
}

/// Reads of the same bytes at the same time (a kernel's readahead, two
/// processes starting the same binary) fetch them once: the later reads
/// wait for the fetch in flight instead of asking the peer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_of_a_range_fetch_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(5);
    let a = spawn(&tmp.path().join("a"), deadline).await;
    let (image, data) = random_image(tmp.path(), "img", 1024 * KIB);
    let secret = ArchiveSecret::generate().unwrap();
    let (_, link) = a.publish(&image, &secret, options()).await.unwrap();
    let b = spawn(&tmp.path().join("b"), deadline).await;
    let archive = b
        .open(ArchiveLink::latest(link.key), &[a.ticket().await])
        .await
        .unwrap();
    // Opening fetched the chunk index.
    let opened = b.progress().bytes_fetched;
    // 8 readers of the same 256 KiB (16 granules), all at once.
    let len = 256 * KIB as u64;
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let archive = archive.clone();
        readers.spawn(async move { archive.read(128 * KIB as u64, len).await });
    }
    while let Some(read) = readers.join_next().await {
        assert_eq!(read.unwrap().unwrap(), data[128 * KIB..384 * KIB]);
    }
    let p = b.progress();
    assert_eq!(p.bytes_fetched - opened, len, "{p:?}");
    assert_eq!(p.requests, 16 + 2, "{p:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A withdrawn archive is no longer given out: a reader that had not opened
/// it can't, while another archive of the same node still opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_archive_no_longer_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(2);
    let a = spawn(&tmp.path().join("a"), deadline).await;
    let (image, _) = random_image(tmp.path(), "img", 200 * KIB);
    let (gone, kept) = (
        ArchiveSecret::generate().unwrap(),
        ArchiveSecret::generate().unwrap(),
    );
    let (_, gone_link) = a.publish(&image, &gone, options()).await.unwrap();
    let (_, kept_link) = a.publish(&image, &kept, options()).await.unwrap();
    assert!(a.withdraw(&gone.public()));
    assert!(!a.withdraw(&gone.public()), "withdrawn twice");
    let b = spawn(&tmp.path().join("b"), deadline).await;
    let ticket = a.ticket().await;
    let err = b
        .open(gone_link, std::slice::from_ref(&ticket))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NoManifest { .. }), "{err}");
    let archive = b.open(kept_link, &[ticket]).await.unwrap();
    assert_eq!(archive.read(0, 10).await.unwrap().len(), 10);
    a.shutdown().await;
    b.shutdown().await;
}
