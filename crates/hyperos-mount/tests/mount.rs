//! Real FUSE and loop mounts (as root): an ext4 image served lazily from an
//! ImageSource, read through the kernel, compared with the original files.

#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hyperos_mount::{FileSource, ImageSource, ReadError, mount_image};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// An ext4 image of a small tree, made with `mkfs.ext4 -d`.
fn make_image(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/debian_version"), "12.7\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(tree.join("big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("etc/debian_version", tree.join("link")).unwrap();
    let image = dir.join("image.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("16M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Counts reads and can be made to fail, as a cut network would.
struct Flaky {
    inner: FileSource,
    broken: AtomicBool,
    bytes: AtomicU64,
}

impl ImageSource for Flaky {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, ReadError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(ReadError::Timeout);
        }
        let data = self.inner.read_at(offset, len)?;
        self.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok(data)
    }
}

fn mounted_count(path: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
        .count()
}

#[test]
fn lazy_mount_reads_only_what_is_touched_and_fails_with_eio_when_cut() {
    if !is_root() {
        eprintln!("needs root for loop mounts; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = make_image(tmp.path());
    let image_len = std::fs::metadata(&image).unwrap().len();
    let source = Arc::new(Flaky {
        inner: FileSource::open(&image).unwrap(),
        broken: AtomicBool::new(false),
        bytes: AtomicU64::new(0),
    });
    let fuse_dir = tmp.path().join("fuse");
    let dir = tmp.path().join("root");
    std::fs::create_dir_all(&fuse_dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let mut mounted = mount_image(source.clone(), "ext4", &fuse_dir, &dir).unwrap();

    // A small file reads right, and only a small part of the image was read.
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/debian_version")).unwrap(),
        "12.7\n"
    );
    assert_eq!(
        std::fs::read_link(dir.join("link")).unwrap(),
        Path::new("etc/debian_version")
    );
    let touched = source.bytes.load(Ordering::SeqCst);
    assert!(
        touched < image_len / 2,
        "read {touched} of {image_len} bytes for one small file"
    );

    // Cut the source: an uncached block fails with EIO, it does not hang.
    source.broken.store(true, Ordering::SeqCst);
    let err = std::fs::read(dir.join("big.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_eio()), "{err}");
    // What was already read still reads (kernel page cache).
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/debian_version")).unwrap(),
        "12.7\n"
    );

    // Back online: the big file reads whole and right.
    source.broken.store(false, Ordering::SeqCst);
    // Drop cached pages of the failed read so the kernel asks again.
    let _ = Command::new("sh")
        .args(["-c", "echo 1 > /proc/sys/vm/drop_caches"])
        .status();
    let big = std::fs::read(dir.join("big.bin")).unwrap();
    assert_eq!(big.len(), 3_000_000);
    assert_eq!(big, std::fs::read(tmp.path().join("tree/big.bin")).unwrap());
    assert!(mounted.stats().errors.load(Ordering::Relaxed) > 0);

    // Unmount leaves nothing mounted.
    mounted.unmount().unwrap();
    assert_eq!(mounted_count(&dir), 0);
    assert_eq!(mounted_count(&fuse_dir), 0);
}

#[test]
fn busy_unmount_fails_cleanly_and_bad_mount_points_are_refused() {
    if !is_root() {
        eprintln!("needs root for loop mounts; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = make_image(tmp.path());
    let fuse_dir = tmp.path().join("fuse");
    let dir = tmp.path().join("root");
    std::fs::create_dir_all(&fuse_dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("not-empty"), "x").unwrap();
    let source = Arc::new(FileSource::open(&image).unwrap());
    let err = mount_image(source.clone(), "ext4", &fuse_dir, &dir).unwrap_err();
    assert!(err.to_string().contains("not an empty directory"), "{err}");
    std::fs::remove_file(dir.join("not-empty")).unwrap();

    // The wrong filesystem type is a clear error, and leaves nothing behind.
    let err = mount_image(source.clone(), "squashfs", &fuse_dir, &dir).unwrap_err();
    assert!(
        err.to_string()
            .contains("mounting the squashfs file system"),
        "{err}"
    );
    assert_eq!(mounted_count(&fuse_dir), 0);

    let mut mounted = mount_image(source, "ext4", &fuse_dir, &dir).unwrap();
    let cwd = std::env::current_dir().unwrap();
    // A process inside the mount keeps it busy: unmount fails, says why, and
    // leaves everything mounted.
    let mut holder = Command::new("sleep")
        .arg("30")
        .current_dir(dir.join("etc"))
        .spawn()
        .unwrap();
    let err = mounted.unmount().unwrap_err();
    assert!(err.to_string().contains("unmounting"), "{err}");
    assert_eq!(mounted_count(&dir), 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/debian_version")).unwrap(),
        "12.7\n"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    mounted.unmount().unwrap();
    assert_eq!(std::env::current_dir().unwrap(), cwd);
    assert_eq!(mounted_count(&dir), 0);
    assert_eq!(mounted_count(&fuse_dir), 0);
}

fn libc_eio() -> i32 {
    5
}
