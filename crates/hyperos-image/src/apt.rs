//! Packages from the host's apt: dependency closure, versions, downloads.
//!
//! The image uses the host's configured Debian/Ubuntu sources, so packages
//! are those `apt-get install` would pick, and `apt-get download` checks them
//! against the signed indexes. Downloads are kept in the cache and checked
//! against the SHA256 of the index before every reuse.
//!
//! The closure follows `Depends` and `Pre-Depends` only, taking the first
//! alternative of an or-group (a virtual package resolves to its first
//! provider), as apt does on a clean system. Packages named in `prune` are
//! neither downloaded nor followed: they exist for maintainer scripts and
//! other parts of a full system the image doesn't need, and if one of their
//! files turns out to be needed, the ELF closure fails naming the library.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error(
        "cannot run {program}: the image builder needs a Debian/Ubuntu host with apt installed"
    )]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{command}` failed ({stderr}): run `apt-get update` first and check the package names in image/image.toml"
    )]
    Failed { command: String, stderr: String },
    #[error(
        "apt knows no package {0:?}: run `apt-get update` first, or fix the name in image/image.toml"
    )]
    UnknownPackage(String),
    #[error(
        "{metapackage} depends on no {prefix}* package: the kernel metapackage name in image/image.toml is wrong"
    )]
    NoKernelPackage { metapackage: String, prefix: String },
    #[error("apt-get download failed for {package}: run `apt-get update` first")]
    Download { package: String },
    #[error("{path} does not match the SHA256 of the signed package index: delete it and rebuild")]
    Checksum { path: PathBuf },
    #[error("cannot use the package cache {path}: check it is writable")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A binary package at the version apt would install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
}

impl Package {
    /// The file name `apt-get download` gives the package.
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }

    /// A directory name for the unpacked package.
    pub fn staging_name(&self) -> String {
        format!("{}_{}", self.name, self.version.replace(':', "%3a"))
    }
}

/// One dependency alternative as `apt-cache depends` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alternative {
    Real(String),
    /// A virtual package and the packages that provide it.
    Virtual(String, Vec<String>),
}

/// Or-groups of alternatives, per package.
pub type DependsMap = BTreeMap<String, Vec<Vec<Alternative>>>;

/// Parses the output of `apt-cache depends` restricted to `Depends` and `PreDepends`.
pub fn parse_depends(text: &str) -> DependsMap {
    let mut map = DependsMap::new();
    let mut current: Option<String> = None;
    let mut group: Vec<Alternative> = Vec::new();
    let mut continues = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            current = Some(strip_arch(line.trim()).to_owned());
            if let Some(name) = &current {
                map.entry(name.clone()).or_default();
            }
            continues = false;
            group.clear();
            continue;
        }
        let Some(package) = current.clone() else {
            continue;
        };
        if line.starts_with("    ") {
            // A provider of the virtual package on the previous line.
            let provider = strip_arch(line.trim()).to_owned();
            let groups = map.entry(package).or_default();
            let last = if continues {
                group.last_mut()
            } else {
                groups.last_mut().and_then(|g| g.last_mut())
            };
            if let Some(Alternative::Virtual(_, providers)) = last {
                providers.push(provider);
            }
            continue;
        }
        let trimmed = line.trim_start();
        let or_next = trimmed.starts_with('|');
        let trimmed = trimmed.trim_start_matches('|');
        let Some((kind, name)) = trimmed.split_once(':') else {
            continue;
        };
        if kind != "Depends" && kind != "PreDepends" {
            continue;
        }
        let name = name.trim();
        let alternative = match name.strip_prefix('<').and_then(|n| n.strip_suffix('>')) {
            Some(virtual_name) => {
                Alternative::Virtual(strip_arch(virtual_name).to_owned(), Vec::new())
            }
            None => Alternative::Real(strip_arch(name).to_owned()),
        };
        group.push(alternative);
        if or_next {
            continues = true;
        } else {
            continues = false;
            map.entry(package)
                .or_default()
                .push(std::mem::take(&mut group));
        }
    }
    map
}

fn strip_arch(name: &str) -> &str {
    name.split_once(':').map_or(name, |(n, _)| n)
}

/// The package an or-group resolves to: the first real alternative, else the
/// first provider of a virtual one. Already chosen packages are preferred.
pub fn choose(group: &[Alternative], chosen: &BTreeSet<String>) -> Option<String> {
    let candidates: Vec<&String> = group
        .iter()
        .flat_map(|alt| match alt {
            Alternative::Real(name) => vec![name],
            Alternative::Virtual(_, providers) => providers.iter().collect(),
        })
        .collect();
    candidates
        .iter()
        .find(|c| chosen.contains(c.as_str()))
        .or_else(|| candidates.first())
        .map(|c| c.to_string())
}

/// Parses `apt-cache show` stanzas into packages (first stanza per name wins).
pub fn parse_show(text: &str) -> BTreeMap<String, Package> {
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
                .map(|v| v.trim().to_owned())
        };
        let (Some(name), Some(version), Some(architecture)) =
            (field("Package"), field("Version"), field("Architecture"))
        else {
            continue;
        };
        let sha256 = field("SHA256").unwrap_or_default();
        out.entry(name.clone()).or_insert(Package {
            name,
            version,
            architecture,
            sha256,
        });
    }
    out
}

/// The host's apt.
#[derive(Debug, Clone)]
pub struct Apt {
    /// Options given to every apt command (`-o Key=Value`).
    pub options: Vec<String>,
}

impl Default for Apt {
    fn default() -> Self {
        Apt {
            // apt drops privileges to `_apt` for downloads, which can't write
            // into a cache under a user's home; we stay root-owned instead.
            options: vec!["-o".into(), "APT::Sandbox::User=root".into()],
        }
    }
}

const DEPENDS_FLAGS: &[&str] = &[
    "depends",
    "--no-recommends",
    "--no-suggests",
    "--no-conflicts",
    "--no-breaks",
    "--no-replaces",
    "--no-enhances",
];

impl Apt {
    fn run(&self, program: &str, args: &[String], cwd: Option<&Path>) -> Result<String, AptError> {
        let mut command = Command::new(program);
        command.args(&self.options).args(args).env("LC_ALL", "C");
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        tracing::debug!(?command, "running apt");
        let output = command.output().map_err(|source| AptError::Spawn {
            program: program.to_owned(),
            source,
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = args.iter().take(4).cloned().collect::<Vec<_>>().join(" ");
            return Err(AptError::Failed {
                command: format!("{program} {first} …"),
                stderr: stderr
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("no message")
                    .to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The dependency lists of `names`.
    pub fn depends(&self, names: &[String]) -> Result<DependsMap, AptError> {
        let mut args: Vec<String> = DEPENDS_FLAGS.iter().map(|s| s.to_string()).collect();
        args.extend(names.iter().cloned());
        Ok(parse_depends(&self.run("apt-cache", &args, None)?))
    }

    /// The real package a metapackage such as `linux-image-cloud-amd64`
    /// depends on, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub fn resolve_kernel_metapackage(&self, metapackage: &str) -> Result<String, AptError> {
        let prefix = "linux-image-";
        let map = self.depends(&[metapackage.to_owned()])?;
        let groups = map
            .get(metapackage)
            .ok_or_else(|| AptError::UnknownPackage(metapackage.to_owned()))?;
        groups
            .iter()
            .filter_map(|g| choose(g, &BTreeSet::new()))
            .find(|name| name.starts_with(prefix) && name != metapackage)
            .map_or_else(
                || {
                    // Not a metapackage: a concrete kernel image package itself.
                    if metapackage.chars().any(|c| c.is_ascii_digit()) {
                        Ok(metapackage.to_owned())
                    } else {
                        Err(AptError::NoKernelPackage {
                            metapackage: metapackage.to_owned(),
                            prefix: prefix.to_owned(),
                        })
                    }
                },
                Ok,
            )
    }

    /// The `Depends` closure of `roots`, without the `prune`d packages.
    pub fn closure(
        &self,
        roots: &[String],
        prune: &BTreeSet<String>,
    ) -> Result<Vec<String>, AptError> {
        let mut chosen: BTreeSet<String> = BTreeSet::new();
        let mut order: Vec<String> = Vec::new();
        let mut frontier: Vec<String> = roots
            .iter()
            .filter(|r| !prune.contains(*r))
            .cloned()
            .collect();
        while !frontier.is_empty() {
            frontier.retain(|name| chosen.insert(name.clone()));
            if frontier.is_empty() {
                break;
            }
            order.extend(frontier.iter().cloned());
            let map = self.depends(&frontier)?;
            let mut next = Vec::new();
            for name in &frontier {
                let groups = map
                    .get(name)
                    .ok_or_else(|| AptError::UnknownPackage(name.clone()))?;
                for group in groups {
                    if let Some(pick) = choose(group, &chosen)
                        && !prune.contains(&pick)
                        && !chosen.contains(&pick)
                        && !next.contains(&pick)
                    {
                        next.push(pick);
                    }
                }
            }
            frontier = next;
        }
        Ok(order)
    }

    /// Versions and checksums apt would install.
    pub fn show(&self, names: &[String]) -> Result<Vec<Package>, AptError> {
        let mut args = vec!["show".to_owned(), "--no-all-versions".to_owned()];
        args.extend(names.iter().cloned());
        let map = parse_show(&self.run("apt-cache", &args, None)?);
        names
            .iter()
            .map(|n| {
                map.get(n)
                    .cloned()
                    .ok_or_else(|| AptError::UnknownPackage(n.clone()))
            })
            .collect()
    }

    /// Downloads whatever of `packages` is not yet in `dir`; returns the
    /// `.deb` path of every package, in order.
    pub fn download(&self, packages: &[Package], dir: &Path) -> Result<Vec<PathBuf>, AptError> {
        std::fs::create_dir_all(dir).map_err(|source| AptError::Cache {
            path: dir.to_owned(),
            source,
        })?;
        let mut missing = Vec::new();
        for package in packages {
            let path = dir.join(package.deb_file_name());
            if path.exists() {
                if verify(package, &path)? {
                    continue;
                }
                tracing::warn!(path = %path.display(), "cached package has the wrong checksum; downloading it again");
                std::fs::remove_file(&path).map_err(|source| AptError::Cache {
                    path: path.clone(),
                    source,
                })?;
            }
            missing.push(package);
        }
        if !missing.is_empty() {
            tracing::info!(count = missing.len(), "downloading packages with apt-get");
            // Into a private directory first, so concurrent builds sharing the
            // cache never see (or clobber) a half-written .deb.
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let partial = dir.join(format!(".download-{}-{unique}", std::process::id()));
            let cache_err = |path: &Path| {
                let path = path.to_owned();
                move |source| AptError::Cache { path, source }
            };
            std::fs::create_dir_all(&partial).map_err(cache_err(&partial))?;
            let mut args = vec!["-q".to_owned(), "download".to_owned()];
            args.extend(missing.iter().map(|p| format!("{}={}", p.name, p.version)));
            let result = self.run("apt-get", &args, Some(&partial));
            for package in &missing {
                let name = package.deb_file_name();
                if partial.join(&name).exists() {
                    std::fs::rename(partial.join(&name), dir.join(&name))
                        .map_err(cache_err(dir))?;
                }
            }
            let _ = std::fs::remove_dir_all(&partial);
            if let Err(error) = result {
                tracing::warn!(%error, "apt-get download failed");
                let package = missing
                    .iter()
                    .find(|p| !dir.join(p.deb_file_name()).exists())
                    .map_or_else(|| "some packages".to_owned(), |p| p.name.clone());
                return Err(AptError::Download { package });
            }
        }
        let mut paths = Vec::new();
        for package in packages {
            let path = dir.join(package.deb_file_name());
            if !path.exists() {
                return Err(AptError::Download {
                    package: package.name.clone(),
                });
            }
            if !verify(package, &path)? {
                return Err(AptError::Checksum { path });
            }
            paths.push(path);
        }
        Ok(paths)
    }
}

fn verify(package: &Package, path: &Path) -> Result<bool, AptError> {
    if package.sha256.is_empty() {
        return Ok(true);
    }
    let mut file = std::fs::File::open(path).map_err(|source| AptError::Cache {
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| AptError::Cache {
        path: path.to_owned(),
        source,
    })?;
    Ok(crate::hex(&hasher.finalize()) == package.sha256.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPENDS: &str = "\
linux-image-6.1.0-56-cloud-amd64
  Depends: kmod
 |Depends: initramfs-tools
  Depends: <linux-initramfs-tool>
    dracut
    tiny-initramfs
systemd-container
  Depends: libc6
  Depends: libsystemd-shared
 |Depends: <default-dbus-system-bus>
    dbus
  Depends: <dbus-system-bus>
    dbus-broker
    dbus
openssh-client
  Depends: <perl:any>
    perl
  PreDepends: libc6
busybox-static
";

    #[test]
    fn parses_or_groups_and_virtual_packages() {
        let map = parse_depends(DEPENDS);
        let kernel = &map["linux-image-6.1.0-56-cloud-amd64"];
        assert_eq!(kernel.len(), 2);
        assert_eq!(kernel[0], vec![Alternative::Real("kmod".into())]);
        assert_eq!(
            kernel[1],
            vec![
                Alternative::Real("initramfs-tools".into()),
                Alternative::Virtual(
                    "linux-initramfs-tool".into(),
                    vec!["dracut".into(), "tiny-initramfs".into()]
                ),
            ]
        );
        let nspawn = &map["systemd-container"];
        assert_eq!(nspawn.len(), 3);
        assert_eq!(
            choose(&nspawn[2], &BTreeSet::new()).as_deref(),
            Some("dbus")
        );
        assert_eq!(
            choose(&map["openssh-client"][0], &BTreeSet::new()).as_deref(),
            Some("perl")
        );
        assert_eq!(
            map["openssh-client"][1],
            vec![Alternative::Real("libc6".into())]
        );
        assert!(map["busybox-static"].is_empty());
    }

    #[test]
    fn choose_prefers_what_is_already_chosen() {
        let group = vec![
            Alternative::Real("initramfs-tools".into()),
            Alternative::Virtual("linux-initramfs-tool".into(), vec!["dracut".into()]),
        ];
        let chosen = BTreeSet::from(["dracut".to_owned()]);
        assert_eq!(choose(&group, &chosen).as_deref(), Some("dracut"));
        assert_eq!(
            choose(&group, &BTreeSet::new()).as_deref(),
            Some("initramfs-tools")
        );
    }

    #[test]
    fn parses_show_and_names_files() {
        let text = "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nArchitecture: amd64\nSHA256: ABCD\nDescription: x\n continued\n\nPackage: busybox-static\nVersion: 1:1.30\nArchitecture: amd64\n";
        let map = parse_show(text);
        let p = &map["busybox-static"];
        assert_eq!(p.version, "1:1.35.0-4+deb12u1+b1");
        assert_eq!(
            p.deb_file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
        assert_eq!(p.staging_name(), "busybox-static_1%3a1.35.0-4+deb12u1+b1");
    }

    /// Real apt: resolve, show, download a small package, reuse it.
    #[cfg(target_os = "linux")]
    #[test]
    fn downloads_verifies_and_reuses() {
        let apt = Apt::default();
        let Ok(packages) = apt.show(&["libtommath1".to_owned()]) else {
            eprintln!("apt unavailable; skipping");
            return;
        };
        let closure = apt
            .closure(
                &["dropbear-bin".to_owned()],
                &BTreeSet::from(["libc6".to_owned()]),
            )
            .unwrap();
        assert_eq!(closure[0], "dropbear-bin");
        assert!(closure.contains(&"libtommath1".to_owned()));
        assert!(!closure.contains(&"libc6".to_owned()));

        let dir = tempfile::tempdir().unwrap();
        let paths = apt.download(&packages, dir.path()).unwrap();
        assert!(paths[0].is_file());
        let modified = std::fs::metadata(&paths[0]).unwrap().modified().unwrap();
        // Second time: from the cache, checksum verified, no download.
        let again = apt.download(&packages, dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&again[0]).unwrap().modified().unwrap(),
            modified
        );
        // A corrupted cache entry is replaced.
        std::fs::write(&paths[0], b"junk").unwrap();
        apt.download(&packages, dir.path()).unwrap();
        assert!(verify(&packages[0], &paths[0]).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let err = apt
            .show(&["no-such-package-hyperos".to_owned()])
            .unwrap_err();
        assert!(err.to_string().contains("apt-get update"), "{err}");
    }
}
