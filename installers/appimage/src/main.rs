//! `hyperos-appimage [REPO]`: builds
//! `target/release/bundle/appimage/HyperOS_<version>_amd64.AppImage` from the
//! app `./x app` built, offline. Tauri's bundler would download linuxdeploy;
//! here the `appimage` crate supplies the AppImage type-2 runtime and
//! appends the `mksquashfs` image of this AppDir to it:
//!
//! ```text
//! AppRun                            GTK/GIO paths, cd usr/lib, exec the app
//! hyperos-desktop.desktop, .png     launcher entry (opens dat:// links), icon
//! usr/bin/hyperos-desktop           RPATH $ORIGIN/../lib
//! usr/lib/HyperOS/kernel, initrd.gz Tauri's resource_dir: <exe>/../lib/<productName>
//! usr/lib/lib*.so*                  the ldd closure minus the host's (libs.rs)
//! usr/lib/webkit2gtk-4.1/           WebKit's helpers, RPATH $ORIGIN/.. (webkit.rs)
//! usr/lib/gdk-pixbuf-2.0/, gio/     loaded by path (gtk.rs)
//! usr/share/glib-2.0/schemas/       GTK's compiled schemas
//! ```
//!
//! The bundled libraries are found through the binaries' RPATH, not
//! `LD_LIBRARY_PATH`, so the host programs the app starts (QEMU, ssh, a
//! browser) keep using the host's. With `SOURCE_DATE_EPOCH` set (`./x` sets
//! it to the last commit's time) mksquashfs writes every timestamp as it.

mod gtk;
mod libs;
mod webkit;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use appimage::AppImage;

/// Libraries loaded with dlopen, which `ldd` of the binary can't see:
/// the tray icon (Tauri's tray loads libayatana-appindicator3 at run time).
const DLOPENED: &[&str] = &["libayatana-appindicator3.so.1"];
const MULTIARCH_LIB: &str = "/usr/lib/x86_64-linux-gnu";
/// The commands the build runs, with the package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("mksquashfs", "squashfs-tools"),
    ("patchelf", "patchelf"),
    ("ldd", "libc-bin"),
    ("glib-compile-schemas", "libglib2.0-bin"),
];
const NAME: &str = "hyperos-desktop";

const APPRUN: &str = r#"#!/bin/sh
# The HyperOS AppImage's entry point (written by installers/appimage).
# Libraries come from usr/lib through the binaries' RPATH, so nothing here
# sets LD_LIBRARY_PATH: QEMU and ssh started by the app use the host's.
APPDIR=${APPDIR:-$(dirname "$(readlink -f "$0")")}
export APPDIR
export OWD="${OWD:-$PWD}"
lib=$APPDIR/usr/lib
export GDK_PIXBUF_MODULE_FILE="$lib/gdk-pixbuf-2.0/2.10.0/loaders.cache"
export GIO_MODULE_DIR="$lib/gio/modules"
# Last, so the host's schemas, icons and MIME data win where it has them.
export XDG_DATA_DIRS="${XDG_DATA_DIRS:-/usr/local/share:/usr/share}:$APPDIR/usr/share"
# libwebkit2gtk finds its helpers at ./././…/webkit2gtk-4.1 and gdk-pixbuf
# its loaders at ./gdk-pixbuf-2.0/…: both relative to usr/lib. The user's
# directory stays in $OWD.
cd "$lib" || exit 1
exec "$APPDIR/usr/bin/hyperos-desktop" "$@"
"#;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") || args.len() > 1 {
        eprintln!(
            "usage: hyperos-appimage [REPO]\n\nBuilds target/release/bundle/appimage/HyperOS_<version>_amd64.AppImage in the HyperOS checkout REPO (default: .) from the app built by ./x app --no-launch."
        );
        return ExitCode::from(2);
    }
    let repo = PathBuf::from(args.first().map_or(".", String::as_str));
    match build(&repo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hyperos-appimage: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the bundle takes from `src-tauri/tauri.conf.json`.
struct AppConfig {
    product_name: String,
    version: String,
}

impl AppConfig {
    fn read(repo: &Path) -> Result<AppConfig> {
        let path = repo.join("src-tauri/tauri.conf.json");
        require(&path, "run this in the HyperOS checkout, or name it")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let conf: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let field = |name: &str| {
            conf[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{} has no \"{name}\" string", path.display()))
        };
        Ok(AppConfig {
            product_name: field("productName")?,
            version: field("version")?,
        })
    }
}

