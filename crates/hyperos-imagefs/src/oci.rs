//! Reading OCI image layouts and `docker save` archives: which image, which
//! layers in which order, and the container config.
//!
//! ```text
//! docker save tar:   manifest.json ─▶ Config (path) + Layers (paths, uncompressed tars)
//! OCI image layout:  index.json ─▶ [index ─▶]* manifest ─▶ config + layers (blobs/<alg>/<hex>)
//!                    (a directory, or the same files in a tar)
//! ```
//!
//! Of an index listing several images, the linux/amd64 one is taken (the
//! HyperOS guest is x86_64); an index of one image is taken whatever its
//! platform. Every blob named by a digest is checked against it, and every
//! layer against the config's `rootfs.diff_ids` (the digest of the
//! uncompressed tar) when the config lists one per layer. Layers may be
//! plain, gzip or zstd tars, told apart by magic. JSON documents are read up
//! to [`MAX_JSON`] bytes.
//!
//! A tar is read in place: its entries are indexed once (name → offset),
//! then blobs are read at their offsets. Symlinks between entries (older
//! `docker save` links repeated layers) are followed within the tar.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use hyperos_archive::OciConfig;
use hyperos_archive::manifest::{MAX_OCI_LIST, MAX_OCI_STRING};
use serde::Deserialize;
use sha2::Digest as _;

use crate::layer::{self, LayerError};

/// The largest JSON document read (manifest, index, config).
pub const MAX_JSON: u64 = 4 * 1024 * 1024;
/// The most nested indexes followed.
const MAX_INDEX_DEPTH: usize = 4;
/// The most entries indexed in an archive tar.
const MAX_TAR_ENTRIES: usize = 1 << 20;

