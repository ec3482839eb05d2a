//! Small file helpers shared by PID 1 and the DHCP hook.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Context, Result};

/// Writes `contents` to `path` atomically: a temporary file beside it, then
/// a rename, so a reader sees the old or the new file, never half of one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().context(|| format!("could not write {}", path.display()))
}
