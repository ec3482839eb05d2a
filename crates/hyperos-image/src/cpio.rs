//! A writer (and, for checks, a reader) of the cpio "newc" format the Linux
//! kernel unpacks as its initramfs.
//!
//! Every entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated name padded to a multiple of 4, then the data
//! padded to a multiple of 4. The archive ends with an entry named
//! `TRAILER!!!`.
//!
//! The writer is reproducible by construction: owner and group are 0, every
//! entry has the same mtime, inode numbers count up from 1 in write order, and
//! there are no hard links (every `nlink` is 1, 2 for directories). It refuses
//! paths that are not strictly increasing, so an archive is always sorted,
//! free of duplicates, and lists a directory before its contents.

use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// Writes a newc archive entry by entry.
pub struct CpioWriter<W: Write> {
    out: W,
    mtime: u32,
    next_ino: u32,
    last_path: Option<String>,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive whose entries all carry `mtime` (seconds since the epoch).
    pub fn new(out: W, mtime: u32) -> Self {
        CpioWriter {
            out,
            mtime,
            next_ino: 1,
            last_path: None,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A directory; `perm` holds the permission bits (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file with its contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link; the data of a symlink entry is its target.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node such as `/dev/console` (5, 1).
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.raw_entry(TRAILER, 0, 0, 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        if path.is_empty() || path.starts_with('/') || path.contains('\0') || path == TRAILER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio path {path:?} must be relative, non-empty and without NUL"),
            ));
        }
        if let Some(last) = &self.last_path
            && path.as_bytes() <= last.as_bytes()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cpio path {path:?} comes after {last:?}: entries must be sorted and unique"
                ),
            ));
        }
        self.last_path = Some(path.to_owned());
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(path, ino, mode, nlink, rdev, data)
    }

    fn raw_entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is larger than 4 GiB, too large for cpio newc"),
            )
        })?;
        let name_size = name.len() as u32 + 1;
        let mtime = if name == TRAILER { 0 } else { self.mtime };
        let fields = [
            ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        header.resize(pad4(header.len()), 0);
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        let padding = pad4(data.len()) - data.len();
        self.out.write_all(&[0; 3][..padding])?;
        self.written += (header.len() + data.len() + padding) as u64;
        Ok(())
    }
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    pub path: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    /// File contents, or the target of a symlink.
    pub data: Vec<u8>,
}

impl CpioEntry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    /// The target of a symlink entry.
    pub fn link_target(&self) -> Option<&str> {
        self.is_symlink()
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten()
    }
}

/// A newc archive that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio archive is truncated at byte {0}: the file is incomplete, rebuild it")]
    Truncated(usize),
    #[error("cpio entry at byte {0} has no newc magic 070701: this is not a newc archive")]
    Magic(usize),
    #[error("cpio header at byte {0} has a field that is not 8 hex digits: the archive is corrupt")]
    Field(usize),
    #[error("cpio entry name at byte {0} is not UTF-8: the archive is corrupt")]
    Name(usize),
}

/// Reads every entry of a newc archive (without the trailer).
pub fn read_archive(bytes: &[u8]) -> Result<Vec<CpioEntry>, CpioError> {
    let mut entries = Vec::new();
    let mut pos = 0;
    loop {
        let header = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or(CpioError::Truncated(pos))?;
        if &header[..6] != MAGIC {
            return Err(CpioError::Magic(pos));
        }
        let start = pos;
        let field = move |i: usize| -> Result<u32, CpioError> {
            let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| CpioError::Field(start))?;
            u32::from_str_radix(text, 16).map_err(|_| CpioError::Field(start))
        };
        let name_size = field(11)? as usize;
        let size = field(6)? as usize;
        let name_start = pos + HEADER_LEN;
        let name_bytes = bytes
            .get(name_start..name_start + name_size.saturating_sub(1))
            .ok_or(CpioError::Truncated(name_start))?;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| CpioError::Name(name_start))?
            .to_owned();
        let data_start = pad4(name_start + name_size);
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or(CpioError::Truncated(data_start))?;
        pos = pad4(data_start + size);
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            path: name,
            ino: field(0)?,
            mode: field(1)?,
            uid: field(2)?,
            gid: field(3)?,
            nlink: field(4)?,
            mtime: field(5)?,
            rdev: (field(9)?, field(10)?),
            data: data.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new(), 0);
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        w.dir("usr", 0o755).unwrap();
        w.dir("usr/bin", 0o755).unwrap();
        w.symlink("usr/bin/sh", "busybox").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_fields_and_padding() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        // First entry: "dev", inode 1, directory 0755, nlink 2, name size 4.
        let header = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(
            header,
            "070701\
             00000001\
             000041ED\
             00000000\
             00000000\
             00000002\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000004\
             00000000"
        );
        // 110 + 4 bytes of name = 114, padded to 116.
        assert_eq!(&bytes[110..116], b"dev\0\0\0");
        assert_eq!(&bytes[116..122], b"070701");
        // The archive ends with the trailer entry.
        let tail = String::from_utf8_lossy(&bytes[bytes.len() - 16..]).into_owned();
        assert!(tail.contains("TRAILER!!!"), "{tail:?}");
    }

    #[test]
    fn round_trip() {
        let entries = read_archive(&sample()).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["dev", "dev/console", "init", "usr", "usr/bin", "usr/bin/sh"]
        );
        let inos: Vec<_> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5, 6]);
        assert!(
            entries
                .iter()
                .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 0)
        );
        assert_eq!(entries[1].rdev, (5, 1));
        assert_eq!(entries[1].mode, S_IFCHR | 0o600);
        assert!(entries[2].is_file());
        assert_eq!(entries[2].data, b"#!/bin/sh\n");
        assert_eq!(entries[5].link_target(), Some("busybox"));
        assert_eq!(entries[5].mode, S_IFLNK | 0o777);
    }

    #[test]
    fn data_padding_for_every_length() {
        for len in 0..9 {
            let mut w = CpioWriter::new(Vec::new(), 7);
            w.file("f", 0o644, &vec![b'x'; len]).unwrap();
            w.file("g", 0o644, b"end").unwrap();
            let bytes = w.finish().unwrap();
            assert_eq!(bytes.len() % 4, 0);
            let entries = read_archive(&bytes).unwrap();
            assert_eq!(entries[0].data.len(), len);
            assert_eq!(entries[1].data, b"end");
            assert_eq!(entries[0].mtime, 7);
        }
    }

    #[test]
    fn refuses_unsorted_duplicate_and_absolute_paths() {
        let mut w = CpioWriter::new(Vec::new(), 0);
        w.dir("usr", 0o755).unwrap();
        assert!(w.dir("etc", 0o755).is_err());
        assert!(w.dir("usr", 0o755).is_err());
        assert!(w.dir("/var", 0o755).is_err());
    }

    #[test]
    fn real_cpio_tool_lists_and_extracts() {
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("cpio is not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, sample()).unwrap();
        let list = std::process::Command::new("cpio")
            .args(["-i", "-t", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let listed = String::from_utf8(list.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            ["dev", "dev/console", "init", "usr", "usr/bin", "usr/bin/sh"]
        );

        // Extract everything but the device node (which needs CAP_MKNOD).
        let out = dir.path().join("x");
        std::fs::create_dir(&out).unwrap();
        let status = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&archive)
            .args(["init", "usr", "usr/bin", "usr/bin/sh"])
            .current_dir(&out)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(out.join("init")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::read_link(out.join("usr/bin/sh")).unwrap().to_str(),
            Some("busybox")
        );
    }
}
