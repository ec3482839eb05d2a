//! Applying image layers (tar streams) to a staging directory, treating
//! every layer as hostile.
//!
//! The rules, those of the OCI image spec's changeset layers:
//!
//! - Entries are applied in order; a later entry replaces an earlier one,
//!   except that a directory entry over an existing directory only updates
//!   its owner and mode.
//! - `.wh.NAME` deletes `NAME` from the lower layers; `.wh..wh..opq` deletes
//!   every entry of its directory that the lower layers made (wherever the
//!   marker appears among the layer's entries); other `.wh..wh.` names (aufs
//!   bookkeeping) are ignored.
//! - Modes (setuid, setgid, sticky included), numeric owners, symlinks, hard
//!   links, fifos, device nodes and `SCHILY.xattr.*` extended attributes
//!   are kept. Modification times are not: the image builder pins them.
//!
//! And the containment rules, so that nothing outside the staging root is
//! ever created, changed, deleted, linked to or read:
//!
//! - Entry and hard-link names that are absolute or contain `..` are
//!   refused ([`LayerError::UnsafeName`]).
//! - Symlinks met on the way to an entry's parent directory are resolved as
//!   the container will see them, with the staging root as `/`: an absolute
//!   target starts again from the root, and `..` stops at the root. So a
//!   layer that makes `etc -> /etc` and then writes `etc/passwd` writes the
//!   image's `/etc/passwd`, never the host's.
//! - The last component of a name is never followed: an entry replaces
//!   whatever is there (a symlink included) and files are created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`.
//! - A hard link is made to the resolved entry itself, never through a
//!   symlink (`linkat` without `AT_SYMLINK_FOLLOW`).
//!
//! This needs root (owners, device nodes) and is Linux/Unix only.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// The most symlinks followed while resolving one name (as Linux: 40).
const MAX_SYMLINKS: usize = 40;
/// The marker that makes a directory opaque.
const OPAQUE: &str = ".wh..wh..opq";
/// The prefix of whiteout names.
const WHITEOUT: &str = ".wh.";

/// Errors applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An entry's name could escape the root.
    #[error(
        "the layer has an entry {name:?} that is {why}; the image is broken or hostile, and it was not imported"
    )]
    UnsafeName { name: PathBuf, why: &'static str },
    /// Symlinks loop, or nest too deep.
    #[error(
        "resolving {name:?} in the layer follows more than {MAX_SYMLINKS} symlinks; the image is broken or hostile"
    )]
    SymlinkLoop { name: PathBuf },
    /// A parent of an entry is a file, not a directory.
    #[error("the layer has an entry {name:?} whose parent is not a directory")]
    NotADirectory { name: PathBuf },
    /// A hard link points to nothing, or to a directory.
    #[error("the layer has a hard link {name:?} to {target:?}, which {why}")]
    BadHardLink {
        name: PathBuf,
        target: PathBuf,
        why: &'static str,
    },
    /// An owner id does not fit in 32 bits.
    #[error("the layer has an entry {name:?} with an owner id that does not fit in 32 bits")]
    BadOwner { name: PathBuf },
    /// Reading the layer failed (corrupt or truncated tar, decompression).
    #[error("could not read the layer (is it a complete tar?)")]
    Read(#[source] io::Error),
    /// Writing to the staging directory failed.
    #[error("could not {action} {} in the staging directory", path.display())]
    Write {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not on this platform.
    #[error("applying image layers needs Linux")]
    Unsupported,
}

/// Splits a name from a layer into its components, refusing absolute names
/// and `..`. `.` components are dropped; an empty result is the root.
pub fn clean_name(name: &Path) -> Result<Vec<OsString>, LayerError> {
    let mut out = Vec::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => out.push(part.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(LayerError::UnsafeName {
                    name: name.to_path_buf(),
                    why: "going up with `..`",
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(LayerError::UnsafeName {
                    name: name.to_path_buf(),
                    why: "an absolute path",
                });
            }
        }
    }
    Ok(out)
}

/// Resolves `components` to a directory inside `root`, following symlinks as
/// if `root` were `/` and creating missing directories (mode 0755, root's)
/// when `create` is set. Returns the path relative to `root`, free of
/// symlinks; `Ok(None)` when a component is missing and `create` is unset.
pub fn resolve_dir(
    root: &Path,
    components: &[OsString],
    name: &Path,
    create: bool,
) -> Result<Option<PathBuf>, LayerError> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = components.iter().rev().cloned().collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == OsStr::new(".") {
            continue;
        }
        if part == OsStr::new("..") {
            resolved.pop();
            continue;
        }
        let here: PathBuf = resolved.iter().collect::<PathBuf>().join(&part);
        let full = root.join(&here);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(LayerError::SymlinkLoop {
                        name: name.to_path_buf(),
                    });
                }
                let target =
                    std::fs::read_link(&full).map_err(write_err("read the symlink", &here))?;
                if target.has_root() {
                    resolved.clear();
                }
                // Push the target's parts so that they are resolved next,
                // each one checked again (it may be a symlink itself).
                let parts: Vec<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(p) => Some(p.to_os_string()),
                        Component::ParentDir => Some(OsString::from("..")),
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
                    })
                    .collect();
                pending.extend(parts.into_iter().rev());
            }
            Ok(meta) if meta.is_dir() => resolved.push(part),
            Ok(_) => {
                return Err(LayerError::NotADirectory {
                    name: name.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                platform::make_dir(&full, 0o755)
                    .map_err(write_err("create the directory", &here))?;
                resolved.push(part);
            }
            Err(e) => return Err(write_err("inspect", &here)(e)),
        }
    }
    Ok(Some(resolved.iter().collect()))
}

