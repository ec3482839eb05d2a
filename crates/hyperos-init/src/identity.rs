//! Who the guest is: its hostname and the keys allowed to log in as root.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::error::{Context, Result};
use crate::files::write_atomic;

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
}
