//! The mounts under a container: a local image through a loop device, and
//! the overlay that makes it writable. Mounting goes through mount(8) (it
//! sets up and auto-clears loop devices), as hyperos-mount does.

use std::path::Path;
use std::process::Command;

#[cfg(target_os = "linux")]
use anyhow::{Context, bail};

/// Decodes a mountinfo path field (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether something is mounted at `path` (in this mount namespace).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| unescape(p) == want)
}

/// Detaches whatever is mounted at `path` (lazily: a killed FUSE server or a
/// process still inside must not block the cleanup), all layers of it.
pub fn detach(path: &Path) {
    for _ in 0..8 {
        if !is_mounted(path) {
            return;
        }
        let _ = Command::new("umount").arg("-l").arg(path).output();
    }
}

/// Unmounts `path`, failing if it is busy.
#[cfg(target_os = "linux")]
pub fn unmount(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("umount")
        .arg(path)
        .output()
        .context("running umount")?;
    if !out.status.success() {
        bail!(
            "unmounting {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn run_mount(args: &[&std::ffi::OsStr], what: &str) -> anyhow::Result<()> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .context("running mount")?;
    if !out.status.success() {
        bail!(
            "mounting {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Mounts the `fs_type` filesystem in the image file `image` read-only at
/// `dir`, through a loop device that clears itself on unmount.
#[cfg(target_os = "linux")]
pub fn mount_image(image: &Path, fs_type: &str, dir: &Path) -> anyhow::Result<()> {
    // ext4 would replay its journal even read-only; `noload` stops that.
    let options = if fs_type == "ext4" {
        "ro,loop,nodev,noload"
    } else {
        "ro,loop,nodev"
    };
    run_mount(
        &[
            "-t".as_ref(),
            fs_type.as_ref(),
            "-o".as_ref(),
            options.as_ref(),
            image.as_os_str(),
            dir.as_os_str(),
        ],
        &format!("the {fs_type} image {}", image.display()),
    )
}

/// Characters overlayfs can't take in a directory option.
#[cfg(target_os = "linux")]
fn check_overlay_path(path: &Path) -> anyhow::Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    if s.contains([',', ':', '\\']) {
        bail!("{s} has a ',', ':' or '\\', which overlayfs can't take: move it to a plainer path");
    }
    Ok(s.to_owned())
}

/// Mounts an overlay of `upper` (with `work`) on the read-only `lower` at
/// `root`. Device nodes in the image don't work through it (`nodev`).
#[cfg(target_os = "linux")]
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, root: &Path) -> anyhow::Result<()> {
    let options = format!(
        "lowerdir={},upperdir={},workdir={},nodev",
        check_overlay_path(lower)?,
        check_overlay_path(upper)?,
        check_overlay_path(work)?
    );
    run_mount(
        &[
            "-t".as_ref(),
            "overlay".as_ref(),
            "-o".as_ref(),
            options.as_ref(),
            "overlay".as_ref(),
            root.as_os_str(),
        ],
        "the writable layer (overlay)",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/tail\\04"), "/tail\\04");
    }

    #[test]
    fn root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
    }

    #[test]
    fn overlay_paths_with_separators_are_refused() {
        let err = check_overlay_path(Path::new("/a,b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlayfs can't take"), "{err}");
    }
}
