//! The image configuration under `image/`.
//!
//! * `image.toml`: packages, the kernel package, and which files of them
//!   form each *component* of the image ([`ImageConfig`]).
//! * `modules.list`: kernel modules to ship, one name per line.
//! * `include/`: a tree copied over the image last.
//!
//! The files are parsed into serde structs that refuse unknown fields, then
//! checked ([`ImageConfig::validate`]) before anything is downloaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const CONFIG_FILE: &str = "image.toml";
pub const MODULES_FILE: &str = "modules.list";
pub const INCLUDE_DIR: &str = "include";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: pass the repository's image/ directory")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid image configuration: fix the line the parser names")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("image/image.toml: {0}")]
    Invalid(String),
}

/// `image/image.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub kernel: KernelConfig,
    pub packages: PackagesConfig,
    /// Groups of files, in the order the size report lists them.
    #[serde(rename = "component", default)]
    pub components: Vec<ComponentConfig>,
    /// Permission bits for paths whose mode git can't keep (e.g. `/etc/shadow`).
    #[serde(default)]
    pub modes: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// Kernel image package or metapackage (`linux-image-cloud-amd64`).
    pub package: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesConfig {
    /// Packages whose files the image takes; their Depends closure is fetched.
    pub roots: Vec<String>,
    /// Packages of the closure that are neither fetched nor followed.
    #[serde(default)]
    pub prune: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Name in the size report.
    pub name: String,
    /// Absolute paths, merged-/usr form, of files to take from the packages.
    /// Symlinks are kept and followed; ELF files bring their libraries.
    #[serde(default)]
    pub files: Vec<String>,
    /// Libraries from these packages count toward this component, whoever needs them.
    #[serde(default)]
    pub library_packages: Vec<String>,
    /// Link every applet of this busybox binary into /usr/bin and /usr/sbin.
    #[serde(default)]
    pub busybox_applets: Option<String>,
}

impl ImageConfig {
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: ImageConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(image_dir: &Path) -> Result<Self, ConfigError> {
        let path = image_dir.join(CONFIG_FILE);
        let text = read(&path)?;
        Self::parse(&text, &path)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.packages.roots.is_empty() {
            return invalid("`packages.roots` is empty: list at least one package".into());
        }
        for name in self
            .packages
            .roots
            .iter()
            .chain(&self.packages.prune)
            .chain([&self.kernel.package])
        {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return invalid(format!("{name:?} is not a Debian package name"));
            }
        }
        let mut names = BTreeSet::new();
        for component in &self.components {
            if !names.insert(component.name.as_str()) {
                return invalid(format!(
                    "component {:?} appears twice: merge the two",
                    component.name
                ));
            }
            for file in component.files.iter().chain(&component.busybox_applets) {
                check_image_path(file)?;
            }
        }
        for (path, mode) in &self.modes {
            check_image_path(path)?;
            if *mode > 0o7777 {
                return invalid(format!(
                    "mode {mode:o} for {path} is not a permission (write it like 0o600)"
                ));
            }
        }
        Ok(())
    }
}

fn check_image_path(path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.split('/').any(|part| part == "..") || path.ends_with('/') {
        return Err(ConfigError::Invalid(format!(
            "{path:?} must be an absolute path without '..' or a trailing '/'"
        )));
    }
    Ok(())
}

/// Reads `image/modules.list`: module names, `#` comments, blank lines.
pub fn load_modules(image_dir: &Path) -> Result<Vec<String>, ConfigError> {
    let path = image_dir.join(MODULES_FILE);
    Ok(parse_modules(&read(&path)?))
}

pub fn parse_modules(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../image");
        let config = ImageConfig::load(&dir).unwrap();
        assert!(config.packages.roots.iter().any(|r| r == "dropbear-bin"));
        assert_eq!(config.modes.get("/etc/shadow"), Some(&0o600));
        let modules = load_modules(&dir).unwrap();
        assert!(modules.iter().any(|m| m == "virtio_net"));
    }

    #[test]
    fn unknown_fields_and_bad_paths_are_refused() {
        let base = "[kernel]\npackage = \"linux-image-cloud-amd64\"\n[packages]\nroots = [\"busybox-static\"]\n";
        assert!(
            ImageConfig::parse(
                &format!("{base}[[component]]\nname = \"a\"\nfiles = [\"/usr/bin/x\"]\n"),
                Path::new("t")
            )
            .is_ok()
        );
        assert!(ImageConfig::parse(&format!("{base}colour = 1\n"), Path::new("t")).is_err());
        assert!(
            ImageConfig::parse(
                &format!("{base}[[component]]\nname = \"a\"\nfiles = [\"usr/bin/x\"]\n"),
                Path::new("t")
            )
            .is_err()
        );
        assert!(
            ImageConfig::parse(
                &format!("{base}[modes]\n\"/etc/x\" = 0o17777\n"),
                Path::new("t")
            )
            .is_err()
        );
    }

    #[test]
    fn module_list_comments() {
        assert_eq!(
            parse_modules("# net\nvirtio_net  # nic\n\n fuse\n"),
            ["virtio_net", "fuse"]
        );
    }
}
