//! Finding peers without a central server: the BitTorrent Mainline DHT
//! (BEP 5 peers, BEP 44 signed items) and mDNS on the local network.
//!
//! Everything is announced under the archive's [`DiscoveryTopic`] or under
//! keys derived from the archive key, never the key itself:
//!
//! ```text
//! DHT  announce_peer(info_hash = topic[..20], port = the node's UDP port)
//!      mutable item, signer R = ed25519(seed = BLAKE3::derive_key(
//!                     "hyperos dht record v1", archive key)):
//!        salt "peer:" ‖ port (u16 BE)  → the node's peer ticket (its id)
//!        salt "manifest", seq = version → E(signed manifest), if ≤ 1000 bytes
//!      E = XOR with BLAKE3 XOF of derive_key("hyperos dht manifest v1",
//!          archive key ‖ version LE): the manifest names the key, so it
//!          travels encrypted; its own signature is what a reader trusts.
//! LAN  mDNS service _hyperos._udp.local., TXT t = topic[..20] in hex,
//!      id = endpoint id; port and addresses of the node.
//! ```
//!
//! R's secret is known to everyone who knows the archive key (readers too),
//! so a reader could overwrite a record: the worst it can do is point others
//! at a peer that fails, since every byte and manifest is verified anyway.
//! DHT nodes see only the info-hash, R's public key and tickets. A BEP 5 peer
//! is an address without a node id, which iroh needs to connect; the record
//! under the same port supplies the id.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use hyperos_archive::{ArchiveKey, DiscoveryTopic, SignedManifest};
use mainline::async_dht::AsyncDht;
use mainline::{Id, MutableItem, SigningKey};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::node::lock;
use crate::ticket::PeerTicket;

/// The mDNS service type HyperOS nodes register.
pub const MDNS_SERVICE: &str = "_hyperos._udp.local.";

/// How often a serving node announces itself again on the DHT (its records
/// expire after about two hours there).
const DHT_REANNOUNCE: Duration = Duration::from_secs(15 * 60);

/// How soon a lookup asks the DHT again.
const DHT_LOOKUP_AGAIN: Duration = Duration::from_secs(2);

/// How often a peer seen on the DHT without a record is looked up again in
/// the same round (a node announces itself and puts its record at once, so
/// the record may land a moment after the announcement), and how soon.
const RECORD_RETRIES: u32 = 2;
const RECORD_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The largest BEP 44 value.
const MAX_ITEM: usize = 1000;

/// Where to look for peers besides the tickets given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The Mainline DHT: `None` is off; `Some(empty)` uses the public
    /// bootstrap nodes; otherwise these `HOST:PORT`s.
    pub dht: Option<Vec<String>>,
    /// mDNS on the local network.
    pub lan: bool,
}

/// Something a lookup found.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    Peer(PeerTicket),
    /// A signed manifest found on the DHT (not yet verified).
    Manifest(SignedManifest),
}

/// The DHT node, started on first use.
#[derive(Clone)]
struct LazyDht {
    cell: Arc<tokio::sync::OnceCell<Option<AsyncDht>>>,
    bootstrap: Arc<Vec<String>>,
}

