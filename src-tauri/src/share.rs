//! Files and folders dropped on the window, shared from the app.
//!
//! A drop becomes a new archive: `hyperos_imagefs::prepare` turns the path
//! into an image (a folder or an OCI archive into EROFS), its new secret key
//! goes to the OS keychain (else a 0600 file) like `hyperos share`'s, and
//! `hyperos_run::share::publish` serves, announces and records it. One node,
//! started on the first drop, serves every dropped archive from its own
//! directory (`<state>/desktop/p2p`), so `hyperos share` can still run
//! beside the app. The records (kind `app`) let `hyperos shares` list them
//! and a boot in the VM find the app as a peer; they go when the user stops
//! sharing one, or when the app quits.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hyperos_archive::ArchiveSecret;
use hyperos_p2p::{DiscoveryConfig, Node, NodeConfig, ShareKind, ShareRecord};
use serde::Serialize;

use crate::link::capitalize;

/// One shared file or folder, as the window lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedView {
    pub link: String,
    pub key: String,
    pub path: String,
    /// The image's size in bytes.
    pub image_len: u64,
    pub fs_type: String,
    /// Where the archive's secret key is kept.
    pub secret_store: String,
}

/// The app's shares.
pub struct Shares {
    state_root: PathBuf,
    node: tokio::sync::Mutex<Option<Node>>,
    served: Mutex<Vec<(ShareRecord, SharedView)>>,
}

impl Shares {
    pub fn new(state_root: &Path) -> Self {
        Self {
            state_root: state_root.to_owned(),
            node: tokio::sync::Mutex::new(None),
            served: Mutex::new(Vec::new()),
        }
    }

    /// What is shared now, in the order it was dropped.
    pub fn list(&self) -> Vec<SharedView> {
        lock(&self.served).iter().map(|(_, v)| v.clone()).collect()
    }

    /// Shares `path` as a new archive; returns it, or a one-line reason.
    pub async fn share(&self, path: PathBuf) -> Result<SharedView, String> {
        if !path.is_absolute() {
            return Err(format!("{} is not an absolute path", path.display()));
        }
        if let Some((_, shared)) = lock(&self.served).iter().find(|(r, _)| r.path == path) {
            return Ok(shared.clone());
        }
        // Building the image and the keychain (its client blocks on a
        // runtime of its own) run off the async threads.
        let work = self.state_root.join("desktop").join("share-work");
        let secrets = self.state_root.join("archives");
        let source = path.clone();
        let (prepared, (secret, secret_store)) = tokio::task::spawn_blocking(move || {
            let prepared =
                hyperos_imagefs::prepare(&source, &work).map_err(|e| capitalize(&e.to_string()))?;
            Ok::<_, String>((prepared, new_secret(&secrets)?))
        })
        .await
        .map_err(|e| e.to_string())??;
        let mut node = self.node.lock().await;
        if node.is_none() {
            match self.spawn_node().await {
                Ok(spawned) => *node = Some(spawned),
                Err(e) => {
                    if prepared.temporary {
                        let _ = std::fs::remove_file(&prepared.path);
                    }
                    return Err(e);
                }
            }
        }
        let Some(node) = node.as_ref() else {
            return Err("the share node did not start".to_owned());
        };
        let published = hyperos_run::share::publish(
            node,
            &self.state_root,
            hyperos_run::share::Publish {
                prepared: &prepared,
                source: &path,
                secret: &secret,
                prefetch: Vec::new(),
                kind: ShareKind::App,
                log: None,
            },
        )
        .await
        .map_err(|e| capitalize(&format!("{e:#}")))?;
        let view = SharedView {
            link: published.record.link.clone(),
            key: published.record.key.clone(),
            path: path.display().to_string(),
            image_len: published.manifest.image_len,
            fs_type: published.manifest.fs_type.name().to_owned(),
            secret_store,
        };
        tracing::info!(link = %view.link, path = %view.path, "sharing");
        lock(&self.served).push((published.record, view.clone()));
        Ok(view)
    }

    /// Stops sharing the archive `key`: no peer can open it from the app
    /// any more (one that already has can still read its blocks until the
    /// app quits), and its record goes.
    pub async fn stop(&self, key: &str) -> Result<(), String> {
        let record = {
            let mut served = lock(&self.served);
            let at = served
                .iter()
                .position(|(r, _)| r.key == key)
                .ok_or_else(|| format!("The app does not share dat://{key}."))?;
            served.remove(at).0
        };
        let archive: hyperos_archive::ArchiveKey =
            key.parse().map_err(|e| capitalize(&format!("{e}")))?;
        if let Some(node) = self.node.lock().await.as_ref() {
            node.withdraw(&archive);
        }
        record.remove(&self.state_root);
        tracing::info!(link = %record.link, "stopped sharing");
        Ok(())
    }

    /// Removes the share records (the app is quitting: nothing serves them
    /// any more).
    pub fn forget_all(&self) {
        for (record, _) in lock(&self.served).drain(..) {
            record.remove(&self.state_root);
        }
    }

    async fn spawn_node(&self) -> Result<Node, String> {
        let mut config = NodeConfig::new(self.state_root.join("desktop").join("p2p"));
        config.discovery = discovery_from_env();
        Node::spawn(config)
            .await
            .map_err(|e| capitalize(&e.to_string()))
    }
}

/// A new archive secret, kept in the OS keychain (else a 0600 file) under
/// `dir`, like `hyperos share`'s; and where it is kept.
fn new_secret(dir: &Path) -> Result<(ArchiveSecret, String), String> {
    let secret = ArchiveSecret::generate().map_err(|e| capitalize(&e.to_string()))?;
    let (store, _reason) =
        hyperos_ssh::secrets::store(dir, &secret.public().to_hex(), &secret.to_hex())
            .map_err(|e| format!("Could not keep the archive's secret key: {e}"))?;
    Ok((secret, store.to_string()))
}

/// Peers find the app's shares on the LAN and on the Mainline DHT, from
/// the nodes in `HYPEROS_DHT_BOOTSTRAP` (comma-separated `HOST:PORT`s, as
/// for the CLI) or the public ones.
fn discovery_from_env() -> DiscoveryConfig {
    let nodes = std::env::var("HYPEROS_DHT_BOOTSTRAP").unwrap_or_default();
    let nodes = nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    DiscoveryConfig {
        dht: Some(nodes),
        lan: true,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