/// Errors reading or importing an OCI/Docker archive.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Importing needs root.
    #[error(
        "importing an OCI/Docker image archive needs root, to keep its files' owners and create its device nodes; run `hyperos share` as root (e.g. with sudo)"
    )]
    NeedsRoot,
    /// Not on this platform.
    #[error(
        "importing an OCI/Docker image archive needs Linux; run `hyperos share` inside the HyperOS VM, or share a filesystem image"
    )]
    Unsupported,
    /// A file the archive needs is missing.
    #[error("the image archive {} has no {name}; it is incomplete", archive.display())]
    Missing { archive: PathBuf, name: String },
    /// A JSON document is malformed or too large.
    #[error("the image archive's {name} is not valid: {reason}")]
    BadDocument { name: String, reason: String },
    /// The archive holds no usable image, or several.
    #[error("{0}")]
    Choice(String),
    /// A blob does not match its digest.
    #[error(
        "the image archive's {name} does not match its digest {expected} (it hashes to {actual}); the archive is damaged"
    )]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    /// The config is beyond what an archive manifest can carry.
    #[error(
        "the image config's {field} {reason}; HyperOS archives carry at most {MAX_OCI_LIST} entries of at most {MAX_OCI_STRING} bytes each"
    )]
    ConfigTooLarge { field: &'static str, reason: String },
    /// Applying a layer failed.
    #[error("layer {index} of {count} ({name}): {source}")]
    Layer {
        index: usize,
        count: usize,
        name: String,
        #[source]
        source: LayerError,
    },
    /// Reading the archive failed.
    #[error("could not read {} from the image archive {}", name, archive.display())]
    Io {
        archive: PathBuf,
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Whether `dir` is an OCI image layout.
pub fn is_layout_dir(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
}

/// The kind of image archive a tar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    /// `manifest.json` at its root.
    DockerSave,
    /// `oci-layout` and `index.json` at its root.
    OciLayout,
}

/// What kind of image archive the tar at `path` is, if any.
pub fn tar_kind(path: &Path) -> Result<Option<TarKind>, crate::ImageFsError> {
    match Bundle::open_tar(path) {
        Ok(bundle) => Ok(bundle.kind()),
        Err(OciError::Io { source, .. }) if source.kind() == io::ErrorKind::InvalidData => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A layer to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob {
    /// Path inside the archive.
    name: String,
    /// The digest of its bytes, when the format names one.
    digest: Option<String>,
}

/// The image chosen in an archive.
#[derive(Debug)]
struct ImageRef {
    config: Blob,
    layers: Vec<Blob>,
}

/// An archive's files: a directory, or a tar indexed by name.
enum Bundle {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        /// Name → (offset of the data, size), or → the name a symlink names.
        entries: HashMap<String, TarItem>,
    },
}

#[derive(Debug, Clone)]
enum TarItem {
    File { offset: u64, size: u64 },
    Link(String),
}

/// `a/./b/` → `a/b`; `..` is resolved lexically (None above the root).
fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl Bundle {
    fn open(path: &Path) -> Result<Self, OciError> {
        if path.is_dir() {
            Ok(Self::Dir(path.to_path_buf()))
        } else {
            Self::open_tar(path)
        }
    }

    fn open_tar(path: &Path) -> Result<Self, OciError> {
        let io_err = |source| OciError::Io {
            archive: path.to_path_buf(),
            name: "the tar index".into(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        for entry in archive.entries_with_seek().map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if entries.len() >= MAX_TAR_ENTRIES {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "too many entries",
                )));
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = normalize(&raw) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                entries.insert(
                    name,
                    TarItem::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                // Symlinks are relative to their directory, hard links to the root.
                let joined = if kind.is_symlink() {
                    match name.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{target}"),
                        None => target,
                    }
                } else {
                    target
                };
                if let Some(target) = normalize(&joined) {
                    entries.insert(name, TarItem::Link(target));
                }
            }
        }
        Ok(Self::Tar {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Self::Dir(dir) => dir.join(name).is_file(),
            Self::Tar { entries, .. } => entries.contains_key(name),
        }
    }

    fn kind(&self) -> Option<TarKind> {
        if self.has("manifest.json") {
            Some(TarKind::DockerSave)
        } else if self.has("oci-layout") && self.has("index.json") {
            Some(TarKind::OciLayout)
        } else {
            None
        }
    }

    fn archive_path(&self) -> &Path {
        match self {
            Self::Dir(p) | Self::Tar { path: p, .. } => p,
        }
    }

    fn missing(&self, name: &str) -> OciError {
        OciError::Missing {
            archive: self.archive_path().to_path_buf(),
            name: name.to_string(),
        }
    }

    /// Opens a file of the archive by its name.
    fn open_file(&self, name: &str) -> Result<(Box<dyn Read>, u64), OciError> {
        let normalized = normalize(name).ok_or_else(|| self.missing(name))?;
        let io_err = |source| OciError::Io {
            archive: self.archive_path().to_path_buf(),
            name: name.to_string(),
            source,
        };
        match self {
            Self::Dir(dir) => {
                let file = File::open(dir.join(&normalized)).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => self.missing(name),
                    _ => io_err(e),
                })?;
                let size = file.metadata().map_err(io_err)?.len();
                Ok((Box::new(BufReader::new(file)), size))
            }
            Self::Tar { path, entries } => {
                let mut current = normalized;
                for _ in 0..16 {
                    match entries.get(&current) {
                        Some(TarItem::File { offset, size }) => {
                            let mut file = File::open(path).map_err(io_err)?;
                            file.seek(SeekFrom::Start(*offset)).map_err(io_err)?;
                            let reader = BufReader::new(file).take(*size);
                            return Ok((Box::new(reader), *size));
                        }
                        Some(TarItem::Link(target)) => current = target.clone(),
                        None => break,
                    }
                }
                Err(self.missing(name))
            }
        }
    }

    /// Reads a JSON document, checking its digest when one is given.
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        digest: Option<&str>,
    ) -> Result<T, OciError> {
        let (reader, size) = self.open_file(name)?;
        let bad = |reason: String| OciError::BadDocument {
            name: name.to_string(),
            reason,
        };
        if size > MAX_JSON {
            return Err(bad(format!("it is {size} bytes, more than {MAX_JSON}")));
        }
        let mut bytes = Vec::new();
        reader
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|source| OciError::Io {
                archive: self.archive_path().to_path_buf(),
                name: name.to_string(),
                source,
            })?;
        if let Some(expected) = digest {
            let mut hasher = Hasher::for_digest(expected).map_err(bad)?;
            hasher.update(&bytes);
            hasher.check(name, expected)?;
        }
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
    }

    /// The path of a blob of an OCI layout.
    fn blob_name(digest: &str) -> Result<String, OciError> {
        let bad = || OciError::BadDocument {
            name: "descriptor".into(),
            reason: format!("the digest {digest:?} is not of the form sha256:<64 hex digits>"),
        };
        let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
        let len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(format!("blobs/{algorithm}/{hex}"))
    }

    /// Finds the image to import.
    fn image(&self) -> Result<ImageRef, OciError> {
        if self.has("manifest.json") {
            return self.docker_image();
        }
        if self.has("index.json") {
            return self.oci_image();
        }
        Err(self.missing("manifest.json or index.json"))
    }

    fn docker_image(&self) -> Result<ImageRef, OciError> {
        let manifest: Vec<DockerManifest> = self.read_json("manifest.json", None)?;
        let image = match manifest.as_slice() {
            [one] => one,
            [] => {
                return Err(OciError::Choice(
                    "the docker save archive holds no image".into(),
                ));
            }
            many => {
                return Err(OciError::Choice(format!(
                    "the docker save archive holds {} images; save only the one to share (`docker save IMAGE`)",
                    many.len()
                )));
            }
        };
        Ok(ImageRef {
            config: Blob {
                name: image.config.clone(),
                digest: None,
            },
            layers: image
                .layers
                .iter()
                .map(|name| Blob {
                    name: name.clone(),
                    digest: None,
                })
                .collect(),
        })
    }

    fn oci_image(&self) -> Result<ImageRef, OciError> {
        let mut index: OciIndex = self.read_json("index.json", None)?;
        for _ in 0..MAX_INDEX_DEPTH {
            let chosen = choose(&index.manifests)?;
            let name = Self::blob_name(&chosen.digest)?;
            if chosen.is_index() {
                index = self.read_json(&name, Some(&chosen.digest))?;
                continue;
            }
            let manifest: OciManifest = self.read_json(&name, Some(&chosen.digest))?;
            let blob = |d: &Descriptor| -> Result<Blob, OciError> {
                Ok(Blob {
                    name: Self::blob_name(&d.digest)?,
                    digest: Some(d.digest.clone()),
                })
            };
            return Ok(ImageRef {
                config: blob(&manifest.config)?,
                layers: manifest.layers.iter().map(blob).collect::<Result<_, _>>()?,
            });
        }
        Err(OciError::Choice(format!(
            "the OCI index nests more than {MAX_INDEX_DEPTH} indexes deep"
        )))
    }
}

