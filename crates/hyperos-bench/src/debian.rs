//! The Debian root filesystems the benchmarks run, made once by
//! debootstrap and kept under target/bench-cache/ (shared with the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// `target/bench-cache/<name>`: a bookworm minbase with `include`d
/// packages, made by debootstrap from apt's own bookworm mirror if missing.
pub fn rootfs(repo: &Path, name: &str, include: &[&str]) -> anyhow::Result<PathBuf> {
    let cache = repo.join("target/bench-cache");
    std::fs::create_dir_all(&cache)?;
    let rootfs = cache.join(name);
    let lock = std::fs::File::create(cache.join(".rootfs.lock"))?;
    lock.lock()?;
    if !rootfs.join("usr/bin/apt-get").exists() {
        let tmp = cache.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        // The mirror apt uses for bookworm here.
        let targets = Command::new("apt-get")
            .args(["indextargets", "--format", "$(RELEASE) $(REPO_URI)"])
            .output()?;
        let mirror = String::from_utf8_lossy(&targets.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("bookworm ").map(str::to_owned))
            .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned());
        eprintln!("debootstrap --variant=minbase bookworm from {mirror}");
        let mut debootstrap = Command::new("debootstrap");
        debootstrap.arg("--variant=minbase");
        if !include.is_empty() {
            debootstrap.arg(format!("--include={}", include.join(",")));
        }
        let status = debootstrap
            .arg("bookworm")
            .arg(&tmp)
            .arg(&mirror)
            .status()
            .context("running debootstrap (apt-get install debootstrap)")?;
        if !status.success() {
            bail!("debootstrap of {name} failed");
        }
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::rename(&tmp, &rootfs)?;
    }
    lock.unlock()?;
    Ok(rootfs)
}
