//! Who the guest is: its hostname, its machine id and the keys allowed to
//! log in as root.

use std::fs::{self, DirBuilder};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::error::{Context, Result};
use crate::files::write_atomic;

/// systemd's machine id; systemd-nspawn refuses to start a container
/// without one.
pub const MACHINE_ID: &str = "/etc/machine-id";
/// Where it is kept, on the data disk, so a guest keeps its id across boots.
pub const SAVED_MACHINE_ID: &str = "/var/lib/hyperos/machine-id";

/// Sets the kernel hostname and writes `/etc/hostname` and `/etc/hosts`.
pub fn set_hostname(hostname: &str) -> Result<()> {
    nix::unistd::sethostname(hostname)
        .context(|| format!("could not set the hostname to {hostname}"))?;
    write_atomic(
        Path::new("/etc/hostname"),
        format!("{hostname}\n").as_bytes(),
        0o644,
    )?;
    write_atomic(
        Path::new("/etc/hosts"),
        hosts_file(hostname).as_bytes(),
        0o644,
    )
}

/// Writes [`MACHINE_ID`]: the one saved on the data disk, or a new random
/// one that is saved there. Call after the data disk is mounted.
pub fn ensure_machine_id() -> Result<()> {
    let saved = fs::read_to_string(SAVED_MACHINE_ID)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|id| is_machine_id(id));
    let id = match saved {
        Some(id) => id,
        None => {
            let mut bytes = [0u8; 16];
            fs::File::open("/dev/urandom")
                .and_then(|mut random| random.read_exact(&mut bytes))
                .context(|| "could not read /dev/urandom for a machine id".to_owned())?;
            let id = machine_id(bytes);
            write_atomic(
                Path::new(SAVED_MACHINE_ID),
                format!("{id}\n").as_bytes(),
                0o444,
            )?;
            id
        }
    };
    write_atomic(Path::new(MACHINE_ID), format!("{id}\n").as_bytes(), 0o444)
}

/// A machine id from random bytes: 32 lowercase hex digits, marked as a
/// random (version 4) UUID as systemd does.
pub fn machine_id(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` is a machine id systemd accepts: 32 lowercase hex digits,
/// not all zero.
pub fn is_machine_id(id: &str) -> bool {
    id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0')
}

/// `/etc/hosts` for a guest called `hostname`.
pub fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
}

/// Writes `/root/.ssh/authorized_keys` (0600, root's) in `/root/.ssh` (0700).
pub fn write_authorized_keys(keys: &[String]) -> Result<()> {
    let dir = Path::new("/root/.ssh");
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .context(|| format!("could not create {}", dir.display()))?;
    // The directory may come from the image with other bits or owner.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .context(|| format!("could not set the mode of {}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(0), Some(0))
        .context(|| format!("could not give {} to root", dir.display()))?;
    let path = dir.join("authorized_keys");
    write_atomic(&path, authorized_keys_file(keys).as_bytes(), 0o600)?;
    std::os::unix::fs::chown(&path, Some(0), Some(0))
        .context(|| format!("could not give {} to root", path.display()))
}

/// The keys, one per line.
pub fn authorized_keys_file(keys: &[String]) -> String {
    keys.iter().map(|key| format!("{key}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_one_entry_per_line() {
        assert!(hosts_file("tabby").contains("127.0.1.1\ttabby\n"));
        assert!(hosts_file("tabby").starts_with("127.0.0.1\tlocalhost\n"));
        let keys = ["ssh-ed25519 AAAA a b".to_owned(), "ssh-rsa BBBB".to_owned()];
        assert_eq!(
            authorized_keys_file(&keys),
            "ssh-ed25519 AAAA a b\nssh-rsa BBBB\n"
        );
        assert_eq!(authorized_keys_file(&[]), "");
    }

    #[test]
    fn machine_ids_are_what_systemd_reads() {
        let id = machine_id([0xff; 16]);
        assert_eq!(id, "ffffffffffff4fffbfffffffffffffff");
        assert!(is_machine_id(&id));
        assert!(
            is_machine_id(&machine_id([0; 16])),
            "version bits make it non-zero"
        );
        assert!(!is_machine_id(&"0".repeat(32)));
        assert!(!is_machine_id(&id.to_uppercase()));
        assert!(!is_machine_id(&id[..31]));
        assert!(!is_machine_id(&format!("{id}0")));
        assert!(!is_machine_id("uninitialized"));
    }
}
