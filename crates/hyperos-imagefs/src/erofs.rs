//! A directory built into a deterministic EROFS image with `mkfs.erofs`.
//!
//! The same tree gives the same bytes. erofs-utils 1.5 writes directories
//! sorted by name and assigns inodes in that order, so what varies between
//! runs is only what it is told, and each of those is pinned:
//!
//! | varies | pinned by |
//! |---|---|
//! | filesystem UUID | `-U` [`FS_UUID`], a constant (HyperOS names images by archive key and root hash, never by UUID) |
//! | build time, every inode's mtime | `-T` [`timestamp`]: `SOURCE_DATE_EPOCH` if set, else 0 |
//! | `SOURCE_DATE_EPOCH` in the environment | removed: erofs-utils 1.5 then writes 64-byte inodes for every file |
//! | order of creation, directory mtimes | nothing to do: entries are sorted, mtimes replaced by `-T` |
//!
//! Ownership, modes (setuid included), symlinks, hard links, device nodes,
//! fifos and extended attributes (file capabilities) are kept as they are,
//! as containers need them. Extended attributes are written in the order the
//! source filesystem lists them: copies made with `cp -a`, `rsync -X` or
//! `tar --xattrs` keep that order, but setting the same attributes in
//! another order gives another image.
//!
//! Compression is LZ4HC in 16 KiB physical clusters with tail packing (see
//! [`MKFS_OPTIONS`] and the crate README for the measurement): the HyperOS
//! guest kernel (Debian 6.1) has `CONFIG_EROFS_FS_ZIP=y` and LZ4
//! decompression built in, big pclusters since 5.13 and tail packing since
//! 5.17; 16 KiB is also the archive's fetch granularity, so a lazy read of a
//! cluster is one fetch.

use std::path::{Path, PathBuf};

/// The filesystem UUID of every image built here.
pub const FS_UUID: &str = "6f1c2a4e-5d3b-4c8a-9e21-3b7d0a5f8c64";

/// `mkfs.erofs` options besides the UUID and the timestamp.
pub const MKFS_OPTIONS: &[&str] = &["--quiet", "-zlz4hc", "-C16384", "-Eztailpacking"];

/// Errors building an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// This platform cannot build images.
    #[error(
        "building an image from a directory or an OCI archive needs Linux (mkfs.erofs); share an existing ext4, EROFS or squashfs image, or run `hyperos share` inside the HyperOS VM"
    )]
    Unsupported,
    /// `mkfs.erofs` is not installed.
    #[error(
        "mkfs.erofs was not found; install erofs-utils (e.g. `apt install erofs-utils`, or `./x setup`)"
    )]
    MkfsMissing,
    /// The output would land inside the tree being imaged.
    #[error(
        "the work directory {} is inside {}, so the image would contain itself; choose a work directory outside it",
        work_dir.display(),
        source_dir.display()
    )]
    WorkDirInside {
        work_dir: PathBuf,
        source_dir: PathBuf,
    },
    /// `mkfs.erofs` failed.
    #[error("mkfs.erofs failed to build an image of {}: {message}", source_dir.display())]
    Mkfs {
        source_dir: PathBuf,
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("could not {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An image built by [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The image file, in the work directory.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
}

/// The timestamp given to every inode and to the superblock:
/// `SOURCE_DATE_EPOCH` when it is set to a number, else 0.
pub fn timestamp() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Builds an EROFS image of `source_dir` in `work_dir` (created if missing).
#[cfg(target_os = "linux")]
#[tracing::instrument(skip_all, fields(source_dir = %source_dir.display()))]
pub fn build(source_dir: &Path, work_dir: &Path) -> Result<Built, BuildError> {
    use std::process::{Command, Stdio};

    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(work_dir).map_err(io("create the work directory", work_dir))?;
    let source_abs = source_dir
        .canonicalize()
        .map_err(io("resolve", source_dir))?;
    let work_abs = work_dir.canonicalize().map_err(io("resolve", work_dir))?;
    if work_abs.starts_with(&source_abs) {
        return Err(BuildError::WorkDirInside {
            work_dir: work_abs,
            source_dir: source_abs,
        });
    }
    // Deleted on any early return; kept once the image is complete.
    let out = tempfile::Builder::new()
        .prefix("share-")
        .suffix(".erofs")
        .tempfile_in(&work_abs)
        .map_err(io("create an image file in", &work_abs))?
        .into_temp_path();
    let started = std::time::Instant::now();
    let output = Command::new("mkfs.erofs")
        .args(MKFS_OPTIONS)
        .arg(format!("-T{}", timestamp()))
        .arg(format!("-U{FS_UUID}"))
        .arg(&*out)
        .arg(&source_abs)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BuildError::MkfsMissing,
            _ => BuildError::Io {
                action: "run mkfs.erofs for",
                path: source_abs.clone(),
                source: e,
            },
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("; ");
        return Err(BuildError::Mkfs {
            source_dir: source_abs,
            message: if message.is_empty() {
                output.status.to_string()
            } else {
                message
            },
        });
    }
    let len = std::fs::metadata(&out)
        .map_err(io("read the built image", &out))?
        .len();
    let path = out.keep().map_err(|e| BuildError::Io {
        action: "keep the built image",
        path: e.path.to_path_buf(),
        source: e.error,
    })?;
    tracing::info!(image = %path.display(), len, elapsed_ms = started.elapsed().as_millis() as u64, "EROFS image built");
    Ok(Built { path, len })
}

/// Builds an EROFS image of `source_dir`: not on this platform.
#[cfg(not(target_os = "linux"))]
pub fn build(_source_dir: &Path, _work_dir: &Path) -> Result<Built, BuildError> {
    Err(BuildError::Unsupported)
}
