//! What GTK and GIO load by path rather than by soname: gdk-pixbuf's image
//! loaders, GIO's modules (TLS, proxies, dconf) and GTK's GSettings
//! schemas. AppRun points the libraries at the bundled copies.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// gdk-pixbuf's loaders and their `loaders.cache`.
pub const PIXBUF_DIR: &str = "/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0";
/// GIO's modules: TLS for libsoup, proxy resolvers, the dconf settings backend.
pub const GIO_MODULES: &str = "/usr/lib/x86_64-linux-gnu/gio/modules";
const SCHEMAS: &str = "/usr/share/glib-2.0/schemas";
/// GTK 3's schemas: its file chooser (the app's dialogs) aborts without them.
const GTK_SCHEMAS: &str = "org.gtk.Settings.";

/// The loaders and modules, for `ldd`.
pub fn modules() -> Result<Vec<PathBuf>> {
    let mut modules = so_files(&Path::new(PIXBUF_DIR).join("loaders"))?;
    modules.extend(so_files(Path::new(GIO_MODULES))?);
    Ok(modules)
}

fn so_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{} is missing: apt-get install libgtk-3-0", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "so") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Copies the loaders to `lib_dir/gdk-pixbuf-2.0/2.10.0`, with a
/// `loaders.cache` naming them relative to `lib_dir` (AppRun runs the app
/// there; gdk-pixbuf opens the path it reads as given), and the GIO
/// modules to `lib_dir/gio/modules`.
pub fn copy_modules(lib_dir: &Path) -> Result<()> {
    let pixbuf = lib_dir.join("gdk-pixbuf-2.0/2.10.0");
    crate::copy_dir(
        &Path::new(PIXBUF_DIR).join("loaders"),
        &pixbuf.join("loaders"),
    )?;
    let cache_path = Path::new(PIXBUF_DIR).join("loaders.cache");
    let cache = std::fs::read_to_string(&cache_path).with_context(|| {
        format!(
            "{} is missing: apt-get install libgdk-pixbuf-2.0-0",
            cache_path.display()
        )
    })?;
    let host_loaders = format!("\"{PIXBUF_DIR}/loaders/");
    if !cache.contains(&host_loaders) {
        bail!(
            "{} names no loader in {PIXBUF_DIR}/loaders: run gdk-pixbuf-query-loaders --update-cache",
            cache_path.display()
        );
    }
    let cache = cache.replace(&host_loaders, "\"./gdk-pixbuf-2.0/2.10.0/loaders/");
    std::fs::write(pixbuf.join("loaders.cache"), cache)?;
    crate::copy_dir(Path::new(GIO_MODULES), &lib_dir.join("gio/modules"))
}

/// Compiles GTK's schemas into `share_dir/glib-2.0/schemas`.
pub fn compile_schemas(share_dir: &Path) -> Result<()> {
    let dest = share_dir.join("glib-2.0/schemas");
    std::fs::create_dir_all(&dest)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(SCHEMAS)
        .with_context(|| format!("{SCHEMAS} is missing: apt-get install libgtk-3-common"))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(GTK_SCHEMAS) && name.ends_with(".gschema.xml") {
            std::fs::copy(&path, dest.join(name))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("no {GTK_SCHEMAS}* schemas in {SCHEMAS}: apt-get install libgtk-3-common");
    }
    let status = Command::new("glib-compile-schemas")
        .arg(&dest)
        .status()
        .context("glib-compile-schemas not found: apt-get install libglib2.0-bin")?;
    if !status.success() {
        bail!("glib-compile-schemas {} failed ({status})", dest.display());
    }
    Ok(())
}