fn build(repo: &Path) -> Result<()> {
    let config = AppConfig::read(repo)?;
    let binary = repo.join("target/release").join(NAME);
    require(&binary, "run ./x app --no-launch")?;
    let resources = ["kernel", "initrd.gz"].map(|f| repo.join("image/out").join(f));
    for resource in &resources {
        require(
            resource,
            "run cargo run --release -p hyperos-cli -- image build",
        )?;
    }
    let icon = repo.join("icons/128x128.png");
    require(&icon, "run icons/generate.sh")?;
    for (tool, package) in TOOLS {
        if find_in_path(tool).is_none() {
            bail!("{tool} not found: apt-get install {package}");
        }
    }
    require(
        Path::new(webkit::HOST_DIR),
        "apt-get install libwebkit2gtk-4.1-0",
    )?;

    let out_dir = repo.join("target/release/bundle/appimage");
    let out = out_dir.join(format!(
        "{}_{}_amd64.AppImage",
        config.product_name, config.version
    ));
    let image = AppImage::new(&out_dir, NAME.to_owned())
        .with_context(|| format!("creating the AppDir in {}", out_dir.display()))?;
    let appdir = image.appdir().to_path_buf();
    let lib_dir = appdir.join("usr/lib");
    let share_dir = appdir.join("usr/share");

    // The app and the kernel and initrd it boots, where Tauri's
    // resource_dir looks first: <exe dir>/../lib/<productName>.
    let app = appdir.join("usr/bin").join(NAME);
    image.add_file(&binary, Path::new("usr/bin").join(NAME).as_path())?;
    for resource in &resources {
        let name = resource.file_name().context("a resource without a name")?;
        image.add_file(
            resource,
            &Path::new("usr/lib").join(&config.product_name).join(name),
        )?;
    }

    // Libraries: what the app, WebKit's helpers, the tray library and the
    // modules GTK/GIO load need, the dlopened ones themselves included.
    let mut objects = vec![binary.clone()];
    objects.extend(webkit::executables());
    objects.extend(files_in(
        &Path::new(webkit::HOST_DIR).join("injected-bundle"),
    )?);
    objects.extend(gtk::modules()?);
    let mut libraries = std::collections::BTreeMap::new();
    for name in DLOPENED {
        let path = Path::new(MULTIARCH_LIB).join(name);
        require(&path, "apt-get install libayatana-appindicator3-1")?;
        objects.push(path.clone());
        libraries.insert((*name).to_owned(), path);
    }
    libraries.extend(libs::closure(&objects)?);
    if !libraries.contains_key(webkit::LIBRARY) {
        bail!(
            "{NAME} does not link {}: was it built with Tauri?",
            webkit::LIBRARY
        );
    }
    libs::copy_into(&libraries, &lib_dir)?;
    let helpers = webkit::copy_helpers(&lib_dir)?;
    webkit::patch_library(&lib_dir)?;
    gtk::copy_modules(&lib_dir)?;
    gtk::compile_schemas(&share_dir)?;
    set_rpath(&app, "$ORIGIN/../lib")?;
    for helper in &helpers {
        set_rpath(helper, "$ORIGIN/..")?;
    }

    // The launcher entry, the icon and the entry point.
    let desktop = desktop_entry(&config);
    std::fs::write(appdir.join(format!("{NAME}.desktop")), &desktop)?;
    std::fs::create_dir_all(share_dir.join("applications"))?;
    std::fs::write(
        share_dir
            .join("applications")
            .join(format!("{NAME}.desktop")),
        &desktop,
    )?;
    image.add_icon(&icon)?;
    image.add_file(
        &icon,
        &Path::new("usr/share/icons/hicolor/128x128/apps").join(format!("{NAME}.png")),
    )?;
    write_executable(&appdir.join("AppRun"), APPRUN)?;

    let _ = std::fs::remove_file(&out);
    image
        .build(&out, None)
        .with_context(|| format!("building {}", out.display()))?;
    let _ = std::fs::remove_file(out_dir.join(format!("{NAME}.squashfs")));
    let size = std::fs::metadata(&out)?.len();
    println!(
        "Built {} ({:.1} MB, {} bundled libraries)",
        out.display(),
        size as f64 / 1e6,
        libraries.len()
    );
    Ok(())
}

/// The `.desktop` entry: the one the `.deb` installs (Tauri's template
/// in installers/hyperos.desktop, filled in).
fn desktop_entry(config: &AppConfig) -> String {
    format!(
        "[Desktop Entry]\nCategories=Development;\nComment=A tiny Linux VM that live-boots containers peer to peer\nExec={NAME} %u\nStartupWMClass={NAME}\nIcon={NAME}\nName={}\nTerminal=false\nType=Application\nMimeType=x-scheme-handler/dat\nX-AppImage-Version={}\n",
        config.product_name, config.version
    )
}

fn require(path: &Path, fix: &str) -> Result<()> {
    if !path.exists() {
        bail!("{} is missing: {fix}", path.display());
    }
    Ok(())
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Copies `src` into `dest` recursively, following symlinks.
pub(crate) fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let target = dest.join(
            path.file_name()
                .context("a directory entry without a name")?,
        );
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

fn set_rpath(file: &Path, rpath: &str) -> Result<()> {
    // DT_RPATH, not DT_RUNPATH: it applies to the libraries' own
    // dependencies and to dlopen too, not only to the binary's direct ones.
    let status = Command::new("patchelf")
        .args(["--force-rpath", "--set-rpath", rpath])
        .arg(file)
        .status()
        .context("patchelf not found: apt-get install patchelf")?;
    if !status.success() {
        bail!(
            "patchelf --set-rpath {rpath} {} failed ({status})",
            file.display()
        );
    }
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
