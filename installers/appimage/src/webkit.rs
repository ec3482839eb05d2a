//! WebKitGTK's helper processes. `libwebkit2gtk-4.1.so.0` starts
//! `WebKitWebProcess` and `WebKitNetworkProcess`, and loads its injected
//! bundle, from a directory compiled into it ([`HOST_DIR`]); release
//! builds have no variable to move it. The bundled copy of the library gets
//! [`relative_dir`] written over that path instead: the same length, and
//! relative to `usr/lib`, where AppRun starts the app.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Where Debian's WebKitGTK 4.1 keeps its helpers.
pub const HOST_DIR: &str = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1";
/// The library that names [`HOST_DIR`].
pub const LIBRARY: &str = "libwebkit2gtk-4.1.so.0";
/// The helpers: executables, then directories.
const HELPERS: &[&str] = &[
    "WebKitWebProcess",
    "WebKitNetworkProcess",
    "WebKitGPUProcess",
    "injected-bundle",
];
const DIR_NAME: &str = "webkit2gtk-4.1";

/// [`HOST_DIR`] as `././…/webkit2gtk-4.1`, as long as it.
pub fn relative_dir() -> String {
    let prefix = HOST_DIR.len() - DIR_NAME.len();
    format!("{}{DIR_NAME}", "./".repeat(prefix / 2))
}

/// The helper executables, for `ldd`.
pub fn executables() -> Vec<std::path::PathBuf> {
    HELPERS
        .iter()
        .map(|h| Path::new(HOST_DIR).join(h))
        .filter(|p| p.is_file())
        .collect()
}

/// Copies the helpers into `lib_dir/webkit2gtk-4.1` and returns the
/// executables copied (their RPATH is set by the caller).
pub fn copy_helpers(lib_dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let dest = lib_dir.join(DIR_NAME);
    std::fs::create_dir_all(&dest)?;
    let mut executables = Vec::new();
    for helper in HELPERS {
        let src = Path::new(HOST_DIR).join(helper);
        if src.is_dir() {
            crate::copy_dir(&src, &dest.join(helper))?;
        } else if src.is_file() {
            std::fs::copy(&src, dest.join(helper))
                .with_context(|| format!("copying {}", src.display()))?;
            executables.push(dest.join(helper));
        } else if *helper != "WebKitGPUProcess" {
            bail!(
                "{} is missing: apt-get install libwebkit2gtk-4.1-0",
                src.display()
            );
        }
    }
    Ok(executables)
}

/// Points the bundled `libwebkit2gtk-4.1.so.0` in `lib_dir` at the bundled
/// helpers; returns how many times the path was rewritten.
pub fn patch_library(lib_dir: &Path) -> Result<usize> {
    let path = lib_dir.join(LIBRARY);
    let mut bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let count = replace_all(&mut bytes, HOST_DIR.as_bytes(), relative_dir().as_bytes());
    if count == 0 {
        bail!(
            "{LIBRARY} does not name {HOST_DIR}: this WebKitGTK build keeps its helpers elsewhere, so the AppImage cannot point it at its own"
        );
    }
    std::fs::write(&path, bytes)?;
    Ok(count)
}

/// Replaces every `from` in `bytes` with `to`, of the same length.
fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len(), "an in-place rewrite keeps the length");
    let Some(&first) = from.first() else { return 0 };
    let mut count = 0;
    let mut at = 0;
    while at + from.len() <= bytes.len() {
        match bytes[at..].iter().position(|&b| b == first) {
            Some(offset) if at + offset + from.len() <= bytes.len() => {
                let start = at + offset;
                if &bytes[start..start + from.len()] == from {
                    bytes[start..start + from.len()].copy_from_slice(to);
                    count += 1;
                    at = start + from.len();
                } else {
                    at = start + 1;
                }
            }
            _ => break,
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relative_dir_is_as_long_as_the_compiled_in_one() {
        assert_eq!(relative_dir().len(), HOST_DIR.len());
        assert_eq!(relative_dir(), "./././././././././././././webkit2gtk-4.1");
    }

    #[test]
    fn replace_all_rewrites_every_occurrence_in_place() {
        let mut bytes = b"xx/a/b\0/a/b/injected\0/a/".to_vec();
        assert_eq!(replace_all(&mut bytes, b"/a/b", b"./.b"), 2);
        assert_eq!(bytes, b"xx./.b\0./.b/injected\0/a/".to_vec());
    }
}
