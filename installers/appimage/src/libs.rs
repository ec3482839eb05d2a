//! The shared libraries the AppImage carries: the `ldd` closure of
//! everything it runs or loads, minus the libraries that must be the host's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Libraries left to the host, by name before `.so` (`*` ends a prefix).
///
/// - glibc: the host's `ld-linux` loads the app and must find its own libc.
/// - OpenGL/EGL/GBM/DRM/Vulkan: they front the host's GPU driver.
/// - libX11, libxcb (and its libXau, libXdmcp) and libwayland: the host's
///   GPU driver links them and may need newer symbols than ours; every X11
///   or Wayland desktop has them, with a stable ABI.
/// - libstdc++, libgcc_s: the host's GPU driver (Mesa's LLVM) needs a
///   libstdc++ at least as new as its own; the host's is, ours may not be.
/// - fontconfig, freetype: they read the host's `/etc/fonts` and font
///   caches, whose format follows the host's version.
const HOST_LIBRARIES: &[&str] = &[
    "ld-linux-x86-64",
    "libc",
    "libm",
    "libdl",
    "libpthread",
    "librt",
    "libresolv",
    "libutil",
    "libanl",
    "libmvec",
    "libthread_db",
    "libBrokenLocale",
    "libnss_*",
    "libGL",
    "libGLX",
    "libGLdispatch",
    "libOpenGL",
    "libGLESv2",
    "libEGL",
    "libglapi",
    "libgbm",
    "libdrm*",
    "libvulkan",
    "libX11*",
    "libxcb*",
    "libXau",
    "libXdmcp",
    "libwayland-*",
    "libstdc++",
    "libgcc_s",
    "libfontconfig",
    "libfreetype",
];

/// Whether `name` (a soname such as `libxcb-shm.so.0`) comes from the host.
pub fn from_host(name: &str) -> bool {
    let stem = name.split(".so").next().unwrap_or(name);
    HOST_LIBRARIES
        .iter()
        .any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => stem.starts_with(prefix),
            None => stem == *entry,
        })
}

/// The libraries `objects` need, directly or not, by the name they are
/// asked for (`libfoo.so.1`) with the file the host resolves it to;
/// without the host's own (`from_host`).
pub fn closure(objects: &[PathBuf]) -> Result<BTreeMap<String, PathBuf>> {
    let mut libraries = BTreeMap::new();
    for object in objects {
        let output = Command::new("ldd")
            .arg(object)
            .output()
            .context("ldd could not be run: apt-get install libc-bin")?;
        if !output.status.success() {
            bail!(
                "ldd {} failed: {}",
                object.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // "\tlibfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)";
            // the vDSO and the loader have no "=>".
            let Some((name, target)) = line.trim().split_once(" => ") else {
                continue;
            };
            if target.starts_with("not found") {
                bail!(
                    "{} needs {name}, which is not installed: run ./x setup",
                    object.display()
                );
            }
            let path = target.split(" (").next().unwrap_or(target);
            if !from_host(name) {
                libraries.insert(name.to_owned(), PathBuf::from(path));
            }
        }
    }
    Ok(libraries)
}

/// Copies each library into `dir` under the name it is asked for.
pub fn copy_into(libraries: &BTreeMap<String, PathBuf>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, path) in libraries {
        std::fs::copy(path, dir.join(name))
            .with_context(|| format!("copying {} into the AppDir", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::from_host;

    #[test]
    fn host_libraries_are_matched_by_name_not_by_prefix() {
        for name in [
            "libc.so.6",
            "ld-linux-x86-64.so.2",
            "libxcb-shm.so.0",
            "libX11-xcb.so.1",
            "libdrm.so.2",
            "libstdc++.so.6",
            "libwayland-client.so.0",
        ] {
            assert!(from_host(name), "{name} should come from the host");
        }
        for name in [
            "libcairo.so.2",
            "libcap.so.2",
            "libmount.so.1",
            "libwebkit2gtk-4.1.so.0",
            "libXext.so.6",
            "libgtk-3.so.0",
        ] {
            assert!(!from_host(name), "{name} should be bundled");
        }
    }
}
