//! One image build, step by step (see the crate docs for the picture).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::apt::{Apt, Package};
use crate::config::{self, ImageConfig};
use crate::modules::ModuleTree;
use crate::report::{BuildReport, KernelSource, OutputFile, PackageVersion, PartSize};
use crate::rootfs::{self, Contents, Node, NodeKind, PackageFiles, Tree};
use crate::{
    BuildOptions, GUEST_CLI_PATH, IMAGE_INFO_PATH, ImageError, MODULES_LIST_PATH, deb, elf, kernel,
};

/// Where the image ships sftp-server; a link is added where dropbear looks.
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
const DROPBEAR: &str = "/usr/sbin/dropbear";
const PID1: &str = "PID 1";
/// The size report's line for the guest's `hyperos`.
const GUEST_CLI: &str = "hyperos";
const MODULES: &str = "modules";
const OTHER: &str = "other";

/// Directories every image has, with their modes.
const SKELETON_DIRS: &[(&str, u32)] = &[
    ("/dev", 0o755),
    ("/etc", 0o755),
    ("/etc/dropbear", 0o700),
    ("/etc/hyperos", 0o755),
    ("/mnt", 0o755),
    ("/proc", 0o555),
    ("/root", 0o700),
    ("/run", 0o755),
    ("/sys", 0o555),
    ("/tmp", 0o1777),
    ("/usr", 0o755),
    ("/usr/bin", 0o755),
    ("/usr/lib", 0o755),
    ("/usr/lib64", 0o755),
    ("/usr/sbin", 0o755),
    ("/var", 0o755),
    ("/var/lib", 0o755),
    ("/var/lib/hyperos", 0o755),
    ("/var/tmp", 0o1777),
];

pub(crate) struct Builder<'a> {
    opts: &'a BuildOptions,
    config: ImageConfig,
    wanted_modules: Vec<String>,
    apt: Apt,
    mtime: u32,
}

/// The kernel and where its modules are.
struct KernelInput {
    bytes: Vec<u8>,
    release: String,
    source: KernelSource,
    module_root: Option<PathBuf>,
}

