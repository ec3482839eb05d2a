//! The image's file tree, and the index of staged package files it is filled from.
//!
//! Paths are absolute and in merged-/usr form: `/bin`, `/sbin`, `/lib` and
//! `/lib64` are symlinks into `/usr`, so a package file at `/sbin/mke2fs`
//! lives at `/usr/sbin/mke2fs` ([`merged`]). The tree is a sorted map, which
//! is the order the cpio archive needs: a directory before its contents.
//! Every node records the component it is counted in for the size report and
//! the package it came from.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cpio::CpioWriter;
use crate::fsutil;

/// Top-level directories that are symlinks into /usr.
pub const MERGED_DIRS: &[&str] = &["bin", "sbin", "lib", "lib64"];

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot read {path} while assembling the image")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is in none of the image's packages: fix the path in image/image.toml or add the package that ships it to `roots`"
    )]
    NotFound { path: String },
    #[error(
        "{path} is a symlink loop in the packages: the package is broken, remove the path from image/image.toml"
    )]
    SymlinkLoop { path: String },
    #[error(
        "{path} would be placed under {parent}, which is not a directory in the image: remove one of the two from image/include or image/image.toml"
    )]
    NotADirectory { path: String, parent: String },
    #[error("cannot write the initrd archive")]
    Write(#[source] std::io::Error),
}

/// Maps a package path to its merged-/usr path and normalises `.`/`..`.
pub fn merged(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts
        .first()
        .is_some_and(|first| MERGED_DIRS.contains(first))
    {
        parts.insert(0, "usr");
    }
    format!("/{}", parts.join("/"))
}

/// Where a symlink at `link` pointing to `target` leads, merged.
pub fn follow(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        merged(target)
    } else {
        let dir = link.rsplit_once('/').map_or("", |(d, _)| d);
        merged(&format!("{dir}/{target}"))
    }
}

/// A file or symlink of a staged package.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub package: String,
    pub source: PathBuf,
    pub symlink: Option<String>,
}

/// Every file of the staged packages, by merged path. Where two packages ship
/// the same path, the first package wins.
#[derive(Debug, Default)]
pub struct PackageFiles {
    files: BTreeMap<String, StagedFile>,
}

impl PackageFiles {
    /// Indexes the unpacked packages (`(name, staging dir)`), in order.
    pub fn index(packages: &[(String, PathBuf)]) -> Result<Self, RootfsError> {
        let mut index = PackageFiles::default();
        for (name, dir) in packages {
            index.add_tree(name, dir, dir)?;
        }
        Ok(index)
    }

