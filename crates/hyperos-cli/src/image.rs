//! `hyperos image …`

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Assemble image/out/kernel and image/out/initrd.gz from Debian packages.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Use this kernel (bzImage) instead of Debian's linux-image-cloud-amd64.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Kernel modules for --kernel: a /lib/modules/<version> tree.
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules: Option<PathBuf>,
    /// The guest PID 1 binary (default: build hyperos-init from this source tree).
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// The guest's own `hyperos`, static, for mounts and containers in the VM
    /// (default: build hyperos-cli from this source tree).
    #[arg(long, value_name = "PATH")]
    hyperos: Option<PathBuf>,
    /// The image configuration directory (default: image/ of this source tree).
    #[arg(long, value_name = "DIR")]
    image_dir: Option<PathBuf>,
    /// Where to write kernel and initrd.gz (default: <image dir>/out).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The source tree this binary was built from, if it is still there.
pub fn source_tree() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("image")
        .is_dir()
        .then(|| root.canonicalize().unwrap_or(root))
}

/// Where the built image is looked for: $HYPEROS_IMAGE_DIR, the source
/// tree's image/out, or `share/hyperos` beside the installed binary.
pub fn default_image_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HYPEROS_IMAGE_DIR").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    if let Some(tree) = source_tree() {
        return tree.join("image/out");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|bin| bin.join("../share/hyperos")))
        .unwrap_or_else(|| PathBuf::from("image/out"))
}

pub fn run(command: ImageCommand) -> anyhow::Result<i32> {
    match command {
        ImageCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<i32> {
    let tree = source_tree();
    let image_dir = match (args.image_dir, &tree) {
        (Some(dir), _) => dir,
        (None, Some(tree)) => tree.join("image"),
        (None, None) => bail!(
            "no image configuration found: pass --image-dir (the image/ directory of a HyperOS checkout)"
        ),
    };
    let init = match args.init {
        Some(path) => path,
        None => build_for_guest(tree.as_deref(), &GuestBinary::INIT)?,
    };
    let guest_cli = match args.hyperos {
        Some(path) => path,
        None => build_for_guest(tree.as_deref(), &GuestBinary::CLI)?,
    };
    let out_dir = args.out.unwrap_or_else(|| image_dir.join("out"));
    let cache_dir = std::env::var_os("HYPEROS_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| image_dir.join("cache"));
    let options = hyperos_image::BuildOptions {
        image_dir,
        out_dir,
        cache_dir,
        init_binary: init,
        guest_cli: Some(guest_cli),
        kernel: args.kernel,
        modules_dir: args.modules,
    };
    let report = hyperos_image::build(&options)?;
    println!("{report}");
    Ok(0)
}

/// A binary built from this source tree for the guest.
struct GuestBinary {
    package: &'static str,
    bin: &'static str,
    /// The cargo profile (see the workspace Cargo.toml).
    profile: &'static str,
    /// The option that passes a ready binary instead.
    option: &'static str,
}

impl GuestBinary {
    /// The guest's PID 1: small, built with `opt-level = "z"` and fat LTO.
    const INIT: GuestBinary = GuestBinary {
        package: "hyperos-init",
        bin: "hyperos-init",
        profile: "guest",
        option: "--init",
    };
    /// The guest's `hyperos`: release settings (fat LTO), see Cargo.toml.
    const CLI: GuestBinary = GuestBinary {
        package: "hyperos-cli",
        bin: "hyperos",
        profile: "guest-cli",
        option: "--hyperos",
    };
}

/// Builds a guest binary as a static musl executable with cargo.
fn build_for_guest(tree: Option<&Path>, binary: &GuestBinary) -> anyhow::Result<PathBuf> {
    const TARGET: &str = "x86_64-unknown-linux-musl";
    let GuestBinary {
        package,
        bin,
        profile,
        option,
    } = binary;
    let Some(tree) = tree else {
        bail!("no HyperOS source tree to build {package} from: pass {option} PATH");
    };
    eprintln!("building {bin} for {TARGET}…");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(tree)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(["--profile", profile, "--target", TARGET])
        .status()
        .with_context(|| format!("running cargo to build {package} (or pass {option} PATH)"))?;
    if !status.success() {
        bail!(
            "building {package} failed; is the target installed? `rustup target add {TARGET}` (and `apt-get install musl-tools`)"
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tree.join("target"));
    Ok(target_dir.join(TARGET).join(profile).join(bin))
}