impl<'a> Builder<'a> {
    pub(crate) fn new(opts: &'a BuildOptions) -> Result<Self, ImageError> {
        let config = ImageConfig::load(&opts.image_dir)?;
        let wanted_modules = config::load_modules(&opts.image_dir)?;
        let mtime = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0);
        Ok(Builder {
            opts,
            config,
            wanted_modules,
            apt: Apt::default(),
            mtime,
        })
    }

    pub(crate) fn run(self) -> Result<BuildReport, ImageError> {
        let init = self.read_init()?;
        let guest_cli = self.read_guest_cli()?;
        if let Some(path) = &self.opts.kernel {
            // Fail before any download when the given kernel is unusable.
            kernel::read_bzimage(path)?;
        }

        // Packages: closure, versions, download, unpack.
        let prune: BTreeSet<String> = self.config.packages.prune.iter().cloned().collect();
        let names = self.apt.closure(&self.config.packages.roots, &prune)?;
        let kernel_package = match self.opts.kernel {
            Some(_) => None,
            None => Some(
                self.apt
                    .resolve_kernel_metapackage(&self.config.kernel.package)?,
            ),
        };
        let mut all = names.clone();
        all.extend(kernel_package.iter().cloned());
        tracing::info!(packages = all.len(), "resolved packages");
        let packages = self.apt.show(&all)?;
        let debs = self
            .apt
            .download(&packages, &self.opts.cache_dir.join("debs"))?;
        let mut staged: Vec<(Package, PathBuf)> = Vec::new();
        for (package, deb_path) in packages.iter().zip(&debs) {
            let dir = self
                .opts
                .cache_dir
                .join("staging")
                .join(package.staging_name());
            if !dir.is_dir() {
                tracing::info!(package = %package.name, "unpacking");
            }
            deb::extract_cached(deb_path, &dir)?;
            staged.push((package.clone(), dir));
        }
        let (kernel_staged, userland): (Vec<_>, Vec<_>) = staged
            .into_iter()
            .partition(|(p, _)| Some(&p.name) == kernel_package.as_ref());
        let versions: BTreeMap<String, String> = packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        let files = PackageFiles::index(
            &userland
                .iter()
                .map(|(p, d)| (p.name.clone(), d.clone()))
                .collect::<Vec<_>>(),
        )?;

        let kernel = self.kernel_input(kernel_staged.first())?;

        // The tree.
        let mut tree = Tree::default();
        self.skeleton(&mut tree, init);
        if let Some(bytes) = guest_cli {
            tree.add(GUEST_CLI_PATH, Node::bytes(bytes, 0o755, GUEST_CLI));
        }
        let mut taker = Taker::new(&files, &self.config);
        for component in &self.config.components {
            taker.component(&mut tree, component)?;
        }
        for component in &self.config.components {
            if let Some(busybox) = &component.busybox_applets {
                add_busybox_applets(&mut tree, &files, busybox, &component.name)?;
            }
        }
        add_sftp_link(&mut tree)?;
        let (module_paths, builtin_modules) = self.add_modules(&mut tree, &kernel)?;
        let used = used_packages(&tree, &versions);
        self.generated_files(&mut tree, &kernel.release, &used);
        self.include(&mut tree)?;
        for (path, mode) in &self.config.modes {
            if let Some(node) = tree.get_mut(&rootfs::merged(path)) {
                node.mode = *mode;
            }
        }
        tree.complete_parents()?;

        // Outputs.
        let out = &self.opts.out_dir;
        std::fs::create_dir_all(out).map_err(|source| ImageError::Output {
            path: out.clone(),
            source,
        })?;
        let kernel_file = write_atomic(&out.join("kernel"), |w| w.write_all(&kernel.bytes))?;
        let mut sizes = BTreeMap::new();
        let mut initrd_uncompressed = 0;
        let initrd_file = write_atomic(&out.join("initrd.gz"), |w| {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(std::io::BufWriter::new(w), flate2::Compression::best());
            let (gz, parts) = tree
                .write_cpio(Counted::new(gz), self.mtime)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            initrd_uncompressed = gz.count;
            sizes = parts;
            gz.inner.finish()?.flush()
        })?;

        let report = BuildReport {
            parts: parts_table(&self.config, &kernel_file, &initrd_file, &sizes),
            initrd_entries: sizes.values().map(|s| s.entries).sum(),
            kernel: kernel_file,
            initrd: initrd_file,
            manifest: out.join("manifest.json"),
            kernel_source: kernel.source,
            kernel_release: kernel.release,
            initrd_uncompressed,
            packages: used,
            modules: module_paths,
            builtin_modules,
        };
        let manifest = Manifest::from(&report);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Output {
            path: report.manifest.clone(),
            source: e.into(),
        })?;
        write_atomic(&report.manifest, |w| w.write_all(&json))?;
        tracing::info!(
            kernel = report.kernel.size,
            initrd = report.initrd.size,
            "image built"
        );
        Ok(report)
    }

    fn read_init(&self) -> Result<Vec<u8>, ImageError> {
        let path = &self.opts.init_binary;
        let bytes = std::fs::read(path).map_err(|source| ImageError::InitBinary {
            path: path.clone(),
            source,
        })?;
        if !is_static(&bytes) {
            return Err(ImageError::InitNotStatic { path: path.clone() });
        }
        Ok(bytes)
    }

    /// The guest's `hyperos`, if one is to ship. It must be static too: the
    /// image's glibc is there for the Debian programs, not for ours.
    fn read_guest_cli(&self) -> Result<Option<Vec<u8>>, ImageError> {
        let Some(path) = &self.opts.guest_cli else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|source| ImageError::GuestCli {
            path: path.clone(),
            source,
        })?;
        if !is_static(&bytes) {
            return Err(ImageError::GuestCliNotStatic { path: path.clone() });
        }
        Ok(Some(bytes))
    }

    fn kernel_input(&self, staged: Option<&(Package, PathBuf)>) -> Result<KernelInput, ImageError> {
        if let Some(path) = &self.opts.kernel {
            let bytes = kernel::read_bzimage(path)?;
            let release = self
                .opts
                .modules_dir
                .as_ref()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .or_else(|| kernel::release(&bytes))
                .unwrap_or_else(|| "unknown".to_owned());
            return Ok(KernelInput {
                bytes,
                release,
                source: KernelSource::File(path.clone()),
                module_root: self.opts.modules_dir.clone(),
            });
        }
        let Some((package, dir)) = staged else {
            return Err(ImageError::KernelPackage {
                package: self.config.kernel.package.clone(),
                what: "staged files".into(),
            });
        };
        let no = |what: &str| ImageError::KernelPackage {
            package: package.name.clone(),
            what: what.into(),
        };
        let boot = dir.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .map_err(|_| no("/boot directory"))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("vmlinuz-"))
            .ok_or_else(|| no("/boot/vmlinuz-*"))?;
        let release = vmlinuz.trim_start_matches("vmlinuz-").to_owned();
        let bytes = kernel::read_bzimage(&boot.join(&vmlinuz))?;
        let module_root = match &self.opts.modules_dir {
            Some(dir) => Some(dir.clone()),
            None => ["lib/modules", "usr/lib/modules"]
                .iter()
                .map(|m| dir.join(m).join(&release))
                .find(|p| p.is_dir()),
        };
        Ok(KernelInput {
            bytes,
            release,
            source: KernelSource::Package(PackageVersion {
                name: package.name.clone(),
                version: package.version.clone(),
            }),
            module_root,
        })
    }

    fn skeleton(&self, tree: &mut Tree, init: Vec<u8>) {
        for dir in rootfs::MERGED_DIRS {
            tree.add(
                &format!("/{dir}"),
                Node::symlink(&format!("usr/{dir}"), OTHER),
            );
        }
        for (dir, mode) in SKELETON_DIRS {
            tree.add(dir, Node::dir(*mode, OTHER));
        }
        tree.add(
            "/dev/console",
            Node {
                kind: NodeKind::CharDevice(5, 1),
                mode: 0o600,
                component: OTHER.into(),
                package: None,
            },
        );
        tree.add("/init", Node::bytes(init, 0o755, PID1));
        tree.add("/usr/sbin/init", Node::symlink("/init", PID1));
        tree.add(
            "/usr/libexec/hyperos/dhcp-hook",
            Node::symlink("/init", PID1),
        );
    }

    fn add_modules(
        &self,
        tree: &mut Tree,
        kernel: &KernelInput,
    ) -> Result<(Vec<String>, Vec<String>), ImageError> {
        let Some(root) = &kernel.module_root else {
            if !self.wanted_modules.is_empty() {
                tracing::warn!(
                    "no module tree for this kernel (pass --modules DIR); the image ships no modules"
                );
            }
            tree.add(MODULES_LIST_PATH, Node::bytes("", 0o644, MODULES));
            return Ok((Vec::new(), Vec::new()));
        };
        let mut modules = ModuleTree::open(root)?;
        let resolved = modules.resolve(&self.wanted_modules, root)?;
        let base = format!("/usr/lib/modules/{}", kernel.release);
        let mut paths = Vec::new();
        for rel in &resolved.load_order {
            let source = root.join(rel);
            let plain = ["xz", "zst", "gz"]
                .iter()
                .find_map(|ext| rel.strip_suffix(&format!(".{ext}")));
            let (target, contents) = match plain {
                // finit_module wants plain ELF unless the kernel decompresses; unpack here.
                Some(plain) => {
                    let bytes = crate::decompress::read_module(&source).map_err(|e| {
                        crate::modules::ModuleError::Read {
                            path: source.clone(),
                            source: e,
                        }
                    })?;
                    (format!("{base}/{plain}"), Contents::Bytes(bytes))
                }
                None => (format!("{base}/{rel}"), Contents::Path(source)),
            };
            tree.add(
                &target,
                Node {
                    kind: NodeKind::File(contents),
                    mode: 0o644,
                    component: MODULES.into(),
                    package: None,
                },
            );
            paths.push(target);
        }
        let mut list = paths.join("\n");
        if !list.is_empty() {
            list.push('\n');
        }
        tree.add(MODULES_LIST_PATH, Node::bytes(list, 0o644, MODULES));
        Ok((paths, resolved.builtin))
    }

    fn generated_files(&self, tree: &mut Tree, kernel_release: &str, used: &[PackageVersion]) {
        let version = env!("CARGO_PKG_VERSION");
        let os_release = format!(
            "NAME=\"HyperOS\"\nID=hyperos\nVERSION_ID={version}\nPRETTY_NAME=\"HyperOS {version}\"\nHOME_URL=\"https://github.com/hyperos/hyperos\"\n"
        );
        tree.add("/etc/os-release", Node::bytes(os_release, 0o644, OTHER));
        tree.add(
            "/usr/lib/os-release",
            Node::symlink("../../etc/os-release", OTHER),
        );
        let info = ImageInfo {
            hyperos_version: version,
            kernel_release,
            packages: used
                .iter()
                .map(|p| (p.name.as_str(), p.version.as_str()))
                .collect(),
        };
        let mut json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        json.push(b'\n');
        tree.add(IMAGE_INFO_PATH, Node::bytes(json, 0o644, OTHER));
    }

    /// Copies `image/include/` over the tree: files, directories, symlinks.
    fn include(&self, tree: &mut Tree) -> Result<(), ImageError> {
        let root = self.opts.image_dir.join(config::INCLUDE_DIR);
        if root.is_dir() {
            include_dir(tree, &root, &root)?;
        }
        Ok(())
    }
}

