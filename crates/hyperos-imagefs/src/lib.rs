//! What `hyperos share PATH` publishes: PATH turned into one read-only
//! filesystem image file and its metadata, for the archive layer to chunk
//! and sign. No network; the archive format lives in `hyperos-archive`.
//!
//! ```text
//! PATH ──detect (by magic)──▶ Source::Image(ext4|erofs|squashfs) ─────────────▶ shared as is
//!                         └─▶ Source::Directory ────────── mkfs.erofs ────────▶ deterministic EROFS
//!                         └─▶ Source::OciArchive ─ layers + whiteouts ─▶ staging dir ─▶ EROFS + OciConfig
//! ```
//!
//! - [`detect`] looks at content, never at names: the ext2/3/4 superblock
//!   magic, the EROFS superblock magic, squashfs' `hsqs`, a directory (an OCI
//!   image layout if it holds `oci-layout` and `index.json`), or a tar whose
//!   root holds `manifest.json` (`docker save`) or `oci-layout` and
//!   `index.json` (an OCI image layout as a tar).
//! - [`prepare`] returns the image to share. Existing images are shared in
//!   place; everything else is built into `work_dir` as an EROFS image
//!   (module [`erofs`]: the same tree gives the same bytes), and the image
//!   config of an OCI/Docker archive is returned as an [`OciConfig`] within
//!   the archive format's bounds.
//! - Layers are applied by module [`layer`], which treats every archive as
//!   hostile: no entry is written outside the staging root (`..` and
//!   absolute names are refused, symlinks are resolved as if the root were
//!   `/`), and nothing is ever written through a symlink.
//!
//! Building images needs `mkfs.erofs` (erofs-utils ≥ 1.5) and therefore
//! Linux; importing OCI archives also needs root, to keep file ownership and
//! create device nodes. Elsewhere those cases return a clear error, while
//! existing images can be detected and shared on every platform.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use hyperos_archive::{FsType, OciConfig};

pub mod erofs;
pub mod layer;
pub mod oci;

/// What a path given to `hyperos share` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An existing filesystem image file.
    Image(FsType),
    /// A directory, to be built into an image.
    Directory,
    /// A `docker save` tar, or an OCI image layout (a directory or a tar).
    OciArchive,
}

/// The image to share, ready for chunking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The image file to share.
    pub path: PathBuf,
    /// The filesystem inside it.
    pub fs_type: FsType,
    /// Its length in bytes.
    pub len: u64,
    /// The container config, for images made from OCI/Docker archives.
    pub oci: Option<OciConfig>,
    /// Whether `path` was made by [`prepare`] in its `work_dir` (the caller
    /// deletes it when done) rather than being the user's own file.
    pub temporary: bool,
}

/// Errors detecting or preparing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageFsError {
    /// The path is none of the things that can be shared.
    #[error(
        "{} is not a filesystem image (ext4, EROFS, squashfs), a directory, or an OCI/Docker image archive: {reason}",
        path.display()
    )]
    NotShareable { path: PathBuf, reason: String },
    /// Reading or writing a file failed.
    #[error("could not {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Building the image failed.
    #[error(transparent)]
    Build(#[from] erofs::BuildError),
    /// The OCI/Docker archive could not be read or applied.
    #[error(transparent)]
    Oci(#[from] oci::OciError),
}

impl ImageFsError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// ext2/3/4: the superblock starts at byte 1024; `s_magic` is at offset 56.
const EXT_MAGIC_OFFSET: usize = 1024 + 56;
const EXT_MAGIC: [u8; 2] = 0xEF53u16.to_le_bytes();
/// EROFS: the superblock starts at byte 1024 with its magic.
const EROFS_MAGIC_OFFSET: usize = 1024;
const EROFS_MAGIC: [u8; 4] = 0xE0F5_E1E2u32.to_le_bytes();
/// squashfs 4 (little-endian), at byte 0.
const SQUASHFS_MAGIC: [u8; 4] = *b"hsqs";
/// `ustar` at byte 257 of a POSIX or GNU tar header.
const TAR_MAGIC_OFFSET: usize = 257;

/// Tells what `path` is, by its content.
pub fn detect(path: &Path) -> Result<Source, ImageFsError> {
    let not = |reason: &str| ImageFsError::NotShareable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(ImageFsError::io("read", path))?;
    if meta.is_dir() {
        return Ok(if oci::is_layout_dir(path) {
            Source::OciArchive
        } else {
            Source::Directory
        });
    }
    if !meta.is_file() {
        return Err(not(
            "it is not a regular file (give an image file, not a device or socket)",
        ));
    }
    let mut head = Vec::with_capacity(4096);
    File::open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .map_err(ImageFsError::io("read", path))?;
    if let Some(fs_type) = fs_type_of(&head) {
        return Ok(Source::Image(fs_type));
    }
    if head.is_empty() {
        return Err(not("it is empty"));
    }
    if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(not(
            "it is compressed (gzip or zstd); decompress it first, e.g. `gunzip -k` or `zstd -d`",
        ));
    }
    if head.get(TAR_MAGIC_OFFSET..TAR_MAGIC_OFFSET + 5) == Some(b"ustar") {
        return match oci::tar_kind(path)? {
            Some(_) => Ok(Source::OciArchive),
            None => Err(not(
                "it is a tar archive without manifest.json (docker save) or oci-layout and index.json (OCI image layout) at its root",
            )),
        };
    }
    Err(not("its first bytes match none of these formats"))
}

