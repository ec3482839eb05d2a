//! The shared-library closure of ELF executables, read from their headers.
//!
//! For every object this reads what the dynamic loader would: `PT_INTERP`,
//! `DT_NEEDED`, and the search path from `DT_RPATH` (only when there is no
//! `DT_RUNPATH`) or `DT_RUNPATH`, with `$ORIGIN` expanded, then the default
//! directories of Debian's amd64 loader. Nothing is executed, so it works on
//! files of any package and needs no chroot.
//!
//! Lookups go through [`LibraryRoot`], so the same code walks the staged
//! packages of an image or, in tests, the host's own file system.

use std::collections::{BTreeSet, VecDeque};

use object::Endianness;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};

/// Directories the loader searches after the object's own paths (Debian amd64,
/// merged /usr).
pub const DEFAULT_LIBRARY_DIRS: &[&str] = &["/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/lib64"];

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error(
        "{path} is not a readable ELF file ({message}): the package file is corrupt, delete image/cache/staging and rebuild"
    )]
    Parse { path: String, message: String },
    #[error("cannot read {path} to find its libraries")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "library {library} needed by {needed_by} is in none of the image's packages (searched {searched}): add the package that ships it to `roots` in image/image.toml"
    )]
    MissingLibrary {
        library: String,
        needed_by: String,
        searched: String,
    },
}

/// What an ELF object asks of the dynamic loader.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ElfDeps {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

/// Reads the dynamic dependencies of `bytes`; `None` when it is not ELF.
pub fn read_deps(bytes: &[u8]) -> Result<Option<ElfDeps>, String> {
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    match bytes.get(4) {
        Some(2) => deps_of::<object::elf::FileHeader64<Endianness>>(bytes).map(Some),
        Some(1) => deps_of::<object::elf::FileHeader32<Endianness>>(bytes).map(Some),
        _ => Err("unknown ELF class".to_owned()),
    }
}