impl LazyDht {
    async fn get(&self) -> Option<AsyncDht> {
        self.cell
            .get_or_init(|| async {
                let bootstrap = self.bootstrap.clone();
                // Building resolves the bootstrap names, which blocks.
                let built = tokio::task::spawn_blocking(move || {
                    let mut builder = mainline::Dht::builder();
                    if !bootstrap.is_empty() {
                        builder.bootstrap(&bootstrap);
                    }
                    builder.build()
                })
                .await;
                match built {
                    Ok(Ok(dht)) => Some(dht.as_async()),
                    Ok(Err(e)) => {
                        warn!(
                            "the DHT could not start ({e}); finding peers by tickets and LAN only"
                        );
                        None
                    }
                    Err(e) => {
                        warn!("the DHT could not start ({e})");
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

/// The running discovery services of a node.
pub(crate) struct Discovery {
    dht: Option<LazyDht>,
    mdns: Option<mdns_sd::ServiceDaemon>,
    /// Announce tasks and mDNS registrations, by topic, stopped on drop.
    announced: Mutex<HashMap<[u8; 32], Announced>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("dht", &self.dht.is_some())
            .field("lan", &self.mdns.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct Announced {
    task: Option<tokio::task::JoinHandle<()>>,
    mdns_name: Option<String>,
}

fn record_signer(key: &ArchiveKey) -> SigningKey {
    SigningKey::from_bytes(&blake3::derive_key("hyperos dht record v1", key.as_bytes()))
}

fn peer_salt(port: u16) -> Vec<u8> {
    let mut salt = b"peer:".to_vec();
    salt.extend_from_slice(&port.to_be_bytes());
    salt
}

/// Encrypts or decrypts (the same XOR) a manifest for the DHT.
fn manifest_cipher(key: &ArchiveKey, version: u64, bytes: &mut [u8]) {
    let mut hasher = blake3::Hasher::new_derive_key("hyperos dht manifest v1");
    hasher.update(key.as_bytes());
    hasher.update(&version.to_le_bytes());
    let mut stream = vec![0u8; bytes.len()];
    hasher.finalize_xof().fill(&mut stream);
    for (b, k) in bytes.iter_mut().zip(stream) {
        *b ^= k;
    }
}

fn info_hash(topic: &DiscoveryTopic) -> Id {
    // 20 bytes always make an Id.
    Id::from_bytes(topic.info_hash()).unwrap_or_else(|_| Id::random())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Discovery {
    /// Starts the services the config asks for. The DHT starts in the
    /// background (resolving bootstrap names can take seconds); one that
    /// cannot start is a warning, not an error: tickets and the LAN still
    /// work.
    pub async fn start(config: &DiscoveryConfig) -> Self {
        let dht = config.dht.clone().map(|bootstrap| {
            let dht = LazyDht {
                cell: Arc::default(),
                bootstrap: Arc::new(bootstrap),
            };
            let primed = dht.clone();
            tokio::spawn(async move { primed.get().await });
            dht
        });
        let mdns = if config.lan {
            match mdns_sd::ServiceDaemon::new() {
                Ok(d) => Some(d),
                Err(e) => {
                    warn!("LAN discovery (mDNS) could not start ({e})");
                    None
                }
            }
        } else {
            None
        };
        Self {
            dht,
            mdns,
            announced: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any service runs.
    pub fn enabled(&self) -> bool {
        self.dht.is_some() || self.mdns.is_some()
    }

    /// Announces that this node serves `key` at `ticket` (and, on the DHT,
    /// its latest signed manifest), again every [`DHT_REANNOUNCE`] until
    /// [`Discovery::shutdown`]. A later call for the same archive replaces
    /// the earlier one.
    pub fn announce(
        &self,
        key: &ArchiveKey,
        ticket: &PeerTicket,
        manifest: Option<(u64, SignedManifest)>,
    ) {
        let topic = key.discovery_topic();
        let Some(port) = ticket.addrs.iter().map(SocketAddr::port).find(|p| *p != 0) else {
            warn!("not announcing: the node has no bound port");
            return;
        };
        let task = self.dht.clone().map(|dht| {
            let signer = record_signer(key);
            let key = *key;
            let ticket = ticket.to_string();
            tokio::spawn(async move {
                let Some(dht) = dht.get().await else { return };
                loop {
                    dht_announce(&dht, &key, &signer, port, &ticket, manifest.as_ref()).await;
                    tokio::time::sleep(DHT_REANNOUNCE).await;
                }
            })
        });
        let mdns_name = self.mdns.as_ref().and_then(|mdns| {
            let id = ticket.id.to_string();
            let name = format!("{}-{}", &hex(&topic.info_hash())[..16], &id[..16]);
            if ticket.addrs.iter().all(|a| a.ip().is_loopback()) {
                debug!("not announcing on the LAN: the node listens on loopback only");
                return None;
            }
            let ips: Vec<IpAddr> = ticket
                .addrs
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
                .collect();
            let txt = [("t", hex(&topic.info_hash())), ("id", id.clone())];
            let host = format!("hyperos-{}.local.", &id[..16]);
            let info = if ips.is_empty() {
                mdns_sd::ServiceInfo::new(MDNS_SERVICE, &name, &host, (), port, &txt[..])
                    .map(|i| i.enable_addr_auto())
            } else {
                mdns_sd::ServiceInfo::new(MDNS_SERVICE, &name, &host, &ips[..], port, &txt[..])
            };
            match info.and_then(|info| {
                let full = info.get_fullname().to_owned();
                mdns.register(info).map(|()| full)
            }) {
                Ok(full) => Some(full),
                Err(e) => {
                    warn!("could not announce on the LAN: {e}");
                    None
                }
            }
        });
        let old = lock(&self.announced).insert(*topic.as_bytes(), Announced { task, mdns_name });
        if let Some(old) = old {
            self.stop(old);
        }
    }

    /// Stops announcing `key` (no-op when it is not announced).
    pub fn withdraw(&self, key: &ArchiveKey) {
        let announced = lock(&self.announced).remove(key.discovery_topic().as_bytes());
        if let Some(announced) = announced {
            self.stop(announced);
        }
    }

    fn stop(&self, announced: Announced) {
        if let Some(task) = announced.task {
            task.abort();
        }
        if let (Some(mdns), Some(name)) = (&self.mdns, announced.mdns_name) {
            let _ = mdns.unregister(&name);
        }
    }

    /// Looks `key` up on the DHT and the LAN for `window`; what is found
    /// arrives on the receiver, each peer once. Dropping the receiver ends
    /// the lookup.
    pub fn lookup(&self, key: &ArchiveKey, window: Duration) -> mpsc::Receiver<Found> {
        let (tx, rx) = mpsc::channel(64);
        let topic = key.discovery_topic();
        if let Some(dht) = self.dht.clone() {
            let (tx, key) = (tx.clone(), *key);
            tokio::spawn(async move {
                // Again every few seconds: peers announce when they start.
                let _ = tokio::time::timeout(window, async {
                    let Some(dht) = dht.get().await else { return };
                    while !tx.is_closed() {
                        dht_lookup(&dht, &key, &tx).await;
                        tokio::time::sleep(DHT_LOOKUP_AGAIN).await;
                    }
                })
                .await;
            });
        }
        if let Some(mdns) = &self.mdns {
            match mdns.browse(MDNS_SERVICE) {
                Ok(events) => {
                    let (tx, mdns) = (tx.clone(), mdns.clone());
                    tokio::spawn(async move {
                        let wanted = hex(&topic.info_hash());
                        let _ =
                            tokio::time::timeout(window, lan_lookup(events, &wanted, &tx)).await;
                        let _ = mdns.stop_browse(MDNS_SERVICE);
                    });
                }
                Err(e) => warn!("could not browse the LAN: {e}"),
            }
        }
        rx
    }

    /// Stops announcing and the services.
    pub fn shutdown(&self) {
        let all: Vec<Announced> = lock(&self.announced).drain().map(|(_, a)| a).collect();
        for announced in all {
            self.stop(announced);
        }
        if let Some(mdns) = &self.mdns {
            let _ = mdns.shutdown();
        }
    }
}

/// Announces the node and puts its records, all at once (each put is a
/// query of its own that takes seconds).
async fn dht_announce(
    dht: &AsyncDht,
    key: &ArchiveKey,
    signer: &SigningKey,
    port: u16,
    ticket: &str,
    manifest: Option<&(u64, SignedManifest)>,
) {
    let topic = key.discovery_topic();
    let announce = async {
        match dht.announce_peer(info_hash(&topic), Some(port)).await {
            Ok(_) => info!(%topic, port, "announced on the DHT"),
            Err(e) => {
                warn!("announcing on the DHT failed ({e}); peers can still use the ticket");
            }
        }
    };
    let record = async {
        let seq = i64::try_from(crate::node::now_unix().unwrap_or(0)).unwrap_or(i64::MAX);
        let item = MutableItem::new(
            signer.clone(),
            ticket.as_bytes(),
            seq,
            Some(&peer_salt(port)),
        );
        if let Err(e) = dht.put_mutable(item, None).await {
            debug!("putting the peer record on the DHT failed: {e}");
        }
    };
    let manifest = async {
        let Some((version, signed)) = manifest else {
            return;
        };
        let mut bytes = signed.encode();
        if bytes.len() > MAX_ITEM {
            debug!(len = bytes.len(), "the manifest is too large for the DHT");
            return;
        }
        manifest_cipher(key, *version, &mut bytes);
        let seq = i64::try_from(*version).unwrap_or(i64::MAX);
        let item = MutableItem::new(signer.clone(), &bytes, seq, Some(b"manifest"));
        if let Err(e) = dht.put_mutable(item, None).await {
            debug!("putting the manifest on the DHT failed: {e}");
        }
    };
    tokio::join!(announce, record, manifest);
}

/// One round of DHT lookups: the manifest record, the peers announced under
/// the topic and, for each new port, its peer record, all at once. Items are
/// passed on as they arrive: waiting for a query to finish means waiting
/// for the nodes that no longer answer (a stopped peer's DHT node stays in
/// others' routing tables for a while) to time out.
async fn dht_lookup(dht: &AsyncDht, key: &ArchiveKey, tx: &mpsc::Sender<Found>) {
    let signer = record_signer(key).verifying_key().to_bytes();
    let manifest = async {
        let mut newest = None;
        let mut items = dht.get_mutable(&signer, Some(b"manifest"), None);
        while let Some(item) = items.next().await {
            let Ok(version) = u64::try_from(item.seq()) else {
                continue;
            };
            if newest.is_some_and(|n| n >= version) {
                continue;
            }
            let mut bytes = item.value().to_vec();
            manifest_cipher(key, version, &mut bytes);
            if let Ok(signed) = SignedManifest::decode(&bytes) {
                newest = Some(version);
                if tx.send(Found::Manifest(signed)).await.is_err() {
                    return;
                }
            }
        }
    };
    let peers = async {
        let mut seen_ports = HashSet::new();
        let mut records = tokio::task::JoinSet::new();
        let mut stream = dht.get_peers(info_hash(&key.discovery_topic()));
        while let Some(batch) = stream.next().await {
            for addr in batch {
                if seen_ports.insert(addr.port()) {
                    records.spawn(peer_records(dht.clone(), signer, addr, tx.clone()));
                }
            }
        }
        while records.join_next().await.is_some() {}
    };
    tokio::join!(manifest, peers);
}

/// Passes on every node id recorded for a peer seen on the DHT at `addr`,
/// as a ticket with that address first.
async fn peer_records(
    dht: AsyncDht,
    signer: [u8; 32],
    addr: std::net::SocketAddrV4,
    tx: mpsc::Sender<Found>,
) {
    let mut sent = HashSet::new();
    for attempt in 0..=RECORD_RETRIES {
        if attempt > 0 {
            tokio::time::sleep(RECORD_RETRY_PAUSE).await;
        }
        let mut items = dht.get_mutable(&signer, Some(&peer_salt(addr.port())), None);
        while let Some(item) = items.next().await {
            let Some(mut ticket) = std::str::from_utf8(item.value())
                .ok()
                .and_then(|t| t.parse::<PeerTicket>().ok())
            else {
                continue;
            };
            if !sent.insert(ticket.id) {
                continue;
            }
            let seen = SocketAddr::V4(addr);
            if !ticket.addrs.contains(&seen) {
                ticket.addrs.insert(0, seen);
                ticket.addrs.truncate(crate::ticket::MAX_TICKET_ADDRS);
            }
            if tx.send(Found::Peer(ticket)).await.is_err() {
                return;
            }
        }
        if !sent.is_empty() {
            return;
        }
    }
    debug!(%addr, "a DHT peer without a record");
}

async fn lan_lookup(
    events: mdns_sd::Receiver<mdns_sd::ServiceEvent>,
    wanted: &str,
    tx: &mpsc::Sender<Found>,
) {
    while let Ok(event) = events.recv_async().await {
        let mdns_sd::ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        if service.get_property_val_str("t") != Some(wanted) {
            continue;
        }
        let Some(id) = service
            .get_property_val_str("id")
            .and_then(|id| id.parse::<iroh::EndpointId>().ok())
        else {
            continue;
        };
        let port = service.get_port();
        let addrs: Vec<SocketAddr> = service
            .get_addresses()
            .iter()
            .map(|ip| SocketAddr::new(ip.to_ip_addr(), port))
            .filter(|a| match a.ip() {
                IpAddr::V4(_) => true,
                // Link-local addresses need a scope iroh's addresses lack.
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
            })
            .take(crate::ticket::MAX_TICKET_ADDRS)
            .collect();
        if addrs.is_empty() {
            continue;
        }
        if tx
            .send(Found::Peer(PeerTicket { id, addrs }))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperos_archive::ArchiveSecret;

    #[test]
    fn manifest_cipher_round_trips_and_hides_the_key() {
        let key = ArchiveSecret::from_bytes(&[3; 32]).public();
        let plain = key.as_bytes().repeat(3);
        let mut bytes = plain.clone();
        manifest_cipher(&key, 7, &mut bytes);
        assert!(!bytes.windows(32).any(|w| w == key.as_bytes()));
        manifest_cipher(&key, 7, &mut bytes);
        assert_eq!(bytes, plain);
        let other = record_signer(&key).verifying_key().to_bytes();
        assert_ne!(&other, key.as_bytes());
    }
}
