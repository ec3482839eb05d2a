//! The optional persistent data disk, mounted on `/var/lib/hyperos`.
//!
//! The host attaches it as a virtio-blk disk with the serial
//! [`DATA_DISK_SERIAL`]. A blank disk is formatted ext4 on first use; a
//! disk holding anything else is left alone, since it may be the user's data.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::error::{Context, Error, Result};
use crate::log::say;
use crate::process::command;

/// Serial of the data disk's virtio-blk device.
pub use hyperos_proto::DATA_DISK_SERIAL;
/// Where it is mounted.
pub const DATA_DIR: &str = "/var/lib/hyperos";
/// How much of the disk's start must be zero for it to count as blank.
pub const BLANK_PROBE_LEN: usize = 64 * 1024;

/// What the start of a disk says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// An ext2/3/4 superblock.
    Ext4,
    /// All zero: never used, safe to format.
    Blank,
    /// Something else.
    Unknown,
}

/// Classifies a disk from its first [`BLANK_PROBE_LEN`] bytes.
pub fn classify(start: &[u8]) -> Content {
    // The superblock starts at 1024; its magic 0xEF53 is at offset 56 in it.
    if start.get(1080..1082) == Some(&[0x53, 0xEF]) {
        Content::Ext4
    } else if start.len() >= BLANK_PROBE_LEN && start.iter().all(|&b| b == 0) {
        Content::Blank
    } else {
        Content::Unknown
    }
}

/// Finds the data disk in `/sys/block`, by serial.
pub fn find() -> Option<PathBuf> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("vd"))
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let serial = fs::read_to_string(format!("/sys/block/{name}/serial")).ok()?;
        (serial.trim() == DATA_DISK_SERIAL).then(|| PathBuf::from(format!("/dev/{name}")))
    })
}

/// Mounts the data disk if there is one, formatting it first if blank.
/// `Ok(None)` means no data disk: `/var/lib/hyperos` stays on the rootfs.
pub fn mount_data_disk() -> Result<Option<PathBuf>> {
    let Some(device) = find() else {
        return Ok(None);
    };
    let mut start = Vec::with_capacity(BLANK_PROBE_LEN);
    File::open(&device)
        .and_then(|file| file.take(BLANK_PROBE_LEN as u64).read_to_end(&mut start))
        .context(|| format!("could not read the data disk {}", device.display()))?;
    match classify(&start) {
        Content::Ext4 => check(&device),
        Content::Blank => format(&device)?,
        Content::Unknown => {
            return Err(Error::msg(format!(
                "the data disk {} holds something that is not an ext4 file system; it was \
                 left alone and not mounted: attach a blank or ext4 disk",
                device.display()
            )));
        }
    }
    fs::create_dir_all(DATA_DIR).context(|| format!("could not create {DATA_DIR}"))?;
    mount(
        Some(device.as_path()),
        DATA_DIR,
        Some("ext4"),
        MsFlags::MS_NOATIME | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .context(|| {
        format!(
            "could not mount the data disk {} on {DATA_DIR}",
            device.display()
        )
    })?;
    Ok(Some(device))
}

fn format(device: &Path) -> Result<()> {
    say!("formatting the blank data disk {}", device.display());
    let status = command("mkfs.ext4")
        // A 16 MiB journal instead of the default 64 MiB, and no zeroing of a
        // disk that is blank anyway: the sparse file stays small on the host.
        .args(["-q", "-F", "-L", DATA_DISK_SERIAL, "-J", "size=16"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(device)
        .status()
        .context(|| "could not run mkfs.ext4".to_owned())?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "mkfs.ext4 failed on the data disk {} ({status})",
            device.display()
        )))
    }
}

/// Replays and repairs what `e2fsck -p` can, after an unclean stop. A
/// failure is logged; the kernel's own journal replay still gets its chance.
fn check(device: &Path) {
    match command("e2fsck").arg("-p").arg(device).status() {
        // 0: clean, 1: errors fixed, 2: fixed, reboot advised (not mounted, so moot).
        Ok(status) if matches!(status.code(), Some(0..=2)) => {}
        Ok(status) => say!(
            "e2fsck -p {} reported problems ({status})",
            device.display()
        ),
        Err(err) => say!("could not run e2fsck: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_ext4_blank_and_other() {
        let mut disk = vec![0u8; BLANK_PROBE_LEN];
        assert_eq!(classify(&disk), Content::Blank);
        disk[1080] = 0x53;
        disk[1081] = 0xEF;
        assert_eq!(classify(&disk), Content::Ext4);
        disk[1080] = 0;
        assert_eq!(classify(&disk), Content::Unknown);
        // A partition table is data, not a blank disk.
        let mut mbr = vec![0u8; BLANK_PROBE_LEN];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(classify(&mbr), Content::Unknown);
        // A disk smaller than the probe can't be proven blank.
        assert_eq!(classify(&[0u8; 4096]), Content::Unknown);
        assert_eq!(classify(&[]), Content::Unknown);
    }
}
