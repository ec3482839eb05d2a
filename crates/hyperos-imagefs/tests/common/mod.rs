//! Shared fixtures: mounting images, walking trees, writing layer tars.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

/// These tests mount images and set owners: they need root (as in CI).
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping {test}: needs root (mounts, owners, device nodes)");
    }
    root
}

/// An image mounted read-only on a loop device; unmounted (and the loop
/// device freed) on drop, also when an assertion fails.
pub struct Mounted {
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(image: &Path, fs_type: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", fs_type, "-o", "loop,ro"])
            .arg(image)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// What is compared of each file: kind and content, mode, owner, the
/// `security.capability` attribute, and which paths share an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub capability: Option<Vec<u8>>,
    /// For a hard-linked file (nlink > 1): the first path of its inode.
    pub link_group: Option<String>,
}

pub fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn get_capability(path: &Path) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings; buf is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

pub fn set_capability(path: &Path, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings; value is readable for its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "lsetxattr: {}", std::io::Error::last_os_error());
}

/// A file capability granting cap_net_raw (as `setcap cap_net_raw+ep`).
pub const CAP_NET_RAW: &[u8] = &[
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

/// Every path under `root` (relative, "" for the root itself) and its node.
pub fn walk(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut paths = vec![PathBuf::new()];
    let mut all = Vec::new();
    while let Some(rel) = paths.pop() {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&full).unwrap() {
                paths.push(rel.join(e.unwrap().file_name()));
            }
        }
        all.push(rel);
    }
    all.sort();
    for rel in all {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(&full).unwrap().display()
            )
        } else if ft.is_file() {
            let mut bytes = Vec::new();
            std::fs::File::open(&full)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            format!("file {}", sha256(&bytes))
        } else if ft.is_fifo() {
            "fifo".into()
        } else if ft.is_char_device() {
            format!("char {}", meta.rdev())
        } else if ft.is_block_device() {
            format!("block {}", meta.rdev())
        } else {
            "other".into()
        };
        let name = rel.to_string_lossy().into_owned();
        let link_group = (!ft.is_dir() && meta.nlink() > 1).then(|| {
            inodes
                .entry(meta.ino())
                .or_insert_with(|| name.clone())
                .clone()
        });
        out.insert(
            name,
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                capability: if ft.is_symlink() {
                    None
                } else {
                    get_capability(&full)
                },
                link_group,
            },
        );
    }
    out
}

/// Asserts two trees are equal, naming the first differences.
pub fn assert_same_tree(expected: &BTreeMap<String, Node>, actual: &BTreeMap<String, Node>) {
    let mut problems = Vec::new();
    for (path, node) in expected {
        match actual.get(path) {
            None => problems.push(format!("missing: {path:?}")),
            Some(a) if a != node => problems.push(format!(
                "differs: {path:?}\n  expected {node:?}\n  actual   {a:?}"
            )),
            Some(_) => {}
        }
    }
    for path in actual.keys() {
        if !expected.contains_key(path) {
            problems.push(format!("unexpected: {path:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "trees differ:\n{}",
        problems.join("\n")
    );
}

/// Writes tar entries with raw names, so hostile names can be written too.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }
}

impl LayerTar {
    fn header(name: &str, kind: tar::EntryType, mode: u32, owner: (u64, u64)) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        assert!(name.len() < 100, "name too long for this fixture");
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    fn link_name(h: &mut tar::Header, target: &str) {
        assert!(target.len() < 100);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
    }

    pub fn dir(mut self, name: &str, mode: u32, owner: (u64, u64)) -> Self {
        let mut h = Self::header(name, tar::EntryType::Directory, mode, owner);
        h.set_cksum();
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn file(mut self, name: &str, mode: u32, owner: (u64, u64), data: &[u8]) -> Self {
        let mut h = Self::header(name, tar::EntryType::Regular, mode, owner);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    /// A file with a `security.capability` extended attribute (PAX header).
    pub fn file_with_capability(self, name: &str, mode: u32, data: &[u8], cap: &[u8]) -> Self {
        let mut this = self;
        let key = "SCHILY.xattr.security.capability";
        let base = key.len() + cap.len() + 3;
        let mut record_len = base + 1;
        while record_len != base + record_len.to_string().len() {
            record_len = base + record_len.to_string().len();
        }
        let mut record = format!("{record_len} {key}=").into_bytes();
        record.extend_from_slice(cap);
        record.push(b'\n');
        assert_eq!(record.len(), record_len);
        let mut h = Self::header("PaxHeader", tar::EntryType::XHeader, 0o644, (0, 0));
        h.set_size(record.len() as u64);
        h.set_cksum();
        this.builder.append(&h, &record[..]).unwrap();
        this.file(name, mode, (0, 0), data)
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(name, tar::EntryType::Symlink, 0o777, (0, 0));
        Self::link_name(&mut h, target);
        h.set_cksum();
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(name, tar::EntryType::Link, 0o644, (0, 0));
        Self::link_name(&mut h, target);
        h.set_cksum();
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn fifo(mut self, name: &str, mode: u32) -> Self {
        let mut h = Self::header(name, tar::EntryType::Fifo, mode, (0, 0));
        h.set_cksum();
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn char_device(mut self, name: &str, mode: u32, major: u32, minor: u32) -> Self {
        let mut h = Self::header(name, tar::EntryType::Char, mode, (0, 0));
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    /// An empty regular file: a whiteout or an opaque marker.
    pub fn marker(self, name: &str) -> Self {
        self.file(name, 0o644, (0, 0), b"")
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// Appends a regular file to an outer archive tar.
pub fn add(outer: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    outer.append_data(&mut h, name, data).unwrap();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}