fn include_dir(tree: &mut Tree, root: &Path, dir: &Path) -> Result<(), ImageError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| rootfs::RootfsError::Read { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(err(dir))?
        .collect::<Result<_, _>>()
        .map_err(err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let target = rootfs::merged(&rel.to_string_lossy().replace('\\', "/"));
        let kind = entry.file_type().map_err(err(&path))?;
        if kind.is_symlink() {
            let link = std::fs::read_link(&path).map_err(err(&path))?;
            tree.put(&target, Node::symlink(&link.to_string_lossy(), OTHER));
        } else if kind.is_dir() {
            let (mode, _) = rootfs::staged_mode(&path)?;
            tree.put(&target, Node::dir(mode & 0o7777, OTHER));
            include_dir(tree, root, &path)?;
        } else {
            // git keeps only the executable bit; other modes come from [modes].
            let (mode, _) = rootfs::staged_mode(&path)?;
            let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            tree.put(
                &target,
                Node {
                    kind: NodeKind::File(Contents::Path(path.clone())),
                    mode,
                    component: OTHER.into(),
                    package: None,
                },
            );
        }
    }
    Ok(())
}

/// Takes files from the packages into the tree.
struct Taker<'f> {
    files: &'f PackageFiles,
    /// Package → component its libraries count toward.
    library_owner: BTreeMap<String, String>,
    /// Inodes already in the tree, to turn hard links into symlinks.
    inodes: HashMap<(u64, u64), String>,
}

