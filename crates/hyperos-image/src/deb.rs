//! Unpacks the data of a `.deb` into a staging directory.
//!
//! A `.deb` is an `ar` archive whose `data.tar.{xz,zst,gz}` member holds the
//! files. Extraction goes to `<dest>.partial` and is renamed into place when
//! complete, so an existing staging directory is always whole and can be
//! reused by the next build. Symlinks are recreated as they are; hard links
//! become hard links to the first name, so the image builder can spot them.
//! Paths that would leave the staging directory are refused.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::decompress::{self, Format};
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot read {path}: delete it from the cache so it is downloaded again")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has no data.tar member: it is not a Debian binary package, delete it from the cache"
    )]
    NoData { path: PathBuf },
    #[error(
        "{deb} contains the unsafe path {entry:?}: refusing to unpack it, the package is corrupt or hostile"
    )]
    UnsafePath { deb: PathBuf, entry: String },
    #[error(
        "cannot write {path} while unpacking: check free space and permissions of the cache directory"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Unpacks `deb` into `dest` unless `dest` already exists.
///
/// Safe against concurrent builds: each unpacks into its own temporary
/// directory, and the first rename wins.
pub fn extract_cached(deb: &Path, dest: &Path) -> Result<(), DebError> {
    if dest.is_dir() {
        return Ok(());
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = dest.with_file_name(format!(
        "{file_name}.partial-{}-{unique}",
        std::process::id()
    ));
    let cleanup = |partial: &Path| {
        if partial.exists() {
            let _ = std::fs::remove_dir_all(partial);
        }
    };
    if let Err(e) = extract(deb, &partial) {
        cleanup(&partial);
        return Err(e);
    }
    match std::fs::rename(&partial, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => {
            cleanup(&partial);
            Ok(())
        }
        Err(source) => {
            cleanup(&partial);
            Err(DebError::Write {
                path: dest.to_owned(),
                source,
            })
        }
    }
}

/// Unpacks the data member of `deb` into `dest` (created if needed).
pub fn extract(deb: &Path, dest: &Path) -> Result<(), DebError> {
    let read_err = |source| DebError::Read {
        path: deb.to_owned(),
        source,
    };
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DebError::Write { path, source }
    };
    std::fs::create_dir_all(dest).map_err(write_err(dest))?;
    let file = std::fs::File::open(deb).map_err(read_err)?;
    let mut archive = ar::Archive::new(file);
    while let Some(member) = archive.next_entry() {
        let member = member.map_err(read_err)?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        if !name.starts_with("data.tar") {
            continue;
        }
        let decoder = decompress::reader(Format::of(&name), std::io::BufReader::new(member))
            .map_err(read_err)?;
        return unpack_tar(deb, decoder, dest);
    }
    Err(DebError::NoData {
        path: deb.to_owned(),
    })
}

fn unpack_tar(deb: &Path, data: impl Read, dest: &Path) -> Result<(), DebError> {
    let read_err = |source| DebError::Read {
        path: deb.to_owned(),
        source,
    };
    let mut tar = tar::Archive::new(data);
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .into_owned();
        let rel = safe_relative(&raw).ok_or_else(|| DebError::UnsafePath {
            deb: deb.to_owned(),
            entry: raw.clone(),
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        let write_err = |source| DebError::Write {
            path: target.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        // Links carry no meaningful mode; a file without one gets the usual 0644.
        let mode = entry.header().mode().unwrap_or(0o644);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(write_err)?;
            fsutil::set_mode(&target, (mode & 0o7777) | 0o700).map_err(write_err)?;
        } else if kind.is_symlink() {
            let link =
                entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| DebError::UnsafePath {
                        deb: deb.to_owned(),
                        entry: raw.clone(),
                    })?;
            remove_existing(&target).map_err(write_err)?;
            fsutil::symlink(&link, &target).map_err(write_err)?;
        } else if kind.is_hard_link() {
            let link = entry.link_name().map_err(read_err)?.unwrap_or_default();
            let link_raw = link.to_string_lossy().into_owned();
            let source = safe_relative(&link_raw).ok_or_else(|| DebError::UnsafePath {
                deb: deb.to_owned(),
                entry: link_raw.clone(),
            })?;
            remove_existing(&target).map_err(write_err)?;
            std::fs::hard_link(dest.join(source), &target).map_err(write_err)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            remove_existing(&target).map_err(write_err)?;
            let mut out = std::fs::File::create(&target).map_err(write_err)?;
            std::io::copy(&mut entry, &mut out).map_err(read_err)?;
            fsutil::set_mode(&target, mode & 0o7777).map_err(write_err)?;
        }
        // Device nodes and FIFOs do not occur in the packages we use; skip them.
    }
    Ok(())
}

fn remove_existing(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `./usr/bin/x` → `usr/bin/x`; `None` for paths escaping the root.
fn safe_relative(raw: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        assert_eq!(
            safe_relative("./usr/bin/x"),
            Some(PathBuf::from("usr/bin/x"))
        );
        assert_eq!(safe_relative("./"), Some(PathBuf::new()));
        assert_eq!(safe_relative("./usr/../../etc"), None);
    }

    /// Builds a small .deb the way dpkg-deb does (ar with a gzip data.tar),
    /// holding a file, a symlink and a hard link.
    fn synthetic_deb(path: &Path) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        tar.append_data(&mut dir, "./usr/bin/", &[][..]).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o755);
        file.set_size(5);
        tar.append_data(&mut file, "./usr/bin/tool", &b"hello"[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "./usr/bin/alias", "tool")
            .unwrap();
        let mut hard = tar::Header::new_gnu();
        hard.set_entry_type(tar::EntryType::Link);
        hard.set_size(0);
        tar.append_link(&mut hard, "./usr/bin/tool2", "./usr/bin/tool")
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();

        let mut ar = ar::Builder::new(std::fs::File::create(path).unwrap());
        ar.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        ar.append(
            &ar::Header::new(b"data.tar.gz".to_vec(), gz.len() as u64),
            &gz[..],
        )
        .unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn extracts_files_symlinks_and_hard_links() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("t.deb");
        synthetic_deb(&deb);
        let dest = dir.path().join("staging/t_1");
        extract_cached(&deb, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("usr/bin/tool")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(dest.join("usr/bin/alias")).unwrap(),
            Path::new("tool")
        );
        let a = std::fs::metadata(dest.join("usr/bin/tool")).unwrap();
        let b = std::fs::metadata(dest.join("usr/bin/tool2")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            1
        );
    }

    /// A real package from the host's apt cache or a download, if available.
    #[cfg(target_os = "linux")]
    #[test]
    fn extracts_a_real_deb() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("apt-get")
            .args([
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                "download",
                "busybox-static",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .status();
        let Some(deb) = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
        else {
            eprintln!("apt-get download unavailable ({status:?}); skipping");
            return;
        };
        let dest = dir.path().join("x");
        extract(&deb, &dest).unwrap();
        let busybox = std::fs::read(dest.join("bin/busybox")).unwrap();
        assert_eq!(&busybox[..4], b"\x7fELF");
        assert!(busybox.len() > 500_000);
    }
}
