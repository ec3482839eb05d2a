//! Mounting: the FUSE file, then the filesystem inside it through a loop
//! device (`mount -o loop` sets the loop device to clear itself on unmount,
//! so nothing is left behind).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::fs::{IMAGE_NAME, LazyImageFs, ReadStats};
use crate::{ImageSource, MountError};

/// FUSE worker threads: reads of different blocks proceed in parallel.
const FUSE_THREADS: usize = 8;

/// A mounted image. Unmount it with [`MountedImage::unmount`]; dropping it
/// detaches what is left, lazily.
#[derive(Debug)]
pub struct MountedImage {
    dir: PathBuf,
    fuse_dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
    stats: Arc<ReadStats>,
    fs_mounted: bool,
}

impl MountedImage {
    /// Where the filesystem inside the image is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The FUSE file holding the image.
    pub fn image_file(&self) -> PathBuf {
        self.fuse_dir.join(IMAGE_NAME)
    }

    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// Unmounts the filesystem, then the FUSE file. Fails, leaving both
    /// mounted so it can be retried, if something still uses the filesystem.
    pub fn unmount(&mut self) -> Result<(), MountError> {
        if self.fs_mounted {
            umount(&self.dir, false)?;
            self.fs_mounted = false;
        }
        // The loop device lets go of the FUSE file a moment after the
        // filesystem on it is unmounted; until then the FUSE mount is busy.
        wait_loop_released(&self.image_file(), std::time::Duration::from_secs(10));
        if let Some(session) = self.session.take() {
            session.umount_and_join().map_err(|e| MountError::Unmount {
                path: self.fuse_dir.clone(),
                why: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        if self.fs_mounted {
            let _ = umount(&self.dir, true);
        }
        // Dropping the session unmounts the FUSE file.
        self.session.take();
    }
}

/// Mounts `source` as a FUSE file in `fuse_dir`, then the `fs_type`
/// filesystem inside it read-only at `dir`. Both directories must exist and
/// be empty.
pub fn mount_image<S: ImageSource>(
    source: Arc<S>,
    fs_type: &str,
    fuse_dir: &Path,
    dir: &Path,
) -> Result<MountedImage, MountError> {
    for path in [fuse_dir, dir] {
        let empty = std::fs::read_dir(path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(MountError::BadMountPoint {
                path: path.to_owned(),
            });
        }
    }
    let stats = Arc::new(ReadStats::default());
    let mut config = fuser::Config::default();
    config.mount_options.extend([
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::FSName("hyperos".into()),
        fuser::MountOption::Subtype("hyperos-image".into()),
    ]);
    config.n_threads = Some(FUSE_THREADS);
    let fs = LazyImageFs::new(source, stats.clone());
    let session = fuser::spawn_mount(fs, fuse_dir, &config).map_err(|source| MountError::Fuse {
        path: fuse_dir.to_owned(),
        source,
    })?;
    let mut mounted = MountedImage {
        dir: dir.to_owned(),
        fuse_dir: fuse_dir.to_owned(),
        session: Some(session),
        stats,
        fs_mounted: false,
    };
    // ext4 would replay its journal even read-only; `noload` stops that.
    let options = if fs_type == "ext4" {
        "ro,loop,nodev,noload"
    } else {
        "ro,loop,nodev"
    };
    let out = Command::new("mount")
        .args(["-t", fs_type, "-o", options])
        .arg(mounted.image_file())
        .arg(dir)
        .output()
        .map_err(|e| MountError::Mount {
            fs_type: fs_type.to_owned(),
            path: dir.to_owned(),
            why: format!("running mount: {e}"),
        })?;
    if !out.status.success() {
        return Err(MountError::Mount {
            fs_type: fs_type.to_owned(),
            path: dir.to_owned(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    mounted.fs_mounted = true;
    tracing::info!(dir = %dir.display(), fs_type, "image mounted");
    Ok(mounted)
}

fn umount(path: &Path, lazy: bool) -> Result<(), MountError> {
    let mut command = Command::new("umount");
    if lazy {
        command.arg("-l");
    }
    let out = command
        .arg(path)
        .output()
        .map_err(|e| MountError::Unmount {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MountError::Unmount {
            path: path.to_owned(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Waits until no loop device is backed by `file` (or the timeout passes).
fn wait_loop_released(file: &Path, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let backed = || {
        let Ok(entries) = std::fs::read_dir("/sys/block") else {
            return false;
        };
        entries.flatten().any(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim_end()) == file)
        })
    };
    while backed() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