impl<'f> Taker<'f> {
    fn new(files: &'f PackageFiles, config: &ImageConfig) -> Self {
        let library_owner = config
            .components
            .iter()
            .flat_map(|c| {
                c.library_packages
                    .iter()
                    .map(|p| (p.clone(), c.name.clone()))
            })
            .collect();
        Taker {
            files,
            library_owner,
            inodes: HashMap::new(),
        }
    }

    fn component(
        &mut self,
        tree: &mut Tree,
        component: &config::ComponentConfig,
    ) -> Result<(), ImageError> {
        let mut elf_roots = Vec::new();
        for path in component.files.iter().chain(&component.busybox_applets) {
            let canonical = self.take(tree, path, &component.name)?;
            elf_roots.push(canonical);
        }
        for needed in elf::closure(self.files, &elf_roots)? {
            let owner = self
                .files
                .canonical(&needed.path)
                .ok()
                .and_then(|(_, f)| self.library_owner.get(&f.package).cloned())
                .unwrap_or_else(|| component.name.clone());
            self.take(tree, &needed.path, &owner)?;
        }
        Ok(())
    }

    /// Adds `path` (following and keeping symlinks); returns the final path.
    fn take(&mut self, tree: &mut Tree, path: &str, component: &str) -> Result<String, ImageError> {
        let mut current = rootfs::merged(path);
        for _ in 0..40 {
            let file = self
                .files
                .get(&current)
                .ok_or_else(|| rootfs::RootfsError::NotFound {
                    path: current.clone(),
                })?;
            if let Some(target) = &file.symlink {
                let mut node = Node::symlink(target, component);
                node.package = Some(file.package.clone());
                tree.add(&current, node);
                current = rootfs::follow(&current, target);
                continue;
            }
            if tree.contains(&current) {
                return Ok(current);
            }
            let (mode, id) = rootfs::staged_mode(&file.source)?;
            let node = match id.and_then(|id| self.inodes.get(&id)) {
                Some(first) => Node::symlink(&relative_link(&current, first), component),
                None => Node {
                    kind: NodeKind::File(Contents::Path(file.source.clone())),
                    mode: mode & 0o777,
                    component: component.to_owned(),
                    package: None,
                },
            };
            if let Some(id) = id {
                self.inodes.entry(id).or_insert_with(|| current.clone());
            }
            tree.add(
                &current,
                Node {
                    package: Some(file.package.clone()),
                    ..node
                },
            );
            return Ok(current);
        }
        Err(rootfs::RootfsError::SymlinkLoop {
            path: path.to_owned(),
        }
        .into())
    }
}