fn write_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayerError {
    let path = path.to_path_buf();
    move |source| LayerError::Write {
        action,
        path,
        source,
    }
}

/// Removes whatever is at `path` (not following a symlink there), if anything.
fn remove_any(path: &Path, rel: &Path) -> Result<(), LayerError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(path).map_err(write_err("remove", rel))
        }
        Ok(_) => std::fs::remove_file(path).map_err(write_err("remove", rel)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(write_err("inspect", rel)(e)),
    }
}

/// Deletes everything in `dir` (relative to `root`) that this layer did not
/// write, descending into the directories it did write.
fn make_opaque(root: &Path, dir: &Path, written: &HashSet<PathBuf>) -> Result<(), LayerError> {
    let full = root.join(dir);
    let entries = match std::fs::read_dir(&full) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(write_err("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(write_err("list", dir))?;
        let rel = dir.join(entry.file_name());
        if written.contains(&rel) {
            let is_dir = entry
                .file_type()
                .map_err(write_err("inspect", &rel))?
                .is_dir();
            if is_dir {
                make_opaque(root, &rel, written)?;
            }
        } else {
            remove_any(&entry.path(), &rel)?;
        }
    }
    Ok(())
}

/// Applies one uncompressed layer tar to `root`.
#[tracing::instrument(skip_all, fields(root = %root.display()))]
pub fn apply(layer: impl Read, root: &Path) -> Result<LayerStats, LayerError> {
    let mut archive = tar::Archive::new(layer);
    // What this layer wrote, relative to root: whiteouts and opaque markers
    // apply to the lower layers only.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut stats = LayerStats::default();
    for entry in archive.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        let name = entry.path().map_err(LayerError::Read)?.into_owned();
        let mut parts = clean_name(&name)?;
        let Some(last) = parts.pop() else {
            // The root itself ("./"): take its owner and mode.
            if entry.header().entry_type().is_dir() {
                platform::set_meta(&mut entry, root, Path::new("."), &name)?;
            }
            continue;
        };
        let parent = resolve_dir(root, &parts, &name, true)?
            .ok_or_else(|| LayerError::NotADirectory { name: name.clone() })?;
        let last_str = last.to_string_lossy();
        if let Some(hidden) = last_str.strip_prefix(WHITEOUT) {
            if last_str == OPAQUE {
                make_opaque(root, &parent, &written)?;
            } else if hidden.starts_with(WHITEOUT) {
                // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content.
            } else if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(LayerError::UnsafeName {
                    name,
                    why: "a whiteout of no name, `.` or `..`",
                });
            } else {
                let rel = parent.join(hidden);
                if !written.contains(&rel) {
                    remove_any(&root.join(&rel), &rel)?;
                }
            }
            stats.whiteouts += 1;
            continue;
        }
        let rel = parent.join(&last);
        platform::write_entry(&mut entry, root, &rel, &name)?;
        written.insert(rel);
        stats.entries += 1;
    }
    Ok(stats)
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries written.
    pub entries: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
}

