//! The publisher's side of a live boot: a prepared image published as the
//! next version of an archive on a running node, announced, and recorded
//! under the state directory, so `hyperos shares` lists it and a boot in
//! the VM finds it ([`crate::guest::guest_peers`]).
//!
//! `hyperos share` serves one such archive per process; the desktop app
//! serves every file or folder dropped on its window from one node.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hyperos_archive::{ArchiveSecret, Manifest};
use hyperos_imagefs::Prepared;
use hyperos_p2p::{Node, PublishOptions, ShareKind, ShareRecord};

/// What to publish, and how the record describes it.
#[derive(Debug)]
pub struct Publish<'a> {
    /// The image to publish (a temporary one is deleted once stored).
    pub prepared: &'a Prepared,
    /// What the user shared: the record's `path`.
    pub source: &'a Path,
    /// The archive's secret key.
    pub secret: &'a ArchiveSecret,
    /// Image byte ranges a reader should fetch first.
    pub prefetch: Vec<Range<u64>>,
    /// Who serves it.
    pub kind: ShareKind,
    /// The serving process's log, if it has one of its own.
    pub log: Option<PathBuf>,
}

/// A published, served and recorded version.
#[derive(Debug, Clone)]
pub struct Published {
    /// The record written under `<state>/shares/`.
    pub record: ShareRecord,
    /// The manifest of the served version, verified.
    pub manifest: Manifest,
}

/// Publishes `what` on `node`, announces it (DHT and LAN, as the node is
/// configured) and writes its share record under `state_root`. The record
/// names this process; remove it ([`ShareRecord::remove`]) when serving
/// stops.
pub async fn publish(
    node: &Node,
    state_root: &Path,
    what: Publish<'_>,
) -> anyhow::Result<Published> {
    let prepared = what.prepared;
    let mut options = PublishOptions::new(prepared.fs_type);
    options.oci = prepared.oci.clone();
    options.prefetch = what.prefetch;
    let published = node.publish(&prepared.path, what.secret, options).await;
    if prepared.temporary {
        // Stored in the node's blob store now (or failed): not needed again.
        let _ = std::fs::remove_file(&prepared.path);
    }
    let (signed, link) = published?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let key = what.secret.public();
    let manifest = signed.verify(&key, now, None)?;
    let ticket = node.ticket().await;
    node.announce(&key).await;
    let record = ShareRecord {
        key: key.to_hex(),
        link: link.to_string(),
        version: manifest.version,
        ticket: ticket.to_string(),
        pid: std::process::id(),
        path: std::path::absolute(what.source)?,
        kind: what.kind,
        log: what.log,
        started: now,
    };
    record
        .write(state_root)
        .with_context(|| format!("could not record the share under {}", state_root.display()))?;
    Ok(Published { record, manifest })
}