/// Whether an ELF file runs without a loader or shared libraries (anything
/// that is not ELF is left to the kernel to judge).
fn is_static(bytes: &[u8]) -> bool {
    !matches!(
        elf::read_deps(bytes),
        Ok(Some(deps)) if deps.interpreter.is_some() || !deps.needed.is_empty()
    )
}

/// A symlink target from `link` to `target`: the bare name in the same directory.
fn relative_link(link: &str, target: &str) -> String {
    match (link.rsplit_once('/'), target.rsplit_once('/')) {
        (Some((a, _)), Some((b, name))) if a == b => name.to_owned(),
        _ => target.to_owned(),
    }
}

/// Links every applet the staged busybox lists to it, where nothing else is.
fn add_busybox_applets(
    tree: &mut Tree,
    files: &PackageFiles,
    busybox: &str,
    component: &str,
) -> Result<(), ImageError> {
    let (canonical, staged) = files.canonical(busybox)?;
    let output = std::process::Command::new(&staged.source)
        .arg("--list-full")
        .output()
        .map_err(|source| ImageError::Busybox {
            path: staged.source.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(ImageError::Busybox {
            path: staged.source.clone(),
            source: std::io::Error::other(format!("exit status {}", output.status)),
        });
    }
    let mut added = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let path = rootfs::merged(line);
        if path == canonical {
            continue;
        }
        if tree.add(&path, Node::symlink(&canonical, component)) {
            added += 1;
        }
    }
    tracing::debug!(added, "busybox applet links");
    Ok(())
}

/// Dropbear runs sftp-server from a path compiled into it; link that path to
/// the OpenSSH one.
fn add_sftp_link(tree: &mut Tree) -> Result<(), ImageError> {
    let (Some(dropbear), true) = (tree.get(DROPBEAR), tree.contains(SFTP_SERVER)) else {
        return Ok(());
    };
    let component = dropbear.component.clone();
    let bytes = match &dropbear.kind {
        NodeKind::File(Contents::Path(path)) => {
            std::fs::read(path).map_err(|source| rootfs::RootfsError::Read {
                path: path.clone(),
                source,
            })?
        }
        NodeKind::File(Contents::Bytes(bytes)) => bytes.clone(),
        _ => return Ok(()),
    };
    for path in compiled_in_paths(&bytes, "sftp-server") {
        if path != SFTP_SERVER && tree.add(&path, Node::symlink(SFTP_SERVER, &component)) {
            tracing::debug!(%path, "linked dropbear's sftp-server path");
        }
    }
    Ok(())
}

/// NUL-terminated absolute paths in a binary that end in `suffix` (what
/// `strings | grep` would find).
pub(crate) fn compiled_in_paths(bytes: &[u8], suffix: &str) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter(|s| s.starts_with('/') && s.ends_with(suffix) && !s.contains(char::is_whitespace))
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn used_packages(tree: &Tree, versions: &BTreeMap<String, String>) -> Vec<PackageVersion> {
    let names: BTreeSet<&String> = tree
        .iter()
        .filter_map(|(_, n)| n.package.as_ref())
        .collect();
    names
        .into_iter()
        .map(|name| PackageVersion {
            name: name.clone(),
            version: versions.get(name).cloned().unwrap_or_default(),
        })
        .collect()
}

