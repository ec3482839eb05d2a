//! What a node keeps on disk besides blobs, all under its directory:
//!
//! ```text
//! <dir>/node.key               the iroh secret key (32 bytes, 0600)
//! <dir>/store/                 iroh-blobs' filesystem store (unless --ram)
//! <dir>/seen/<topic>           LastSeen: version (u64 LE) ‖ manifest digest (32)
//! <dir>/published/<topic>      the last version this node published (u64 LE)
//! <dir>/manifests/<topic>      the latest signed manifest this node serves
//! ```
//!
//! `<topic>` is the archive's discovery topic in hex, so the directory
//! listing does not reveal archive keys. Every file is written to a temporary
//! name and renamed over the old one, so a crash leaves the old or the new
//! contents, never a mix. These files are tiny; they are read and written
//! synchronously.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hyperos_archive::{BlobHash, DiscoveryTopic, LastSeen};

/// Errors reading or writing the node's state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("could not {action} {path}; check that the directory exists and is writable")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file has the wrong size.
    #[error("{path} is damaged (wrong size); remove it (a key file: the node gets a new id)")]
    Damaged { path: PathBuf },
}

/// The node's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob store lives.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// The node's secret key, created (0600) on first use.
    pub fn node_key(&self) -> Result<iroh::SecretKey, StateError> {
        let path = self.root.join("node.key");
        match fs::read(&path) {
            Ok(bytes) => {
                let bytes: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| StateError::Damaged { path: path.clone() })?;
                Ok(iroh::SecretKey::from_bytes(&bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = iroh::SecretKey::generate();
                write_atomic(&path, &key.to_bytes(), true)?;
                Ok(key)
            }
            Err(source) => Err(StateError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn topic_file(&self, kind: &str, topic: &DiscoveryTopic) -> PathBuf {
        self.root.join(kind).join(topic.to_string())
    }

    /// The last version seen of an archive, if any.
    pub fn seen(&self, topic: &DiscoveryTopic) -> Result<Option<LastSeen>, StateError> {
        let path = self.topic_file("seen", topic);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        if bytes.len() != 40 {
            return Err(StateError::Damaged { path });
        }
        let mut version = [0u8; 8];
        version.copy_from_slice(&bytes[..8]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[8..]);
        Ok(Some(LastSeen {
            version: u64::from_le_bytes(version),
            digest: BlobHash::from_bytes(digest),
        }))
    }

    /// Remembers the last version seen of an archive.
    pub fn set_seen(&self, topic: &DiscoveryTopic, seen: LastSeen) -> Result<(), StateError> {
        let mut bytes = seen.version.to_le_bytes().to_vec();
        bytes.extend_from_slice(seen.digest.as_bytes());
        write_atomic(&self.topic_file("seen", topic), &bytes, false)
    }

    /// The last version this node published of an archive.
    pub fn published(&self, topic: &DiscoveryTopic) -> Result<Option<u64>, StateError> {
        let path = self.topic_file("published", topic);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| StateError::Damaged { path })?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    /// Remembers the last version this node published of an archive.
    pub fn set_published(&self, topic: &DiscoveryTopic, version: u64) -> Result<(), StateError> {
        write_atomic(
            &self.topic_file("published", topic),
            &version.to_le_bytes(),
            false,
        )
    }

    /// Keeps the signed manifest this node serves for an archive.
    pub fn set_manifest(&self, topic: &DiscoveryTopic, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.topic_file("manifests", topic), bytes, false)
    }

    /// The signed manifest this node serves for an archive, if any.
    pub fn manifest(&self, topic: &DiscoveryTopic) -> Result<Option<Vec<u8>>, StateError> {
        read_optional(&self.topic_file("manifests", topic))
    }

    /// Every kept signed manifest, with its file name (the topic in hex).
    pub fn manifests(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let dir = self.root.join("manifests");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "list",
                    path: dir,
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() != 64 {
                continue; // temporary files and strangers
            }
            if let Some(bytes) = read_optional(&entry.path())? {
                out.push((name, bytes));
            }
        }
        Ok(out)
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`; `private` makes the file 0600 on Unix.
fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), StateError> {
    let io_err = |action, source| StateError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("create the directory of", e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(|e| io_err("create", e))?;
    file.write_all(bytes).map_err(|e| io_err("write", e))?;
    file.sync_all().map_err(|e| io_err("sync", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("rename into place", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperos_archive::ArchiveSecret;

    #[test]
    fn state_round_trips_and_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let key = state.node_key().unwrap();
        assert_eq!(state.node_key().unwrap().public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("node.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let topic = ArchiveSecret::from_bytes(&[1; 32])
            .public()
            .discovery_topic();
        assert_eq!(state.seen(&topic).unwrap(), None);
        let seen = LastSeen {
            version: 9,
            digest: BlobHash::of(b"x"),
        };
        state.set_seen(&topic, seen).unwrap();
        assert_eq!(state.seen(&topic).unwrap(), Some(seen));
        state.set_published(&topic, 4).unwrap();
        assert_eq!(state.published(&topic).unwrap(), Some(4));
        state.set_manifest(&topic, b"abc").unwrap();
        assert_eq!(
            state.manifests().unwrap(),
            vec![(topic.to_string(), b"abc".to_vec())]
        );
    }
}
