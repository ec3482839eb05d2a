//! The lazy image mount.
//!
//! ```text
//!  reader (open, read)                  kernel
//!     │                                   │
//!  DIR ── ext4 / EROFS / squashfs ── loop device ── <fuse dir>/image ── FUSE ── LazyImageFs
//!                                                                                 │ read(offset, len)
//!                                                                                 ▼
//!                                                                    ImageSource::read_at
//!                                                       (verified cache, else fetch from peers)
//! ```
//!
//! The image is never materialised: the FUSE layer exposes one read-only file,
//! `image`, whose reads go to an [`ImageSource`], which returns only bytes it
//! has verified (the archive layer checks each range against the BLAKE3 tree
//! before it returns). The filesystem inside is then mounted read-only from
//! that file through a loop device. Reads run on several FUSE threads, so one
//! slow fetch doesn't stall the others; a source error becomes `EIO` for the
//! reader, never a hang: the source bounds every read with a deadline.

#[cfg(target_os = "linux")]
mod fs;
#[cfg(target_os = "linux")]
mod mount;

#[cfg(target_os = "linux")]
pub use fs::LazyImageFs;
#[cfg(target_os = "linux")]
pub use mount::{MountedImage, mount_image};

use std::path::PathBuf;

/// Where the bytes of an image come from. Implementations return only
/// verified bytes, and bound every call with a deadline.
pub trait ImageSource: Send + Sync + 'static {
    /// Length of the image in bytes.
    fn len(&self) -> u64;

    /// Whether the image is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `len` bytes at `offset` (fewer only at the end of the
    /// image). Blocking; called from FUSE worker threads.
    fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, ReadError>;
}

/// Why a read failed. Readers see `EIO` for every kind.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no peer delivered the data within the deadline")]
    Timeout,
    #[error("the data is unavailable: {0}")]
    Unavailable(String),
}

/// A mount that could not be made or undone.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{path} is not an empty directory: mount onto an empty directory")]
    BadMountPoint { path: PathBuf },
    #[error(
        "could not start the FUSE file system at {path}: {source}; is /dev/fuse available (modprobe fuse)?"
    )]
    Fuse {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting the {fs_type} file system at {path} failed: {why}")]
    Mount {
        fs_type: String,
        path: PathBuf,
        why: String,
    },
    #[error(
        "unmounting {path} failed: {why}; close what is using it (`fuser -m {path}`) and retry"
    )]
    Unmount { path: PathBuf, why: String },
    #[error("lazy mounts need Linux")]
    Unsupported,
}

/// Serves an image from a local file: for tests, and for images already
/// complete on disk.
#[derive(Debug)]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

impl FileSource {
    pub fn open(path: &std::path::Path) -> std::io::Result<FileSource> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

impl ImageSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, ReadError> {
        let end = offset.saturating_add(u64::from(len)).min(self.len);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        read_exact_at(&self.file, &mut buf, offset)
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        Ok(buf)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
        offset += n as u64;
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn read_exact_at(_file: &std::fs::File, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
