//! The FUSE side: a root directory holding one read-only file, `image`.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, LockOwner, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyEntry, Request,
};

use crate::ImageSource;

/// Name of the image file in the FUSE mount.
pub const IMAGE_NAME: &str = "image";
const IMAGE_INO: INodeNo = INodeNo(2);
/// The image never changes while mounted: the kernel may cache attributes.
const TTL: Duration = Duration::from_secs(3600);

/// Counters a front end shows as progress.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub reads: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

/// The FUSE file system over an [`ImageSource`].
pub struct LazyImageFs<S: ImageSource> {
    source: Arc<S>,
    stats: Arc<ReadStats>,
}

impl<S: ImageSource> std::fmt::Debug for LazyImageFs<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyImageFs")
            .field("len", &self.source.len())
            .finish()
    }
}

impl<S: ImageSource> LazyImageFs<S> {
    pub fn new(source: Arc<S>, stats: Arc<ReadStats>) -> Self {
        LazyImageFs { source, stats }
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o555, 0, 2),
            IMAGE_INO => (FileType::RegularFile, 0o444, self.source.len(), 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }
}

impl<S: ImageSource> Filesystem for LazyImageFs<S> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent, self.attr(IMAGE_INO)) {
            (INodeNo::ROOT, Some(attr)) if name == IMAGE_NAME => {
                reply.entry(&TTL, &attr, fuser::Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != IMAGE_INO {
            reply.error(Errno::ENOENT);
            return;
        }
        if offset >= self.source.len() {
            reply.data(&[]);
            return;
        }
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        match self.source.read_at(offset, size) {
            Ok(bytes) => {
                self.stats
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                reply.data(&bytes);
            }
            Err(err) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(offset, size, %err, "image read failed");
                reply.error(Errno::EIO);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        // Read-only: nothing to write back.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (IMAGE_INO, FileType::RegularFile, IMAGE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