fn deps_of<H: FileHeader<Endian = Endianness>>(bytes: &[u8]) -> Result<ElfDeps, String> {
    let text = |e: object::Error| e.to_string();
    let header = H::parse(bytes).map_err(text)?;
    let endian = header.endian().map_err(text)?;
    let mut deps = ElfDeps::default();
    for segment in header.program_headers(endian, bytes).map_err(text)? {
        if let Some(interp) = segment.interpreter(endian, bytes).map_err(text)? {
            deps.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header.sections(endian, bytes).map_err(text)?;
    // `dynamic` also returns the index of the linked string table.
    let Some((dynamic, strtab)) = sections.dynamic(endian, bytes).map_err(text)? else {
        return Ok(deps);
    };
    let strings = sections.strings(endian, bytes, strtab).map_err(text)?;
    for entry in dynamic {
        let Some(tag) = entry.tag32(endian) else {
            continue;
        };
        let list = match tag {
            object::elf::DT_NEEDED => &mut deps.needed,
            object::elf::DT_RPATH => &mut deps.rpath,
            object::elf::DT_RUNPATH => &mut deps.runpath,
            _ => continue,
        };
        let value =
            String::from_utf8_lossy(entry.string(endian, strings).map_err(text)?).into_owned();
        if tag == object::elf::DT_NEEDED {
            list.push(value);
        } else {
            list.extend(
                value
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    Ok(deps)
}

/// A file tree the closure is computed in.
pub trait LibraryRoot {
    /// The path `path` finally names after following symlinks, if it exists
    /// as a regular file.
    fn canonical(&self, path: &str) -> Option<String>;
    /// The contents of a canonical path.
    fn read(&self, canonical: &str) -> std::io::Result<Vec<u8>>;
}

/// One library (or loader) the closure needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// Where the loader finds it (may be a symlink in the tree).
    pub path: String,
    /// The object that first asked for it.
    pub needed_by: String,
}

/// Every library and loader that `start` needs, transitively, in discovery
/// order. Start files that are not ELF are ignored.
pub fn closure(root: &impl LibraryRoot, start: &[String]) -> Result<Vec<Needed>, ElfError> {
    let mut found: Vec<Needed> = Vec::new();
    let mut seen_paths = BTreeSet::new();
    let mut scanned = BTreeSet::new();
    let mut queue: VecDeque<String> = start.iter().filter_map(|p| root.canonical(p)).collect();
    while let Some(object_path) = queue.pop_front() {
        if !scanned.insert(object_path.clone()) {
            continue;
        }
        let bytes = root.read(&object_path).map_err(|source| ElfError::Read {
            path: object_path.clone(),
            source,
        })?;
        let Some(deps) = read_deps(&bytes).map_err(|message| ElfError::Parse {
            path: object_path.clone(),
            message,
        })?
        else {
            continue;
        };
        let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(interp) = &deps.interpreter {
            wanted.push((interp.clone(), vec![interp.clone()]));
        }
        let origin = object_path
            .rsplit_once('/')
            .map(|(dir, _)| dir)
            .unwrap_or("/");
        let own: Vec<String> = if deps.runpath.is_empty() {
            &deps.rpath
        } else {
            &deps.runpath
        }
        .iter()
        .map(|dir| dir.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
        .collect();
        for name in &deps.needed {
            let candidates = if name.contains('/') {
                vec![name.clone()]
            } else {
                own.iter()
                    .map(String::as_str)
                    .chain(DEFAULT_LIBRARY_DIRS.iter().copied())
                    .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
                    .collect()
            };
            wanted.push((name.clone(), candidates));
        }
        for (library, candidates) in wanted {
            let hit = candidates.iter().find_map(|path| {
                root.canonical(path)
                    .map(|canonical| (path.clone(), canonical))
            });
            let Some((path, canonical)) = hit else {
                let dirs: Vec<&str> = candidates
                    .iter()
                    .map(|c| c.rsplit_once('/').map_or("", |(d, _)| d))
                    .collect();
                return Err(ElfError::MissingLibrary {
                    library,
                    needed_by: object_path,
                    searched: dirs.join(":"),
                });
            };
            if seen_paths.insert(path.clone()) {
                found.push(Needed {
                    path,
                    needed_by: object_path.clone(),
                });
            }
            queue.push_back(canonical);
        }
    }
    Ok(found)
}

/// The host's own root file system, for tests and diagnostics.
pub struct HostRoot;

impl LibraryRoot for HostRoot {
    fn canonical(&self, path: &str) -> Option<String> {
        let real = std::fs::canonicalize(path).ok()?;
        real.is_file().then(|| real.to_string_lossy().into_owned())
    }
    fn read(&self, canonical: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn host_ls_needs_libc_and_the_loader() {
        let bytes = std::fs::read("/usr/bin/ls").unwrap();
        let deps = read_deps(&bytes).unwrap().unwrap();
        assert_eq!(
            deps.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(deps.needed.iter().any(|n| n == "libc.so.6"), "{deps:?}");

        let libs = closure(&HostRoot, &["/usr/bin/ls".to_owned()]).unwrap();
        let paths: Vec<&str> = libs.iter().map(|n| n.path.as_str()).collect();
        assert!(paths.contains(&"/lib64/ld-linux-x86-64.so.2"), "{paths:?}");
        assert!(paths.iter().any(|p| p.ends_with("/libc.so.6")), "{paths:?}");
        // libselinux is needed by ls and itself needs libpcre2.
        assert!(
            paths.iter().any(|p| p.ends_with("/libpcre2-8.so.0")),
            "{paths:?}"
        );
    }

    #[test]
    fn non_elf_is_ignored() {
        assert_eq!(read_deps(b"#!/bin/sh\n").unwrap(), None);
        assert!(read_deps(b"\x7fELF\x02garbage").is_err());
    }

    struct Fake(Vec<(&'static str, Vec<u8>)>);
    impl LibraryRoot for Fake {
        fn canonical(&self, path: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(p, _)| p.to_string())
        }
        fn read(&self, canonical: &str) -> std::io::Result<Vec<u8>> {
            Ok(self
                .0
                .iter()
                .find(|(p, _)| *p == canonical)
                .map(|(_, b)| b.clone())
                .unwrap_or_default())
        }
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn missing_library_is_named() {
        let ls = std::fs::read("/usr/bin/ls").unwrap();
        let root = Fake(vec![("/usr/bin/ls", ls)]);
        let err = closure(&root, &["/usr/bin/ls".to_owned()]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("needed by /usr/bin/ls"), "{message}");
        assert!(matches!(err, ElfError::MissingLibrary { .. }));
    }
}
