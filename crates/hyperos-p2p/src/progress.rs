//! Counters of what a node fetched and served, readable as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a node's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Verified chunk payload bytes received from peers.
    pub bytes_fetched: u64,
    /// Bytes returned by `read` that were already in the local store.
    pub bytes_from_cache: u64,
    /// Range requests sent to peers (blobs and manifests).
    pub requests: u64,
    /// Requests that failed (peer unreachable, lacking data, bad data).
    pub failed_requests: u64,
    /// Peers known to the open archives (dropped peers not counted).
    pub peers_known: u64,
    /// Peers with an open connection.
    pub peers_connected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_fetched: AtomicU64,
    pub bytes_from_cache: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    pub peers_known: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, peers_connected: u64) -> Progress {
        Progress {
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            bytes_from_cache: self.bytes_from_cache.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failed_requests: self.failed_requests.load(Ordering::Relaxed),
            peers_known: self.peers_known.load(Ordering::Relaxed),
            peers_connected,
        }
    }
}
