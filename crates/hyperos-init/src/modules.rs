//! Loading the kernel modules the image lists.
//!
//! `/etc/hyperos/modules` holds absolute paths of `.ko` files, one per line,
//! dependencies first, so loading them in order needs no `modprobe`.

use std::ffi::CString;
use std::fs::File;

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

use crate::log::say;

/// Where the image builder writes the list.
pub const MODULES_LIST: &str = "/etc/hyperos/modules";

/// `MODULE_INIT_COMPRESSED_FILE` (Linux 5.17): the kernel decompresses.
const COMPRESSED_FILE: u32 = 4;

/// The module paths of a list: blank lines and `#` comments are skipped.
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// Loads every module of the list. Returns the failures (already logged);
/// a module that is already loaded or built in is not one.
pub fn load_all() -> Vec<String> {
    let text = match std::fs::read_to_string(MODULES_LIST) {
        Ok(text) => text,
        Err(err) => {
            let message = format!("could not read {MODULES_LIST}, no modules loaded: {err}");
            say!("{message}");
            return vec![message];
        }
    };
    let mut failures = Vec::new();
    for path in parse_list(&text) {
        if let Err(message) = load(path) {
            say!("{message}");
            failures.push(message);
        }
    }
    failures
}

fn load(path: &str) -> Result<(), String> {
    let file = File::open(path).map_err(|err| format!("could not open module {path}: {err}"))?;
    let compressed = [".xz", ".zst", ".gz"].iter().any(|ext| path.ends_with(ext));
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(&file, &CString::default(), flags) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(err) => Err(format!("could not load module {path}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_skips_blanks_and_comments() {
        let text =
            "# generated\n/lib/modules/6.1/virtio.ko\n\n  /lib/modules/6.1/virtio_pci.ko  \r\n#x\n";
        assert_eq!(
            parse_list(text),
            [
                "/lib/modules/6.1/virtio.ko",
                "/lib/modules/6.1/virtio_pci.ko"
            ]
        );
        assert!(parse_list("").is_empty());
    }
}
