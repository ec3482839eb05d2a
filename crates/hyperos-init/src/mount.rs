//! The early mounts, and unmounting everything at shutdown.

use std::fs;
use std::os::unix::fs::DirBuilderExt;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::{Context, Result};
use crate::log::say;

/// One of the API file systems PID 1 mounts before anything else.
struct Early {
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In mount order: each target's parent is mounted before it.
const EARLY: &[Early] = &[
    Early {
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Early {
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Early {
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Early {
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,gid=5,ptmxmode=0666"),
    },
    Early {
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    Early {
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    Early {
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    Early {
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
];

/// Mounts /proc, /sys, /dev and the rest. A mount that fails is logged and
/// returned in the list of failures; the boot goes on without it.
pub fn mount_early() -> Vec<String> {
    let mut failures = Vec::new();
    for early in EARLY {
        if let Err(err) = mount_one(early) {
            let report = err.report();
            say!("{report}");
            failures.push(report);
        }
    }
    failures
}

fn mount_one(early: &Early) -> Result<()> {
    let _ = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(early.target);
    match mount(
        Some(early.fstype),
        early.target,
        Some(early.fstype),
        early.flags,
        early.data,
    ) {
        // The kernel may have mounted devtmpfs itself (CONFIG_DEVTMPFS_MOUNT).
        Err(Errno::EBUSY) => Ok(()),
        other => other.context(|| format!("could not mount {} on {}", early.fstype, early.target)),
    }
}

/// A line of `/proc/self/mountinfo`, reduced to what unmounting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

/// Parses `/proc/self/mountinfo`, in the kernel's order (parents first).
/// Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                mount_point: unescape(mount_point),
                fstype: (*fields.get(separator + 1)?).to_owned(),
                source: unescape(fields.get(separator + 2)?),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts to unmount at shutdown, children before parents: the
/// reverse of the kernel's order, without the root file system (the
/// initramfs, which can't be unmounted).
pub fn unmount_order(entries: &[MountEntry]) -> Vec<&MountEntry> {
    entries
        .iter()
        .rev()
        .filter(|entry| entry.mount_point != "/")
        .collect()
}

/// Unmounts everything but the root, children first. A busy mount is
/// detached; one backed by a block device is first remounted read-only, so
/// its file system is clean on disk whatever still holds it.
pub fn unmount_all() {
    let text = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => text,
        Err(err) => {
            say!("could not read /proc/self/mountinfo, nothing unmounted: {err}");
            return;
        }
    };
    for entry in unmount_order(&parse_mountinfo(&text)) {
        let mount_point = entry.mount_point.as_str();
        match umount2(mount_point, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(err) => {
                let on_disk = entry.source.starts_with("/dev/");
                let read_only = on_disk
                    && mount(
                        None::<&str>,
                        mount_point,
                        None::<&str>,
                        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .is_ok();
                let detached = umount2(mount_point, MntFlags::MNT_DETACH).is_ok();
                // PID 1's own console and agent port keep /dev busy: expected.
                if on_disk || !detached {
                    say!(
                        "could not unmount {mount_point} ({err}); remounted read-only: {read_only}, detached: {detached}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
1 1 0:2 / / rw - rootfs rootfs rw
20 1 0:20 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
21 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
22 1 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4k
23 22 0:22 / /dev/pts rw - devpts devpts rw,ptmxmode=666
24 21 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
30 1 254:16 / /var/lib/hyperos rw,noatime - ext4 /dev/vdb rw
31 30 0:30 / /var/lib/hyperos/my\\040dir rw - tmpfs tmp\\134fs rw
bogus line
";

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let entries = parse_mountinfo(MOUNTINFO);
        assert_eq!(entries.len(), 8);
        assert_eq!(
            entries[3],
            MountEntry {
                mount_point: "/dev".into(),
                fstype: "devtmpfs".into(),
                source: "devtmpfs".into(),
            }
        );
        assert_eq!(entries[6].source, "/dev/vdb");
        assert_eq!(entries[7].mount_point, "/var/lib/hyperos/my dir");
        assert_eq!(entries[7].source, "tmp\\fs");
    }

    #[test]
    fn unmounts_children_first_and_never_the_root() {
        let entries = parse_mountinfo(MOUNTINFO);
        let order: Vec<&str> = unmount_order(&entries)
            .iter()
            .map(|entry| entry.mount_point.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "/var/lib/hyperos/my dir",
                "/var/lib/hyperos",
                "/sys/fs/cgroup",
                "/dev/pts",
                "/dev",
                "/sys",
                "/proc",
            ]
        );
    }

    #[test]
    fn unescape_leaves_odd_backslashes_alone() {
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("\\04"), "\\04");
        assert_eq!(unescape("x\\011y"), "x\ty");
    }
}