/// The filesystem whose magic the first 4 KiB of a file carry.
fn fs_type_of(head: &[u8]) -> Option<FsType> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &SQUASHFS_MAGIC) {
        Some(FsType::Squashfs)
    } else if at(EROFS_MAGIC_OFFSET, &EROFS_MAGIC) {
        Some(FsType::Erofs)
    } else if at(EXT_MAGIC_OFFSET, &EXT_MAGIC) {
        Some(FsType::Ext4)
    } else {
        None
    }
}

/// Turns `path` into the image file to share.
///
/// An existing image is returned in place (`temporary: false`). A directory
/// or an OCI/Docker archive is built into a new EROFS image in `work_dir`
/// (created if missing; `temporary: true`), with a staging directory there
/// for the layers of an archive, removed before returning.
#[tracing::instrument(skip_all, fields(path = %path.display()))]
pub fn prepare(path: &Path, work_dir: &Path) -> Result<Prepared, ImageFsError> {
    let source = detect(path)?;
    tracing::debug!(?source, "detected");
    match source {
        Source::Image(fs_type) => {
            let path = std::path::absolute(path).map_err(ImageFsError::io("resolve", path))?;
            let len = std::fs::metadata(&path)
                .map_err(ImageFsError::io("read", &path))?
                .len();
            Ok(Prepared {
                path,
                fs_type,
                len,
                oci: None,
                temporary: false,
            })
        }
        Source::Directory => {
            let image = erofs::build(path, work_dir)?;
            Ok(Prepared {
                path: image.path,
                fs_type: FsType::Erofs,
                len: image.len,
                oci: None,
                temporary: true,
            })
        }
        Source::OciArchive => {
            std::fs::create_dir_all(work_dir)
                .map_err(ImageFsError::io("create the work directory", work_dir))?;
            let imported = oci::import(path, work_dir)?;
            let image = erofs::build(imported.rootfs.path(), work_dir)?;
            Ok(Prepared {
                path: image.path,
                fs_type: FsType::Erofs,
                len: image.len,
                oci: Some(imported.config),
                temporary: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        let mut head = vec![0u8; 4096];
        assert_eq!(fs_type_of(&head), None);
        head[1080..1082].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(fs_type_of(&head), Some(FsType::Ext4));
        head[1024..1028].copy_from_slice(&[0xe2, 0xe1, 0xf5, 0xe0]);
        assert_eq!(fs_type_of(&head), Some(FsType::Erofs));
        head[..4].copy_from_slice(b"hsqs");
        assert_eq!(fs_type_of(&head), Some(FsType::Squashfs));
        assert_eq!(fs_type_of(b"hsq"), None);
        assert_eq!(fs_type_of(&[0u8; 1081]), None);
    }
}
