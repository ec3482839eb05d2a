//! Checks that a file is an x86 bzImage and reads its version string.
//!
//! The boot protocol (Documentation/arch/x86/boot.rst) puts the magic `HdrS`
//! at offset 0x202 of the setup header; `kernel_version` at 0x20E is an offset
//! (minus 0x200) to a NUL-terminated string such as
//! `6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP …`.

use std::path::{Path, PathBuf};

const HDRS_OFFSET: usize = 0x202;
const VERSION_PTR_OFFSET: usize = 0x20E;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read kernel {path}: check the path")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an x86 bzImage (no \"HdrS\" at offset 0x202): pass the kernel's arch/x86/boot/bzImage, not vmlinux or a compressed copy"
    )]
    NotBzImage { path: PathBuf },
}

/// Reads `path` and checks it is a bzImage; returns its bytes.
pub fn read_bzimage(path: &Path) -> Result<Vec<u8>, KernelError> {
    let bytes = std::fs::read(path).map_err(|source| KernelError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !is_bzimage(&bytes) {
        return Err(KernelError::NotBzImage {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// True when the boot protocol header magic is present.
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(b"HdrS")
}

/// The kernel release (first word of the version string), if the header has one.
pub fn release(bytes: &[u8]) -> Option<String> {
    let ptr = bytes.get(VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2)?;
    let offset = u16::from_le_bytes([ptr[0], ptr[1]]) as usize;
    if offset == 0 {
        return None;
    }
    let start = offset + 0x200;
    let rest = bytes.get(start..)?;
    let end = rest.iter().take(256).position(|&b| b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x400];
        bytes[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        let at = 0x300;
        bytes[VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2]
            .copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        bytes[at..at + version.len()].copy_from_slice(version.as_bytes());
        bytes
    }

    #[test]
    fn accepts_header_magic_and_reads_release() {
        let bytes = fake_bzimage("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert!(is_bzimage(&bytes));
        assert_eq!(release(&bytes).as_deref(), Some("6.1.0-56-cloud-amd64"));
    }

    #[test]
    fn rejects_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, b"\x7fELF not a bzImage").unwrap();
        let err = read_bzimage(&path).unwrap_err();
        assert!(matches!(err, KernelError::NotBzImage { .. }));
        assert!(err.to_string().contains("HdrS"));
        let mut truncated = fake_bzimage("x");
        truncated.truncate(0x203);
        assert!(!is_bzimage(&truncated));
        assert!(matches!(
            read_bzimage(&dir.path().join("missing")),
            Err(KernelError::Read { .. })
        ));
    }
}
