//! Builds the HyperOS boot image: a kernel and an `initrd.gz` whose PID 1 is
//! `hyperos-init`, with the guest's own `hyperos` at `/usr/bin/hyperos`.
//!
//! ```text
//! image/image.toml ─┐                       ┌─▶ out/kernel      (bzImage)
//! image/modules.list├─▶ apt (closure,        │
//! image/include/    ┘   download, verify) ──▶ staging ──▶ tree ──▶ out/initrd.gz (cpio newc, gzip)
//!                                            │                 └─▶ out/manifest.json
//! --init, --hyperos, --kernel, --modules ────┘
//! ```
//!
//! 1. [`apt`]: resolve the `Depends` closure of the configured packages with
//!    the host's apt and `apt-get download` it into `cache/debs/` (reused,
//!    checked against the signed index's SHA256).
//! 2. [`deb`]: unpack each package into `cache/staging/<pkg>_<version>/`.
//! 3. [`rootfs`]: take the configured files (merged /usr), their shared
//!    library closure ([`elf`]), busybox applet links, the kernel modules
//!    ([`modules`]), the generated /etc files and `image/include/` into one tree.
//! 4. [`cpio`]: write the tree as a reproducible newc archive, gzip it.
//!
//! Invariants: the same packages, init binary and configuration give
//! byte-identical outputs; outputs are replaced atomically; nothing is
//! executed from the packages except the static busybox, to list its applets.
//!
//! The image layout PID 1 relies on is documented in `image/README.md`.

pub mod apt;
mod builder;
pub mod config;
pub mod cpio;
pub mod deb;
mod decompress;
pub mod elf;
mod fsutil;
pub mod kernel;
pub mod modules;
pub mod report;
pub mod rootfs;

use std::path::{Path, PathBuf};

pub use report::{BuildReport, KernelSource, OutputFile, PackageVersion, PartSize};

/// Where the guest's PID 1 finds the modules to load, one absolute path per line.
pub const MODULES_LIST_PATH: &str = "/etc/hyperos/modules";
/// JSON describing the build, inside the image.
pub const IMAGE_INFO_PATH: &str = "/etc/hyperos/image";
/// Where the guest's `hyperos` goes.
pub const GUEST_CLI_PATH: &str = "/usr/bin/hyperos";

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The repository's `image/` directory (image.toml, modules.list, include/).
    pub image_dir: PathBuf,
    /// Where `kernel`, `initrd.gz` and `manifest.json` go (`image/out`).
    pub out_dir: PathBuf,
    /// Downloaded and unpacked packages, kept between builds (`image/cache`).
    pub cache_dir: PathBuf,
    /// The static `hyperos-init` binary, installed as `/init`.
    pub init_binary: PathBuf,
    /// The static `hyperos` binary the guest runs (mounts, containers),
    /// installed as [`GUEST_CLI_PATH`]. Without it the image has none.
    pub guest_cli: Option<PathBuf>,
    /// A bzImage to use instead of the Debian kernel package.
    pub kernel: Option<PathBuf>,
    /// A `/lib/modules/<kver>` tree to take modules from. Without it, modules
    /// come from the Debian kernel package, or none ship with `kernel`.
    pub modules_dir: Option<PathBuf>,
}

impl BuildOptions {
    /// Options for a repository checkout: `image/`, `image/out`, `image/cache`.
    pub fn for_repo(repo: &Path, init_binary: PathBuf) -> Self {
        let image_dir = repo.join("image");
        BuildOptions {
            out_dir: image_dir.join("out"),
            cache_dir: image_dir.join("cache"),
            image_dir,
            init_binary,
            guest_cli: None,
            kernel: None,
            modules_dir: None,
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image build needs a Debian/Ubuntu Linux host")]
    UnsupportedHost,
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Apt(#[from] apt::AptError),
    #[error(transparent)]
    Deb(#[from] deb::DebError),
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    #[error(transparent)]
    Modules(#[from] modules::ModuleError),
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(
        "cannot read the init binary {path}: build hyperos-init for x86_64-unknown-linux-musl and pass its path"
    )]
    InitBinary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the init binary {path} is dynamically linked: build hyperos-init for x86_64-unknown-linux-musl so it runs without a loader"
    )]
    InitNotStatic { path: PathBuf },
    #[error(
        "cannot read the guest's hyperos binary {path}: build hyperos-cli for x86_64-unknown-linux-musl and pass its path with --hyperos"
    )]
    GuestCli {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the guest's hyperos binary {path} is dynamically linked: build hyperos-cli for x86_64-unknown-linux-musl so it runs in the guest"
    )]
    GuestCliNotStatic { path: PathBuf },
    #[error(
        "package {package} has no {what}: the kernel package name in image/image.toml does not name a kernel image package"
    )]
    KernelPackage { package: String, what: String },
    #[error(
        "cannot run busybox from {path} to list its applets: the build host must run x86-64 binaries"
    )]
    Busybox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write {path}: check that the output directory is writable and the disk not full"
    )]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Builds `out_dir/kernel`, `out_dir/initrd.gz` and `out_dir/manifest.json`.
#[tracing::instrument(skip_all, fields(image_dir = %opts.image_dir.display(), out_dir = %opts.out_dir.display()))]
pub fn build(opts: &BuildOptions) -> Result<BuildReport, ImageError> {
    if !cfg!(target_os = "linux") {
        return Err(ImageError::UnsupportedHost);
    }
    builder::Builder::new(opts)?.run()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
