//! Running a container on this Linux host.
//!
//! ```text
//!  dat://KEY ── p2p node ── FUSE file ── loop ── mnt/lower (ro) ─┐
//!  image file ──────────────────────────── loop ── mnt/lower (ro) ─┼─ overlay ── mnt/root ── systemd-nspawn
//!  directory / OCI archive ─────────────────────── lower (ro) ─────┘    upper/ (kept per name)
//! ```
//!
//! Order matters for what a crash leaves: the record (run.json) is written
//! before the first mount and lists every mount point, so a `hyperos run`
//! killed at any point is cleaned up by the next one; systemd-nspawn is
//! started with PR_SET_PDEATHSIG, so it stops the container when we die.
//! On exit, Ctrl-C or SIGTERM: stop nspawn, unmount root, lower, FUSE, in
//! that order, then drop the record.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyperos_archive::{ArchiveLink, OciConfig};
use hyperos_imagefs::Source as PathKind;
use hyperos_mount::{ImageSource, MountedImage, ReadError};
use hyperos_p2p::{Archive, FetchError, Node, NodeConfig, PeerTicket};

use crate::store::{ContainerDir, Containers, LastRun, RunProgress, RunRecord, validate_name};
use crate::{RunRequest, Source, mounts, nspawn};

/// How long `hyperos run` waits for nspawn after forwarding a signal before
/// killing it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Reads an open archive for the FUSE layer.
struct ArchiveSource {
    archive: Archive,
    handle: tokio::runtime::Handle,
}

impl ImageSource for ArchiveSource {
    fn len(&self) -> u64 {
        self.archive.manifest().image_len
    }

    fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, ReadError> {
        self.handle
            .block_on(self.archive.read(offset, u64::from(len)))
            .map_err(|e| match e {
                FetchError::Timeout { .. } => ReadError::Timeout,
                other => ReadError::Unavailable(other.to_string()),
            })
    }
}

/// The read-only lower layer, kept alive for the run.
enum Lower {
    /// A lazily fetched archive: the node, the FUSE file and the filesystem
    /// inside it.
    Archive {
        node: Node,
        mounted: MountedImage,
        image_len: u64,
        version: u64,
    },
    /// A local image file through a loop device.
    Image,
    /// A directory used as it is.
    Directory(PathBuf),
    /// An OCI/Docker archive unpacked into a temporary directory.
    Unpacked(hyperos_imagefs::oci::Imported),
}