fn parts_table(
    config: &ImageConfig,
    kernel: &OutputFile,
    initrd: &OutputFile,
    sizes: &BTreeMap<String, rootfs::ComponentBytes>,
) -> Vec<PartSize> {
    let mut order: Vec<String> = vec![MODULES.to_owned()];
    order.extend(config.components.iter().map(|c| c.name.clone()));
    order.push(PID1.to_owned());
    for name in sizes.keys() {
        if !order.contains(name) && name != OTHER {
            order.push(name.clone());
        }
    }
    order.push(OTHER.to_owned());
    let alone_total: u64 = sizes
        .values()
        .map(|s| s.compressed_alone)
        .sum::<u64>()
        .max(1);
    let mut parts = vec![PartSize {
        name: "kernel".into(),
        entries: 1,
        uncompressed: kernel.size,
        compressed: kernel.size,
    }];
    for name in order {
        let size = sizes.get(&name).cloned().unwrap_or_default();
        parts.push(PartSize {
            name,
            entries: size.entries,
            uncompressed: size.archive_bytes,
            compressed: (size.compressed_alone as u128 * initrd.size as u128 / alone_total as u128)
                as u64,
        });
    }
    parts
}

/// Writes `path` through a temporary file renamed into place, and hashes it.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<OutputFile, ImageError> {
    let err = |source| ImageError::Output {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(source));
    }
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(err)?;
    Ok(OutputFile {
        path: path.to_owned(),
        size,
        sha256: crate::hex(&hasher.finalize()),
    })
}

/// Counts bytes on their way to the gzip encoder.
struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Self {
        Counted { inner, count: 0 }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `/etc/hyperos/image`.
#[derive(Serialize)]
struct ImageInfo<'a> {
    hyperos_version: &'a str,
    kernel_release: &'a str,
    packages: BTreeMap<&'a str, &'a str>,
}

/// `out/manifest.json`: the report without host paths.
#[derive(Serialize)]
struct Manifest<'a> {
    hyperos_version: &'a str,
    kernel: ManifestFile<'a>,
    initrd: ManifestFile<'a>,
    kernel_source: &'a KernelSource,
    kernel_release: &'a str,
    initrd_uncompressed: u64,
    packages: &'a [PackageVersion],
    modules: &'a [String],
    builtin_modules: &'a [String],
    parts: &'a [PartSize],
}

#[derive(Serialize)]
struct ManifestFile<'a> {
    size: u64,
    sha256: &'a str,
}

impl<'a> From<&'a BuildReport> for Manifest<'a> {
    fn from(r: &'a BuildReport) -> Self {
        Manifest {
            hyperos_version: env!("CARGO_PKG_VERSION"),
            kernel: ManifestFile {
                size: r.kernel.size,
                sha256: &r.kernel.sha256,
            },
            initrd: ManifestFile {
                size: r.initrd.size,
                sha256: &r.initrd.sha256,
            },
            kernel_source: &r.kernel_source,
            kernel_release: &r.kernel_release,
            initrd_uncompressed: r.initrd_uncompressed,
            packages: &r.packages,
            modules: &r.modules,
            builtin_modules: &r.builtin_modules,
            parts: &r.parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_compiled_in_paths() {
        let bytes = b"\x7fELF\0sftp\0/usr/lib/sftp-server\0/usr/libexec/x\0not /a sftp-server\0";
        assert_eq!(
            compiled_in_paths(bytes, "sftp-server"),
            ["/usr/lib/sftp-server"]
        );
    }

    #[test]
    fn hard_links_become_short_symlinks() {
        assert_eq!(
            relative_link("/usr/sbin/mkfs.ext4", "/usr/sbin/mke2fs"),
            "mke2fs"
        );
        assert_eq!(relative_link("/usr/bin/x", "/usr/sbin/y"), "/usr/sbin/y");
    }
}
