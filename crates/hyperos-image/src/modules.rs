//! Picks the kernel modules the image ships and the order PID 1 loads them in.
//!
//! A module tree is a `/lib/modules/<kver>` directory. Its dependency graph
//! comes from `modules.dep` when present (a tree `depmod` ran on); Debian's
//! kernel packages ship none (depmod runs at install time), so otherwise each
//! `.ko`'s `.modinfo` section is read for its `depends=` list, which is what
//! depmod itself records. Names compare with '-' and '_' treated alike, as
//! modprobe does. A wanted module found in `modules.builtin` is part of the
//! kernel and is skipped; a name found nowhere is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read the module tree at {path}: pass a /lib/modules/<kver> directory")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kernel module {name:?} is neither a .ko file in {tree} nor built in: fix its name in image/modules.list"
    )]
    Unknown { name: String, tree: String },
    #[error(
        "cannot read .modinfo of {path}: the module file is corrupt, re-download the kernel package"
    )]
    Modinfo { path: PathBuf, message: String },
}

/// A module name with '-' folded to '_'.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/drivers/char/hw_random/virtio-rng.ko.xz`.
pub fn name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(normalise(stem))
}

/// The dependency graph of one kernel's modules.
#[derive(Debug, Default)]
pub struct ModuleTree {
    /// Normalised name → path relative to the tree root.
    paths: BTreeMap<String, String>,
    /// Normalised name → the names it depends on.
    deps: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
    label: String,
}

/// The outcome of [`ModuleTree::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Module paths relative to the tree root, dependencies first.
    pub load_order: Vec<String>,
    /// Wanted names that are built into the kernel.
    pub builtin: Vec<String>,
}

impl ModuleTree {
    /// Builds the graph from the text of `modules.dep` and `modules.builtin`.
    pub fn from_dep_text(dep: &str, builtin: &str, label: &str) -> Self {
        let mut tree = ModuleTree {
            label: label.to_owned(),
            ..Default::default()
        };
        for line in dep.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let Some(name) = name_of(module.trim()) else {
                continue;
            };
            let deps = rest.split_whitespace().filter_map(name_of).collect();
            tree.paths.insert(name.clone(), module.trim().to_owned());
            tree.deps.insert(name, deps);
        }
        tree.builtin = builtin.lines().filter_map(|l| name_of(l.trim())).collect();
        tree
    }

    /// Opens a `/lib/modules/<kver>` directory.
    pub fn open(dir: &Path) -> Result<Self, ModuleError> {
        let read = |name: &str| -> Result<Option<String>, ModuleError> {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(ModuleError::Read {
                    path: dir.join(name),
                    source,
                }),
            }
        };
        let builtin = read("modules.builtin")?.unwrap_or_default();
        let label = dir.display().to_string();
        if let Some(dep) = read("modules.dep")? {
            return Ok(Self::from_dep_text(&dep, &builtin, &label));
        }
        let mut tree = ModuleTree {
            label,
            builtin: builtin.lines().filter_map(|l| name_of(l.trim())).collect(),
            ..Default::default()
        };
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        for rel in files {
            let Some(name) = name_of(&rel) else { continue };
            tree.paths.insert(name, rel);
        }
        Ok(tree)
    }

    /// Resolves the wanted names to `.ko` paths, dependencies first, each once.
    ///
    /// For a tree opened without `modules.dep`, `root` is read to get each
    /// visited module's `depends=`.
    pub fn resolve(&mut self, wanted: &[String], root: &Path) -> Result<Resolved, ModuleError> {
        let mut out = Resolved {
            load_order: Vec::new(),
            builtin: Vec::new(),
        };
        let mut done = BTreeSet::new();
        for name in wanted {
            let name = normalise(name);
            if !self.paths.contains_key(&name) && self.builtin.contains(&name) {
                out.builtin.push(name);
                continue;
            }
            self.visit(&name, root, &mut done, &mut out.load_order, 0)?;
        }
        Ok(out)
    }

    fn visit(
        &mut self,
        name: &str,
        root: &Path,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), ModuleError> {
        if done.contains(name) || depth > 64 {
            return Ok(());
        }
        let Some(path) = self.paths.get(name).cloned() else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(ModuleError::Unknown {
                name: name.to_owned(),
                tree: self.label.clone(),
            });
        };
        done.insert(name.to_owned());
        let deps = match self.deps.get(name) {
            Some(deps) => deps.clone(),
            None => {
                let deps = modinfo_depends(&root.join(&path))?;
                self.deps.insert(name.to_owned(), deps.clone());
                deps
            }
        };
        // modules.dep lists the deepest dependency last; modprobe loads from the end.
        for dep in deps.iter().rev() {
            self.visit(dep, root, done, order, depth + 1)?;
        }
        order.push(path);
        Ok(())
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ModuleError> {
    let err = |source| ModuleError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(err)?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Reads the `depends=` list of a `.ko` file's `.modinfo` section.
pub fn modinfo_depends(path: &Path) -> Result<Vec<String>, ModuleError> {
    let bad = |message: String| ModuleError::Modinfo {
        path: path.to_owned(),
        message,
    };
    let bytes = crate::decompress::read_module(path).map_err(|e| bad(e.to_string()))?;
    depends_of(&bytes).map_err(bad)
}

/// The `depends=` list of a module's bytes (uncompressed ELF).
pub fn depends_of(bytes: &[u8]) -> Result<Vec<String>, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data().map_err(|e| e.to_string())?;
    Ok(data
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(normalise)
                .collect::<Vec<_>>()
        })
        .filter(|name| !name.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/drivers/char/hw_random/rng-core.ko\n";

    fn resolve(wanted: &[&str]) -> Result<Resolved, ModuleError> {
        let mut tree = ModuleTree::from_dep_text(DEP, BUILTIN, "test");
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        tree.resolve(&wanted, Path::new("/nonexistent"))
    }

    #[test]
    fn dependencies_first_each_once() {
        let r = resolve(&["virtio_pci", "virtio_net"]).unwrap();
        assert_eq!(
            r.load_order,
            [
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
            ]
        );
    }

    #[test]
    fn dash_and_underscore_are_the_same() {
        let r = resolve(&["virtio_rng", "virtio-net", "virtio_net"]).unwrap();
        assert_eq!(
            r.load_order.last().map(String::as_str),
            Some("kernel/drivers/net/virtio_net.ko")
        );
        assert!(
            r.load_order
                .contains(&"kernel/drivers/char/hw_random/virtio-rng.ko".to_owned())
        );
        assert_eq!(
            r.load_order
                .iter()
                .filter(|p| p.ends_with("virtio_net.ko"))
                .count(),
            1
        );
    }

    #[test]
    fn builtin_is_skipped_and_unknown_is_an_error() {
        let r = resolve(&["ext4", "rng_core"]).unwrap();
        assert!(r.load_order.is_empty());
        assert_eq!(r.builtin, ["ext4", "rng_core"]);
        let err = resolve(&["virtio_pci", "no_such_mod"]).unwrap_err();
        assert!(matches!(err, ModuleError::Unknown { ref name, .. } if name == "no_such_mod"));
    }

    #[test]
    fn names_of_paths() {
        assert_eq!(name_of("a/b/virtio-rng.ko").as_deref(), Some("virtio_rng"));
        assert_eq!(name_of("x.ko.xz").as_deref(), Some("x"));
        assert_eq!(name_of("modules.dep"), None);
    }
}