#[cfg(unix)]
mod platform {
    use std::ffi::CString;
    use std::fs::OpenOptions;
    use std::io::{self, Read};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    use tar::EntryType;

    use super::{LayerError, clean_name, remove_any, resolve_dir, write_err};

    pub(super) fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
        std::fs::DirBuilder::new().mode(mode).create(path)?;
        // The umask may have cut bits off.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn cstring(path: &Path) -> io::Result<CString> {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    }

    fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        let c = cstring(path)?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    #[cfg(target_os = "linux")]
    fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
        let c = cstring(path)?;
        let n = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in an xattr name"))?;
        // SAFETY: both strings are NUL-terminated and outlive the call;
        // `value` is a valid slice of `value.len()` bytes.
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn lsetxattr(_path: &Path, _name: &[u8], _value: &[u8]) -> io::Result<()> {
        Ok(())
    }

    /// Sets owner, mode and extended attributes of `root/rel` from the
    /// entry, without following a symlink there. Owner first: `chown` clears
    /// setuid bits and file capabilities.
    pub(super) fn set_meta<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        root: &Path,
        rel: &Path,
        name: &Path,
    ) -> Result<(), LayerError> {
        let header = entry.header();
        let bad_owner = || LayerError::BadOwner {
            name: name.to_path_buf(),
        };
        let uid =
            u32::try_from(header.uid().map_err(LayerError::Read)?).map_err(|_| bad_owner())?;
        let gid =
            u32::try_from(header.gid().map_err(LayerError::Read)?).map_err(|_| bad_owner())?;
        let mode = header.mode().map_err(LayerError::Read)? & 0o7777;
        let is_symlink = header.entry_type().is_symlink();
        let path = root.join(rel);
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(write_err("set the owner of", rel))?;
        if !is_symlink {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(write_err("set the mode of", rel))?;
        }
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(LayerError::Read)? {
            for extension in extensions {
                let extension = extension.map_err(LayerError::Read)?;
                if let Some(key) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((key.to_vec(), extension.value_bytes().to_vec()));
                }
            }
        }
        // Sorted, so that the image does not depend on the tar's order.
        xattrs.sort();
        for (key, value) in xattrs {
            lsetxattr(&path, &key, &value)
                .map_err(write_err("set an extended attribute of", rel))?;
        }
        Ok(())
    }

    /// Creates `root/rel` from the entry, replacing what was there.
    pub(super) fn write_entry<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        root: &Path,
        rel: &Path,
        name: &Path,
    ) -> Result<(), LayerError> {
        let path = root.join(rel);
        let kind = entry.header().entry_type();
        let existing = std::fs::symlink_metadata(&path).ok();
        let keep_dir = kind.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir());
        if !keep_dir && existing.is_some() {
            remove_any(&path, rel)?;
        }
        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    make_dir(&path, 0o700).map_err(write_err("create the directory", rel))?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(write_err("create the file", rel))?;
                io::copy(entry, &mut file).map_err(LayerError::Read)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| LayerError::UnsafeName {
                        name: name.to_path_buf(),
                        why: "a symlink without a target",
                    })?;
                // Stored verbatim: it is only ever followed inside the root.
                std::os::unix::fs::symlink(&*target, &path)
                    .map_err(write_err("create the symlink", rel))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| LayerError::UnsafeName {
                        name: name.to_path_buf(),
                        why: "a hard link without a target",
                    })?
                    .into_owned();
                let mut parts = clean_name(&target)?;
                let bad = |why| LayerError::BadHardLink {
                    name: name.to_path_buf(),
                    target: target.clone(),
                    why,
                };
                let last = parts.pop().ok_or_else(|| bad("is the root"))?;
                let parent =
                    resolve_dir(root, &parts, name, false)?.ok_or_else(|| bad("does not exist"))?;
                let source = root.join(parent.join(last));
                match std::fs::symlink_metadata(&source) {
                    Ok(m) if m.is_dir() => return Err(bad("is a directory")),
                    Ok(_) => {}
                    Err(_) => return Err(bad("does not exist")),
                }
                // std's hard_link is linkat(…, 0): a symlink is linked itself.
                std::fs::hard_link(&source, &path)
                    .map_err(write_err("create the hard link", rel))?;
                // A hard link shares the target's inode and metadata.
                return Ok(());
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                let header = entry.header();
                let file_type = match kind {
                    EntryType::Fifo => libc::S_IFIFO,
                    EntryType::Char => libc::S_IFCHR,
                    _ => libc::S_IFBLK,
                };
                let dev = if kind == EntryType::Fifo {
                    0
                } else {
                    let major = header
                        .device_major()
                        .map_err(LayerError::Read)?
                        .unwrap_or(0);
                    let minor = header
                        .device_minor()
                        .map_err(LayerError::Read)?
                        .unwrap_or(0);
                    libc::makedev(major as _, minor as _)
                };
                mknod(&path, file_type | 0o600, dev).map_err(write_err("create the node", rel))?;
            }
            other => {
                tracing::debug!(name = %name.display(), ?other, "skipping a tar entry of this type");
                return Ok(());
            }
        }
        set_meta(entry, root, rel, name)
    }
}