    fn add_tree(&mut self, package: &str, root: &Path, dir: &Path) -> Result<(), RootfsError> {
        let err = |source| RootfsError::Read {
            path: dir.to_owned(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            let path = entry.path();
            let kind = entry.file_type().map_err(err)?;
            if kind.is_dir() {
                self.add_tree(package, root, &path)?;
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let key = merged(&rel.to_string_lossy());
            let symlink = if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|source| RootfsError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(target.to_string_lossy().into_owned())
            } else {
                None
            };
            self.files.entry(key).or_insert(StagedFile {
                package: package.to_owned(),
                source: path,
                symlink,
            });
        }
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&StagedFile> {
        self.files.get(path)
    }

    /// Follows symlinks from `path` to a regular file.
    pub fn canonical(&self, path: &str) -> Result<(String, &StagedFile), RootfsError> {
        let mut current = merged(path);
        for _ in 0..40 {
            let file = self
                .files
                .get(&current)
                .ok_or_else(|| RootfsError::NotFound {
                    path: current.clone(),
                })?;
            match &file.symlink {
                Some(target) => current = follow(&current, target),
                None => return Ok((current, file)),
            }
        }
        Err(RootfsError::SymlinkLoop {
            path: path.to_owned(),
        })
    }
}

impl crate::elf::LibraryRoot for PackageFiles {
    fn canonical(&self, path: &str) -> Option<String> {
        PackageFiles::canonical(self, path).ok().map(|(p, _)| p)
    }
    fn read(&self, canonical: &str) -> std::io::Result<Vec<u8>> {
        match self.files.get(canonical) {
            Some(file) => std::fs::read(&file.source),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                canonical.to_owned(),
            )),
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum Contents {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Dir,
    File(Contents),
    Symlink(String),
    CharDevice(u32, u32),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u32,
    /// Component of the size report.
    pub component: String,
    /// Package the node came from, if any.
    pub package: Option<String>,
}

impl Node {
    pub fn dir(mode: u32, component: &str) -> Node {
        Node {
            kind: NodeKind::Dir,
            mode,
            component: component.to_owned(),
            package: None,
        }
    }
    pub fn symlink(target: &str, component: &str) -> Node {
        Node {
            kind: NodeKind::Symlink(target.to_owned()),
            mode: 0o777,
            component: component.to_owned(),
            package: None,
        }
    }
    pub fn bytes(data: impl Into<Vec<u8>>, mode: u32, component: &str) -> Node {
        Node {
            kind: NodeKind::File(Contents::Bytes(data.into())),
            mode,
            component: component.to_owned(),
            package: None,
        }
    }
}

/// Bytes one component adds to the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentBytes {
    pub entries: usize,
    /// Archive bytes: headers, names, contents, padding.
    pub archive_bytes: u64,
    /// Size of the component's file contents compressed alone with fast gzip,
    /// used to estimate its share of the real compressed archive.
    pub compressed_alone: u64,
}

/// The image file tree.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    /// Adds a node unless the path is taken; returns whether it was added.
    pub fn add(&mut self, path: &str, node: Node) -> bool {
        if self.nodes.contains_key(path) {
            return false;
        }
        self.nodes.insert(path.to_owned(), node);
        true
    }

    /// Adds or replaces a node (a directory keeps its place and takes the new mode).
    pub fn put(&mut self, path: &str, node: Node) {
        match self.nodes.get_mut(path) {
            Some(old)
                if matches!(old.kind, NodeKind::Dir) && matches!(node.kind, NodeKind::Dir) =>
            {
                old.mode = node.mode
            }
            _ => {
                self.nodes.insert(path.to_owned(), node);
            }
        }
    }

    /// Adds every missing parent directory (0755) and checks that no node
    /// sits below a non-directory.
    pub fn complete_parents(&mut self) -> Result<(), RootfsError> {
        let paths: Vec<String> = self.nodes.keys().cloned().collect();
        for path in paths {
            let mut parent = path.as_str();
            while let Some((up, _)) = parent.rsplit_once('/') {
                if up.is_empty() {
                    break;
                }
                match self.nodes.get(up) {
                    Some(node) if matches!(node.kind, NodeKind::Dir) => {}
                    Some(_) => {
                        return Err(RootfsError::NotADirectory {
                            path: path.clone(),
                            parent: up.to_owned(),
                        });
                    }
                    None => {
                        self.nodes.insert(up.to_owned(), Node::dir(0o755, "other"));
                    }
                }
                parent = up;
            }
        }
        Ok(())
    }

    /// Writes the tree as a newc archive and reports the bytes per component.
    pub fn write_cpio<W: Write>(
        &self,
        out: W,
        mtime: u32,
    ) -> Result<(W, BTreeMap<String, ComponentBytes>), RootfsError> {
        let mut writer = CpioWriter::new(out, mtime);
        let mut sizes: BTreeMap<String, ComponentBytes> = BTreeMap::new();
        let mut estimators: BTreeMap<String, flate2::write::GzEncoder<Counter>> = BTreeMap::new();
        for (path, node) in &self.nodes {
            let name = &path[1..];
            let before = writer.written();
            match &node.kind {
                NodeKind::Dir => writer.dir(name, node.mode),
                NodeKind::Symlink(target) => writer.symlink(name, target),
                NodeKind::CharDevice(major, minor) => {
                    writer.char_device(name, node.mode, *major, *minor)
                }
                NodeKind::File(contents) => {
                    let data = match contents {
                        Contents::Bytes(bytes) => std::borrow::Cow::Borrowed(bytes.as_slice()),
                        Contents::Path(source) => {
                            std::borrow::Cow::Owned(std::fs::read(source).map_err(|e| {
                                RootfsError::Read {
                                    path: source.clone(),
                                    source: e,
                                }
                            })?)
                        }
                    };
                    estimators
                        .entry(node.component.clone())
                        .or_insert_with(|| {
                            flate2::write::GzEncoder::new(Counter(0), flate2::Compression::fast())
                        })
                        .write_all(&data)
                        .map_err(RootfsError::Write)?;
                    writer.file(name, node.mode, &data)
                }
            }
            .map_err(RootfsError::Write)?;
            let size = sizes.entry(node.component.clone()).or_default();
            size.entries += 1;
            size.archive_bytes += writer.written() - before;
        }
        let out = writer.finish().map_err(RootfsError::Write)?;
        for (component, encoder) in estimators {
            let counter = encoder.finish().map_err(RootfsError::Write)?;
            sizes.entry(component).or_default().compressed_alone = counter.0;
        }
        Ok((out, sizes))
    }
}

/// A writer that only counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Permission bits of a staged file.
pub fn staged_mode(path: &Path) -> Result<(u32, Option<(u64, u64)>), RootfsError> {
    let meta = std::fs::metadata(path).map_err(|source| RootfsError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((fsutil::mode(&meta), fsutil::file_id(&meta)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_paths() {
        assert_eq!(
            merged("./lib/x86_64-linux-gnu/libc.so.6"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(merged("/sbin/mke2fs"), "/usr/sbin/mke2fs");
        assert_eq!(
            merged("/lib64/ld-linux-x86-64.so.2"),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(merged("/usr/bin/../lib/x"), "/usr/lib/x");
        assert_eq!(merged("/libexec/x"), "/libexec/x");
        assert_eq!(
            follow("/usr/lib64/ld.so", "/lib/x86_64-linux-gnu/ld.so"),
            "/usr/lib/x86_64-linux-gnu/ld.so"
        );
        assert_eq!(follow("/usr/sbin/mkfs.ext4", "mke2fs"), "/usr/sbin/mke2fs");
    }

    #[test]
    fn parents_are_added_and_sorted_before_children() {
        let mut tree = Tree::default();
        tree.add("/usr/bin/sh", Node::symlink("busybox", "busybox"));
        tree.add("/etc/motd", Node::bytes("hi\n", 0o644, "other"));
        tree.complete_parents().unwrap();
        let paths: Vec<_> = tree.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["/etc", "/etc/motd", "/usr", "/usr/bin", "/usr/bin/sh"]
        );
        let (bytes, sizes) = tree.write_cpio(Vec::new(), 0).unwrap();
        let entries = crate::cpio::read_archive(&bytes).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(sizes["busybox"].entries, 1);
        assert_eq!(sizes["other"].entries, 4);
    }

    #[test]
    fn nothing_below_a_symlink() {
        let mut tree = Tree::default();
        tree.add("/lib", Node::symlink("usr/lib", "other"));
        tree.add("/lib/x", Node::bytes("x", 0o644, "other"));
        assert!(matches!(
            tree.complete_parents(),
            Err(RootfsError::NotADirectory { .. })
        ));
    }
}