/// Checks what a container run needs of this host, naming the fix.
pub fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "running a container on the host needs root (FUSE, loop and overlay mounts, systemd-nspawn): use sudo, or run it in the HyperOS VM with --vm"
        );
    }
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("systemd-nspawn").is_file())
    });
    if !found {
        bail!(
            "systemd-nspawn is not installed: apt-get install systemd-container, or run it in the HyperOS VM with --vm"
        );
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs `request` on this host and returns the container's exit code.
pub fn run(state_root: &Path, request: &RunRequest) -> anyhow::Result<i32> {
    preflight()?;
    let containers = Containers::new(state_root);
    for name in containers.clean_stale()? {
        eprintln!("hyperos: cleaned up what a killed run of container {name} left behind");
    }
    let name = match &request.name {
        Some(name) => name.clone(),
        None => crate::store::default_name(&request.source),
    };
    validate_name(&name).map_err(anyhow::Error::msg)?;
    if let Source::Path(path) = &request.source
        && !path.exists()
    {
        bail!(
            "{} does not exist: give a dat:// link, or an image file, directory or OCI archive",
            path.display()
        );
    }
    if let Source::Path(path) = &request.source {
        // What it is, before anything is made for it.
        hyperos_imagefs::detect(path)?;
    }
    let dir = containers.dir(&name);
    let created = !dir.path().exists();
    let lock = dir.lock()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut record = RunRecord {
        name: name.clone(),
        pid: std::process::id(),
        source: request.source.to_string(),
        started: unix_now(),
        boot: request.boot,
        volatile: request.volatile,
        mounts: vec![dir.mnt("root"), dir.mnt("lower"), dir.mnt("fuse")],
    };
    let (upper, work) = if request.volatile {
        let _ = std::fs::remove_dir_all(dir.volatile());
        (dir.volatile().join("upper"), dir.volatile().join("work"))
    } else {
        (dir.upper(), dir.work())
    };
    for path in [
        &upper,
        &work,
        &dir.mnt("root"),
        &dir.mnt("lower"),
        &dir.mnt("fuse"),
    ] {
        std::fs::create_dir_all(path)
            .with_context(|| format!("could not create {}", path.display()))?;
    }
    hyperos_vm::paths::write_atomic(&dir.record(), &serde_json::to_vec(&record)?)?;

    let result = run_mounted(
        &runtime,
        state_root,
        request,
        &dir,
        &mut record,
        &upper,
        &work,
    );
    let (code, stats) = match &result {
        Ok((code, stats)) => (*code, stats.clone()),
        Err(_) => (-1, LastRun::default()),
    };
    // Everything is unmounted by now, or the error says what is left.
    if request.volatile {
        let _ = std::fs::remove_dir_all(dir.volatile());
    }
    if result.is_err() {
        // Undo what was mounted before the failure; a container that never
        // ran leaves nothing behind.
        for mount in &record.mounts {
            mounts::detach(mount);
        }
        let _ = std::fs::remove_file(dir.record());
        if created {
            drop(lock);
            let _ = std::fs::remove_dir_all(dir.path());
        }
    } else {
        let _ = std::fs::remove_file(dir.record());
        let last = LastRun {
            source: record.source.clone(),
            exit_code: code,
            seconds: started.elapsed().as_secs_f64(),
            ..stats
        };
        let _ = hyperos_vm::paths::write_atomic(&dir.last_run(), &serde_json::to_vec(&last)?);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    result.map(|(code, _)| code)
}

fn run_mounted(
    runtime: &tokio::runtime::Runtime,
    state_root: &Path,
    request: &RunRequest,
    dir: &ContainerDir,
    record: &mut RunRecord,
    upper: &Path,
    work: &Path,
) -> anyhow::Result<(i32, LastRun)> {
    let (lower, oci) = open_lower(runtime, state_root, request, dir)?;
    let lower_dir = match &lower {
        Lower::Directory(path) => path.clone(),
        Lower::Unpacked(imported) => imported.rootfs.path().to_owned(),
        Lower::Archive { .. } | Lower::Image => dir.mnt("lower"),
    };
    if let Lower::Archive { version, .. } = &lower
        && let Source::Link(link) = &request.source
    {
        // The record names the exact version from now on.
        record.source = format!("dat://{}+{version}", link.key);
        hyperos_vm::paths::write_atomic(&dir.record(), &serde_json::to_vec(&record)?)?;
    }
    let mounted = mounts::mount_overlay(&lower_dir, upper, work, &dir.mnt("root"));
    let exit = match mounted {
        Ok(()) => {
            let progress = match &lower {
                Lower::Archive {
                    node, image_len, ..
                } => Some((node, *image_len)),
                _ => None,
            };
            let status = spawn_and_wait(runtime, request, dir, oci.as_ref(), progress);
            let _ = std::fs::remove_file(dir.progress());
            let unmounted = mounts::unmount(&dir.mnt("root"));
            match (status, unmounted) {
                (Ok(status), Ok(())) => Ok(status),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let stats = close_lower(runtime, lower, dir)?;
    let status = exit?;
    Ok((exit_code(status), stats))
}

/// Mounts (or finds) the read-only layer.
fn open_lower(
    runtime: &tokio::runtime::Runtime,
    state_root: &Path,
    request: &RunRequest,
    dir: &ContainerDir,
) -> anyhow::Result<(Lower, Option<OciConfig>)> {
    match &request.source {
        Source::Link(link) => open_archive(runtime, state_root, request, link, dir),
        Source::Path(path) => match hyperos_imagefs::detect(path)? {
            PathKind::Image(fs_type) => {
                mounts::mount_image(path, fs_type.name(), &dir.mnt("lower"))?;
                Ok((Lower::Image, None))
            }
            PathKind::Directory => Ok((Lower::Directory(std::path::absolute(path)?), None)),
            PathKind::OciArchive => {
                let work = dir.path().join("unpack");
                let _ = std::fs::remove_dir_all(&work);
                std::fs::create_dir_all(&work)?;
                let imported = hyperos_imagefs::oci::import(path, &work)?;
                let config = imported.config.clone();
                Ok((Lower::Unpacked(imported), Some(config)))
            }
        },
    }
}

/// Tickets of this state directory's own running shares of `link`: a
/// container of an archive shared here fetches from the share.
fn local_peers(state_root: &Path, link: &ArchiveLink) -> Vec<PeerTicket> {
    hyperos_p2p::local_shares(state_root)
        .into_iter()
        .filter(|s| s.key == link.key.to_hex())
        .filter_map(|s| s.ticket.parse().ok())
        .collect()
}

fn open_archive(
    runtime: &tokio::runtime::Runtime,
    state_root: &Path,
    request: &RunRequest,
    link: &ArchiveLink,
    dir: &ContainerDir,
) -> anyhow::Result<(Lower, Option<OciConfig>)> {
    let mut peers = request
        .peers
        .iter()
        .map(|t| t.parse::<PeerTicket>())
        .collect::<Result<Vec<_>, _>>()?;
    peers.extend(local_peers(state_root, link));
    let mut config = NodeConfig::new(state_root.join("p2p"));
    config.ram = request.ram;
    config.deadline = request.deadline;
    config.discovery = request.discovery.clone();
    let node = match runtime.block_on(Node::spawn(config.clone())) {
        Ok(node) => node,
        // A share or mount of this state directory holds the store: fetch
        // into memory instead (from that share, among others).
        Err(hyperos_p2p::NodeError::Store { .. }) if !config.ram => {
            tracing::info!(
                "the local store is in use by another hyperos process; fetching into memory"
            );
            config.ram = true;
            runtime.block_on(Node::spawn(config))?
        }
        Err(e) => return Err(e.into()),
    };
    let archive = match runtime.block_on(node.open(*link, &peers)) {
        Ok(archive) => archive,
        Err(e) => {
            runtime.block_on(node.shutdown());
            return Err(e.into());
        }
    };
    let manifest = archive.manifest().clone();
    let oci = manifest.oci.clone();
    let source = Arc::new(ArchiveSource {
        archive,
        handle: runtime.handle().clone(),
    });
    match hyperos_mount::mount_image(
        source,
        manifest.fs_type.name(),
        &dir.mnt("fuse"),
        &dir.mnt("lower"),
    ) {
        Ok(mounted) => Ok((
            Lower::Archive {
                node,
                mounted,
                image_len: manifest.image_len,
                version: manifest.version,
            },
            oci,
        )),
        Err(e) => {
            runtime.block_on(node.shutdown());
            Err(e.into())
        }
    }
}

/// Unmounts the lower layer; returns what was fetched.
fn close_lower(
    runtime: &tokio::runtime::Runtime,
    lower: Lower,
    dir: &ContainerDir,
) -> anyhow::Result<LastRun> {
    match lower {
        Lower::Archive {
            node,
            mut mounted,
            image_len,
            ..
        } => {
            let progress = node.progress();
            let unmounted = mounted.unmount();
            drop(mounted);
            runtime.block_on(node.shutdown());
            unmounted?;
            Ok(LastRun {
                bytes_fetched: progress.bytes_fetched,
                bytes_from_cache: progress.bytes_from_cache,
                image_len,
                requests: progress.requests,
                ..LastRun::default()
            })
        }
        Lower::Image => {
            mounts::unmount(&dir.mnt("lower"))?;
            Ok(LastRun::default())
        }
        Lower::Directory(_) => Ok(LastRun::default()),
        Lower::Unpacked(imported) => {
            drop(imported);
            let _ = std::fs::remove_dir_all(dir.path().join("unpack"));
            Ok(LastRun::default())
        }
    }
}

fn is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Writes what `node` fetched to the container's `progress.json`, if it
/// changed since `last`.
fn write_progress(dir: &ContainerDir, node: &Node, image_len: u64, last: &mut RunProgress) {
    let p = node.progress();
    let now = RunProgress {
        bytes_fetched: p.bytes_fetched,
        bytes_from_cache: p.bytes_from_cache,
        image_len,
        requests: p.requests,
        failed_requests: p.failed_requests,
        peers_known: p.peers_known,
        peers_connected: p.peers_connected,
    };
    if now != *last
        && let Ok(bytes) = serde_json::to_vec(&now)
    {
        let _ = hyperos_vm::paths::write_atomic(&dir.progress(), &bytes);
        *last = now;
    }
}

/// Starts systemd-nspawn and waits for it, forwarding Ctrl-C, SIGTERM and
/// SIGHUP as SIGTERM (a second one kills it). While it runs from an
/// archive, its progress is written twice a second when it changes.
fn spawn_and_wait(
    runtime: &tokio::runtime::Runtime,
    request: &RunRequest,
    dir: &ContainerDir,
    oci: Option<&OciConfig>,
    progress: Option<(&Node, u64)>,
) -> anyhow::Result<ExitStatus> {
    let root = dir.mnt("root");
    let plan = nspawn::Plan {
        root: &root,
        name: dir.name(),
        boot: request.boot,
        binds: &request.binds,
        options: &request.nspawn_options,
        command: &request.command,
        oci,
        tty: is_tty(),
    };
    let mut command = Command::new("systemd-nspawn");
    command.args(nspawn::args(&plan));
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Spawned from this (the main) thread, which lives as long as the run:
    // PR_SET_PDEATHSIG fires when the spawning thread exits.
    let mut child = command.spawn().context("starting systemd-nspawn")?;
    let pid = child.id();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut rx = rx;
        let mut signals = 0;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last = RunProgress::default();
        loop {
            let kill_timer = async {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = &mut rx => {
                    return status.context("waiting for systemd-nspawn")?.context("waiting for systemd-nspawn");
                }
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {}
                _ = kill_timer => {
                    send_signal(pid, libc::SIGKILL);
                    kill_at = None;
                    continue;
                }
                _ = tick.tick(), if progress.is_some() => {
                    if let Some((node, image_len)) = progress {
                        write_progress(dir, node, image_len, &mut last);
                    }
                    continue;
                }
            }
            signals += 1;
            if signals == 1 {
                send_signal(pid, libc::SIGTERM);
                kill_at = Some(tokio::time::Instant::now() + STOP_GRACE);
            } else {
                send_signal(pid, libc::SIGKILL);
            }
        }
    })
}

fn send_signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Stops a running container: SIGTERM to its `hyperos run`, which stops
/// nspawn and unmounts. Waits until it is gone.
pub fn stop(state_root: &Path, name: &str, timeout: Duration) -> anyhow::Result<()> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    let dir = Containers::new(state_root).dir(name);
    if !dir.is_running() {
        bail!("container {name} is not running: `hyperos ps` lists containers");
    }
    let record = dir
        .read_record()
        .with_context(|| format!("container {name} is starting; try again in a moment"))?;
    send_signal(record.pid, libc::SIGTERM);
    let deadline = Instant::now() + timeout;
    while dir.is_running() {
        if Instant::now() > deadline {
            bail!(
                "container {name} did not stop within {} s: `kill -9 {}`, then the next run cleans up",
                timeout.as_secs(),
                record.pid
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