/// The one image of an index: the linux/amd64 one when there are several.
fn choose(manifests: &[Descriptor]) -> Result<&Descriptor, OciError> {
    match manifests {
        [] => Err(OciError::Choice("the OCI index lists no image".into())),
        [one] => Ok(one),
        many => {
            let amd64: Vec<&Descriptor> = many
                .iter()
                .filter(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .collect();
            match amd64.as_slice() {
                [one] => Ok(one),
                [] => {
                    let platforms: Vec<String> = many
                        .iter()
                        .map(|d| match &d.platform {
                            Some(p) => format!("{}/{}", p.os, p.architecture),
                            None => "unknown".into(),
                        })
                        .collect();
                    Err(OciError::Choice(format!(
                        "the OCI index lists {} images but none for linux/amd64 (it has {}); HyperOS runs linux/amd64",
                        many.len(),
                        platforms.join(", ")
                    )))
                }
                several => Err(OciError::Choice(format!(
                    "the OCI index lists {} linux/amd64 images; export only the one to share",
                    several.len()
                ))),
            }
        }
    }
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

impl Descriptor {
    fn is_index(&self) -> bool {
        self.media_type == "application/vnd.oci.image.index.v1+json"
            || self.media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
    }
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ContainerConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The container config, checked against the archive format's bounds.
fn oci_config(config: Option<ContainerConfig>) -> Result<OciConfig, OciError> {
    let config = config.unwrap_or_default();
    let out = OciConfig {
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        working_dir: config.working_dir.unwrap_or_default(),
        user: config.user.unwrap_or_default(),
    };
    let check = |field: &'static str, s: &str| {
        if s.len() > MAX_OCI_STRING {
            Err(OciError::ConfigTooLarge {
                field,
                reason: format!("has an entry of {} bytes", s.len()),
            })
        } else if s.contains('\0') {
            Err(OciError::BadDocument {
                name: "config".into(),
                reason: format!("its {field} has an entry with a NUL byte"),
            })
        } else {
            Ok(())
        }
    };
    for (field, list) in [
        ("Entrypoint", &out.entrypoint),
        ("Cmd", &out.cmd),
        ("Env", &out.env),
    ] {
        if list.len() > MAX_OCI_LIST {
            return Err(OciError::ConfigTooLarge {
                field,
                reason: format!("has {} entries", list.len()),
            });
        }
        for s in list {
            check(field, s)?;
        }
    }
    for entry in &out.env {
        if entry.split_once('=').is_none_or(|(key, _)| key.is_empty()) {
            return Err(OciError::BadDocument {
                name: "config".into(),
                reason: format!("the Env entry {entry:?} is not of the form KEY=VALUE"),
            });
        }
    }
    check("WorkingDir", &out.working_dir)?;
    check("User", &out.user)?;
    Ok(out)
}

/// SHA-256 or SHA-512 of a stream, for a digest `alg:hex`.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn for_digest(digest: &str) -> Result<Self, String> {
        match digest.split_once(':') {
            Some(("sha256", _)) => Ok(Self::Sha256(sha2::Sha256::new())),
            Some(("sha512", _)) => Ok(Self::Sha512(sha2::Sha512::new())),
            _ => Err(format!("the digest {digest:?} is not sha256 or sha512")),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    fn check(self, name: &str, expected: &str) -> Result<(), OciError> {
        let (algorithm, hex) = match self {
            Self::Sha256(h) => ("sha256", to_hex(&h.finalize())),
            Self::Sha512(h) => ("sha512", to_hex(&h.finalize())),
        };
        let actual = format!("{algorithm}:{hex}");
        if actual == expected.to_ascii_lowercase() {
            Ok(())
        } else {
            Err(OciError::DigestMismatch {
                name: name.to_string(),
                expected: expected.to_string(),
                actual,
            })
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// What a compressed or plain tar stream decompresses with.
fn decompress<'a>(mut reader: impl io::BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// An imported image: its root filesystem, staged, and its config.
#[derive(Debug)]
pub struct Imported {
    /// The root filesystem (removed when dropped).
    pub rootfs: tempfile::TempDir,
    /// The container config.
    pub config: OciConfig,
}

/// Applies the image of the archive at `path` to a staging directory in
/// `work_dir` and reads its config.
#[tracing::instrument(skip_all, fields(archive = %path.display()))]
pub fn import(path: &Path, work_dir: &Path) -> Result<Imported, OciError> {
    if !cfg!(target_os = "linux") {
        return Err(OciError::Unsupported);
    }
    if !is_root() {
        return Err(OciError::NeedsRoot);
    }
    let bundle = Bundle::open(path)?;
    let image = bundle.image()?;
    let config: ImageConfig =
        bundle.read_json(&image.config.name, image.config.digest.as_deref())?;
    let diff_ids = config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .filter(|ids| ids.len() == image.layers.len());
    let oci = oci_config(config.config)?;

    let rootfs = tempfile::Builder::new()
        .prefix("oci-rootfs-")
        .tempdir_in(work_dir)
        .map_err(|source| OciError::Io {
            archive: path.to_path_buf(),
            name: "a staging directory".into(),
            source,
        })?;
    set_root_mode(rootfs.path()).map_err(|source| OciError::Io {
        archive: path.to_path_buf(),
        name: "the staging directory's mode".into(),
        source,
    })?;
    let count = image.layers.len();
    for (i, blob) in image.layers.iter().enumerate() {
        let layer_err = |source| OciError::Layer {
            index: i + 1,
            count,
            name: blob.name.clone(),
            source,
        };
        let (reader, _) = bundle.open_file(&blob.name)?;
        let hasher = match &blob.digest {
            Some(d) => Some(
                Hasher::for_digest(d).map_err(|reason| OciError::BadDocument {
                    name: "manifest".into(),
                    reason,
                })?,
            ),
            None => None,
        };
        let mut compressed = HashingReader {
            inner: reader,
            hasher,
        };
        let diff_id = diff_ids.as_ref().and_then(|ids| ids.get(i)).cloned();
        let diff_hasher = match &diff_id {
            Some(d) => Some(
                Hasher::for_digest(d).map_err(|reason| OciError::BadDocument {
                    name: "config".into(),
                    reason,
                })?,
            ),
            None => None,
        };
        let mut tar_stream = HashingReader {
            inner: decompress(BufReader::new(&mut compressed))
                .map_err(|e| layer_err(LayerError::Read(e)))?,
            hasher: diff_hasher,
        };
        let stats = layer::apply(&mut tar_stream, rootfs.path()).map_err(layer_err)?;
        // The tar's end-of-archive blocks and padding, then the rest of the
        // compressed stream, must be hashed too.
        io::copy(&mut tar_stream, &mut io::sink()).map_err(|e| layer_err(LayerError::Read(e)))?;
        let diff_hasher = tar_stream.hasher.take();
        drop(tar_stream);
        io::copy(&mut compressed, &mut io::sink()).map_err(|e| layer_err(LayerError::Read(e)))?;
        if let (Some(h), Some(d)) = (diff_hasher, &diff_id) {
            h.check(&format!("uncompressed layer {}", blob.name), d)?;
        }
        if let (Some(h), Some(d)) = (compressed.hasher.take(), &blob.digest) {
            h.check(&blob.name, d)?;
        }
        tracing::debug!(layer = %blob.name, entries = stats.entries, whiteouts = stats.whiteouts, "layer applied");
    }
    Ok(Imported {
        rootfs,
        config: oci,
    })
}

#[cfg(unix)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

#[cfg(unix)]
fn set_root_mode(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::lchown(root, Some(0), Some(0))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_root_mode(_root: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("./a/./b/").unwrap(), "a/b");
        assert_eq!(normalize("a/../b").unwrap(), "b");
        assert_eq!(normalize("../b"), None);
    }

    #[test]
    fn blob_names_are_checked() {
        let hex = "a".repeat(64);
        assert_eq!(
            Bundle::blob_name(&format!("sha256:{hex}")).unwrap(),
            format!("blobs/sha256/{hex}")
        );
        assert!(Bundle::blob_name("sha256:../../etc/passwd").is_err());
        assert!(Bundle::blob_name(&format!("md5:{hex}")).is_err());
        assert!(Bundle::blob_name(&format!("sha256:{}", "A".repeat(64))).is_err());
    }

    #[test]
    fn config_bounds() {
        let too_many = ContainerConfig {
            cmd: Some(vec!["x".into(); MAX_OCI_LIST + 1]),
            ..Default::default()
        };
        let err = oci_config(Some(too_many)).unwrap_err();
        assert!(err.to_string().contains("Cmd has 257 entries"), "{err}");
        let long = ContainerConfig {
            user: Some("u".repeat(MAX_OCI_STRING + 1)),
            ..Default::default()
        };
        assert!(matches!(
            oci_config(Some(long)),
            Err(OciError::ConfigTooLarge { .. })
        ));
        let bad_env = ContainerConfig {
            env: Some(vec!["=x".into()]),
            ..Default::default()
        };
        assert!(matches!(
            oci_config(Some(bad_env)),
            Err(OciError::BadDocument { .. })
        ));
        assert_eq!(oci_config(None).unwrap(), OciConfig::default());
    }

    fn descriptor(os: &str, arch: &str) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{}", arch.len()),
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
            }),
        }
    }

    #[test]
    fn picks_linux_amd64() {
        let list = [descriptor("linux", "arm64"), descriptor("linux", "amd64")];
        assert_eq!(
            choose(&list)
                .unwrap()
                .platform
                .as_ref()
                .unwrap()
                .architecture,
            "amd64"
        );
        let err = choose(&[descriptor("linux", "arm64"), descriptor("linux", "s390x")])
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("linux/arm64, linux/s390x"),
            "{err}"
        );
    }
}