#[cfg(not(unix))]
mod platform {
    use std::io::{self, Read};
    use std::path::Path;

    use super::LayerError;

    pub(super) fn make_dir(_path: &Path, _mode: u32) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "needs Linux"))
    }

    pub(super) fn set_meta<R: Read>(
        _entry: &mut tar::Entry<'_, R>,
        _root: &Path,
        _rel: &Path,
        _name: &Path,
    ) -> Result<(), LayerError> {
        Err(LayerError::Unsupported)
    }

    pub(super) fn write_entry<R: Read>(
        _entry: &mut tar::Entry<'_, R>,
        _root: &Path,
        _rel: &Path,
        _name: &Path,
    ) -> Result<(), LayerError> {
        Err(LayerError::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(clean_name(Path::new("./a/./b/")).unwrap(), ["a", "b"]);
        assert!(clean_name(Path::new("./")).unwrap().is_empty());
        assert!(matches!(
            clean_name(Path::new("a/../../etc")),
            Err(LayerError::UnsafeName { .. })
        ));
        assert!(matches!(
            clean_name(Path::new("/etc/passwd")),
            Err(LayerError::UnsafeName { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let parts = |s: &str| clean_name(Path::new(s)).unwrap();
        let r = |s: &str| resolve_dir(&root, &parts(s), Path::new(s), false);
        assert_eq!(r("abs").unwrap().unwrap(), Path::new("usr/lib"));
        assert_eq!(r("up/usr").unwrap().unwrap(), Path::new("usr"));
        assert_eq!(r("up/abs/x").unwrap(), None);
        assert!(matches!(r("loop"), Err(LayerError::SymlinkLoop { .. })));
        let created = resolve_dir(&root, &parts("up/tmp/new"), Path::new("x"), true).unwrap();
        assert_eq!(created.unwrap(), Path::new("tmp/new"));
        assert!(root.join("tmp/new").is_dir());
    }
}
