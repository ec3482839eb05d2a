//! The archive commands: `share`, `seed`, `mount`, `mounts`, `unmount`.
//!
//! `share` publishes an image (or a directory or OCI archive, turned into
//! one) under an archive key and serves it until stopped; `seed` fetches a
//! whole archive from peers and serves it until stopped; `mount` opens a
//! `dat://` link from peers and mounts it lazily; `mounts` lists mounts and
//! their progress; `unmount` stops a mount, also one whose process was
//! killed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hyperos_archive::{ArchiveLink, ArchiveSecret};
#[cfg(target_os = "linux")]
use hyperos_mount::{ImageSource, ReadError};
#[cfg(target_os = "linux")]
use hyperos_p2p::{Archive, FetchError};
use hyperos_p2p::{DiscoveryConfig, Node, NodeConfig, PeerTicket, ShareKind, ShareRecord};
use hyperos_vm::StateDir;
use serde::{Deserialize, Serialize};

/// How peers are found besides `--peer` tickets.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoveryArgs {
    /// A Mainline DHT node to bootstrap from (repeatable; default: the
    /// public bootstrap nodes).
    #[arg(
        long = "dht-bootstrap",
        value_name = "HOST:PORT",
        env = "HYPEROS_DHT_BOOTSTRAP",
        value_delimiter = ','
    )]
    dht_bootstrap: Vec<String>,
    /// Don't announce or look up peers on the Mainline DHT.
    #[arg(long)]
    no_dht: bool,
    /// Don't announce or look up peers on the local network (mDNS).
    #[arg(long)]
    no_lan: bool,
}

impl DiscoveryArgs {
    fn config(&self) -> anyhow::Result<DiscoveryConfig> {
        for node in &self.dht_bootstrap {
            if node
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                bail!("--dht-bootstrap {node:?} is not HOST:PORT (e.g. 192.0.2.1:6881)");
            }
        }
        Ok(DiscoveryConfig {
            dht: (!self.no_dht).then(|| self.dht_bootstrap.clone()),
            lan: !self.no_lan,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct ShareArgs {
    /// A filesystem image (ext4, EROFS, squashfs), a directory, or an OCI or
    /// Docker image archive.
    path: PathBuf,
    /// Publish the next version of this archive (its key, `dat://…` or hex).
    #[arg(long, value_name = "KEY")]
    update: Option<String>,
    /// The UDP address to listen on (default: any, a random port).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// Print the link and ticket as one JSON line.
    #[arg(long)]
    json: bool,
    /// Byte ranges of the image a mount should fetch first, in the background:
    /// a file with one `OFFSET LENGTH` per line (bytes; `#` starts a comment).
    #[arg(long, value_name = "FILE")]
    prefetch: Option<PathBuf>,
    /// Serve in the background: print the link and ticket, then return
    /// (`hyperos shares` lists it, `hyperos unshare KEY` stops it).
    #[arg(long)]
    daemon: bool,
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The archive: `dat://<key>` or `dat://<key>+<version>`.
    link: String,
    /// A peer to fetch from (its ticket, as `hyperos share` prints it);
    /// others are found on the DHT and the LAN.
    #[arg(long = "peer", value_name = "TICKET")]
    peers: Vec<String>,
    /// The UDP address to listen on (default: any, a random port).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// Print one JSON line when the whole archive is here.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The archive: `dat://<key>` or `dat://<key>+<version>`.
    link: String,
    /// Where to mount the filesystem inside the image (an empty directory).
    dir: PathBuf,
    /// A peer to fetch from (its ticket, as `hyperos share` prints it);
    /// others are found on the DHT and the LAN.
    #[arg(long = "peer", value_name = "TICKET")]
    peers: Vec<String>,
    /// Keep nothing of the image on disk.
    #[arg(long)]
    ram: bool,
    /// What to fetch in the background, at low priority: `list` (the ranges
    /// the publisher listed), `all` (the whole image) or `none`.
    #[arg(long, value_enum, default_value = "list")]
    prefetch: PrefetchMode,
    /// Seconds a read may wait for peers before it fails with EIO.
    #[arg(long, default_value_t = 30)]
    deadline: u64,
    /// The UDP address to listen on (default: any, a random port).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    #[command(flatten)]
    discovery: DiscoveryArgs,
}

/// What a mount fetches in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefetchMode {
    None,
    List,
    All,
}

/// Reads a prefetch list: one `OFFSET LENGTH` (bytes) per line.
fn read_prefetch(path: &Path) -> anyhow::Result<Vec<std::ops::Range<u64>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the prefetch list {}", path.display()))?;
    let mut ranges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace().map(str::parse::<u64>);
        match (words.next(), words.next(), words.next()) {
            (Some(Ok(offset)), Some(Ok(len)), None) if len > 0 => {
                ranges.push(offset..offset.saturating_add(len));
            }
            _ => bail!(
                "line {} of {} is not `OFFSET LENGTH` in bytes (e.g. `0 1048576`): {line:?}",
                n + 1,
                path.display()
            ),
        }
    }
    ranges.sort_by_key(|r| r.start);
    Ok(ranges)
}

#[derive(Debug, clap::Args)]
pub struct UnmountArgs {
    /// The directory given to `hyperos mount`.
    dir: PathBuf,
}

/// What `mount` records so `unmount` finds it.
#[derive(Debug, Serialize, Deserialize)]
struct MountRecord {
    dir: PathBuf,
    fuse_dir: PathBuf,
    pid: u32,
    link: String,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn secrets_dir(state: &StateDir) -> PathBuf {
    state.root().join("archives")
}

/// Loads the secret of an archive this user publishes.
fn load_secret(state: &StateDir, key: &str) -> anyhow::Result<ArchiveSecret> {
    let key = key.trim();
    let hex = key
        .strip_prefix("dat://")
        .map(|k| k.split('+').next().unwrap_or(k).trim_end_matches('/'))
        .unwrap_or(key)
        .to_ascii_lowercase();
    let public: hyperos_archive::ArchiveKey = hex
        .parse()
        .with_context(|| format!("{key:?} is not an archive key"))?;
    match hyperos_ssh::secrets::load(&secrets_dir(state), &public.to_hex())? {
        Some(text) => Ok(ArchiveSecret::from_hex(text.trim())?),
        None => bail!("you don't hold the secret of {public}: only its publisher can update it"),
    }
}

/// Creates a new archive secret, kept in the OS keychain, else a 0600 file.
fn new_secret(state: &StateDir) -> anyhow::Result<ArchiveSecret> {
    let secret = ArchiveSecret::generate()?;
    let (store, reason) = hyperos_ssh::secrets::store(
        &secrets_dir(state),
        &secret.public().to_hex(),
        &secret.to_hex(),
    )?;
    eprintln!(
        "The archive's secret key is kept in {store}{}.",
        reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    Ok(secret)
}

#[derive(Serialize)]
struct SharedJson {
    key: String,
    link: String,
    version: u64,
    fs_type: &'static str,
    image_len: u64,
    ticket: String,
}

/// The environment variable that tells a `share` started by `--daemon` where
/// its log is (it records it, and sends later output there).
const DAEMON_LOG_ENV: &str = "HYPEROS_DAEMON_LOG";

pub fn share(state_dir: Option<PathBuf>, args: ShareArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    if args.daemon {
        return share_daemon(&state, args.json);
    }
    refuse_if_serving(state.root())?;
    // Check what can be refused before a key is made for nothing.
    let existing = args
        .update
        .as_deref()
        .map(|key| load_secret(&state, key))
        .transpose()?;
    let prefetch = args.prefetch.as_deref().map(read_prefetch).transpose()?;
    let work = state.root().join("share-work");
    std::fs::create_dir_all(&work)?;
    let prepared = hyperos_imagefs::prepare(&args.path, &work)?;
    let secret = match existing {
        Some(secret) => secret,
        None => new_secret(&state)?,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        let mut config = NodeConfig::new(state.root().join("p2p"));
        config.bind = args.bind;
        config.discovery = args.discovery.config()?;
        let node = Node::spawn(config).await?;
        let published = hyperos_run::share::publish(
            &node,
            state.root(),
            hyperos_run::share::Publish {
                prepared: &prepared,
                source: &args.path,
                secret: &secret,
                prefetch: prefetch.unwrap_or_default(),
                kind: ShareKind::Share,
                log: std::env::var_os(DAEMON_LOG_ENV).map(PathBuf::from),
            },
        )
        .await?;
        let (record, manifest) = (&published.record, &published.manifest);
        let (key, link, ticket) = (secret.public(), &record.link, &record.ticket);
        let _recorded = RecordGuard(record, state.root());
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&SharedJson {
                    key: key.to_hex(),
                    link: link.to_string(),
                    version: manifest.version,
                    fs_type: manifest.fs_type.name(),
                    image_len: manifest.image_len,
                    ticket: ticket.to_string(),
                })?
            );
        } else {
            println!(
                "Sharing dat://{key} (version {}, {}, {:.1} MB)",
                manifest.version,
                manifest.fs_type.name(),
                manifest.image_len as f64 / 1e6
            );
            println!("  link    {link}");
            println!("  ticket  {ticket}");
            println!("Mount it elsewhere: hyperos mount dat://{key} DIR --peer {ticket}");
            println!("Serving until stopped (Ctrl-C).");
        }
        detach_stdout();
        wait_for_stop().await;
        node.shutdown().await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    Ok(0)
}

/// Removes a share record when the share stops, also on an error.
struct RecordGuard<'a>(&'a ShareRecord, &'a Path);

impl Drop for RecordGuard<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// One node serves per state directory (its blob store admits one process):
/// refuses to start a second with a line that says what to do.
fn refuse_if_serving(root: &Path) -> anyhow::Result<()> {
    // The desktop app's shares have a node of their own.
    if let Some(running) = hyperos_p2p::local_shares(root)
        .iter()
        .find(|r| r.kind != ShareKind::App)
    {
        bail!(
            "this state directory already serves {} ({}, pid {}); stop it with `hyperos unshare {}` or use another --state-dir",
            running.link,
            running.kind.name(),
            running.pid,
            running.key
        );
    }
    Ok(())
}

/// In a `--daemon` child, once the ready line is out: later output goes to
/// the log (stderr) instead of the pipe the parent closes.
fn detach_stdout() {
    #[cfg(unix)]
    if std::env::var_os(DAEMON_LOG_ENV).is_some() {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: dup2 on the process's own standard descriptors has no
        // memory-safety preconditions; stdout was flushed just before.
        unsafe {
            libc::dup2(2, 1);
        }
    }
}

/// `share --daemon`: runs this same command again without `--daemon`, with
/// `--json`, in a new session with its output in a log under the state
/// directory; prints what the child printed once it serves, and returns.
fn share_daemon(state: &StateDir, json: bool) -> anyhow::Result<i32> {
    use std::io::BufRead;
    let logs = hyperos_p2p::shares::shares_dir(state.root()).join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("share-{}.log", hyperos_vm::state::now_ms()));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("could not create {}", log_path.display()))?;
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    if !argv.iter().any(|a| a == "--json") {
        argv.push("--json".into());
    }
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(&argv)
        .env("HYPEROS_STATE_DIR", state.root())
        .env(DAEMON_LOG_ENV, &log_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; it detaches the share from the
        // terminal so closing it leaves the share running.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .context("could not start the share in the background")?;
    let pid = child.id();
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let Ok(mut shared) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
        let _ = child.wait();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let reason = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("hyperos: "))
            .unwrap_or("it exited without saying why");
        bail!("{reason} (log: {})", log_path.display());
    };
    // Not waited for: the share outlives this process.
    drop(child);
    if json {
        shared["pid"] = pid.into();
        shared["log"] = log_path.to_string_lossy().into_owned().into();
        println!("{shared}");
    } else {
        let field = |name: &str| shared[name].as_str().unwrap_or_default().to_owned();
        println!(
            "Sharing dat://{} (version {}) in the background, pid {pid}",
            field("key"),
            shared["version"]
        );
        println!("  link    {}", field("link"));
        println!("  ticket  {}", field("ticket"));
        println!("  log     {}", log_path.display());
        println!(
            "`hyperos shares` lists it; `hyperos unshare {}` stops it.",
            field("key")
        );
    }
    Ok(0)
}

#[derive(Serialize)]
struct SeededJson {
    key: String,
    link: String,
    version: u64,
    bytes: u64,
    chunks: u64,
    fetched: u64,
    ticket: String,
}

fn parse_peers(tickets: &[String]) -> anyhow::Result<Vec<PeerTicket>> {
    Ok(tickets
        .iter()
        .map(|t| t.parse::<PeerTicket>())
        .collect::<Result<Vec<_>, _>>()?)
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub fn seed(state_dir: Option<PathBuf>, args: SeedArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    let link: ArchiveLink = args.link.parse()?;
    let peers = parse_peers(&args.peers)?;
    refuse_if_serving(state.root())?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let mut config = NodeConfig::new(state.root().join("p2p"));
        config.bind = args.bind;
        config.discovery = args.discovery.config()?;
        let node = Node::spawn(config).await?;
        let archive = match node.open(link, &peers).await {
            Ok(archive) => archive,
            Err(e) => {
                // Closed properly, the endpoint logs no error of its own.
                node.shutdown().await;
                return Err(e.into());
            }
        };
        let manifest = archive.manifest().clone();
        let chunks = archive.index().len() as u64;
        let ticket = node.ticket().await;
        node.announce(&manifest.archive).await;
        let this = format!("dat://{}+{}", manifest.archive, manifest.version);
        let record = ShareRecord {
            key: manifest.archive.to_hex(),
            link: this.clone(),
            version: manifest.version,
            ticket: ticket.to_string(),
            pid: std::process::id(),
            path: std::path::absolute(state.root().join("p2p"))?,
            kind: ShareKind::Seed,
            log: None,
            started: hyperos_vm::state::now_ms() / 1000,
        };
        record
            .write(state.root())
            .with_context(|| format!("could not record the seed under {}", state.root().display()))?;
        let _recorded = RecordGuard(&record, state.root());
        if !args.json {
            println!(
                "Seeding {this} ({}, {:.1} MB, {chunks} chunks)",
                manifest.fs_type.name(),
                megabytes(manifest.image_len)
            );
            println!("  ticket  {ticket}");
        }
        let started = std::time::Instant::now();
        let fetch = archive.fetch_all();
        let stop = wait_for_stop();
        tokio::pin!(fetch, stop);
        let mut tick = tokio::time::interval(Duration::from_secs(3));
        tick.tick().await;
        let fetched = loop {
            tokio::select! {
                done = &mut fetch => break done,
                _ = tick.tick(), if !args.json => {
                    let p = node.progress();
                    println!(
                        "  fetched {:.1} MB, {:.1} MB were here already, {} of {} peers connected, {} failed requests",
                        megabytes(p.bytes_fetched),
                        megabytes(p.bytes_from_cache),
                        p.peers_connected,
                        archive.peer_count(),
                        p.failed_requests
                    );
                }
                _ = &mut stop => {
                    node.shutdown().await;
                    return anyhow::Ok(());
                }
            }
        };
        fetched.context("fetching the whole archive failed; check the peers and retry")?;
        let p = node.progress();
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&SeededJson {
                    key: manifest.archive.to_hex(),
                    link: this,
                    version: manifest.version,
                    bytes: manifest.image_len,
                    chunks,
                    fetched: p.bytes_fetched,
                    ticket: ticket.to_string(),
                })?
            );
        } else {
            println!(
                "Have all of {this}: fetched {:.1} MB in {:.1} s.",
                megabytes(p.bytes_fetched),
                started.elapsed().as_secs_f64()
            );
            println!("Others can fetch it from here: --peer {ticket}");
            println!("Serving until stopped (Ctrl-C).");
        }
        stop.await;
        node.shutdown().await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    Ok(0)
}

/// Reads an open archive for the FUSE layer.
#[cfg(target_os = "linux")]
struct ArchiveSource {
    archive: Archive,
    handle: tokio::runtime::Handle,
}

#[cfg(target_os = "linux")]
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

fn mounts_dir(state: &StateDir) -> PathBuf {
    state.root().join("mounts")
}

/// A stable name for a mount point's record.
fn mount_id(dir: &Path) -> String {
    dir.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(not(target_os = "linux"))]
pub fn mount(_state_dir: Option<PathBuf>, _args: MountArgs) -> anyhow::Result<i32> {
    bail!(
        "lazy mounts run on Linux; on this platform use `hyperos run --vm`, which mounts inside the HyperOS VM"
    )
}

#[cfg(target_os = "linux")]
pub fn mount(state_dir: Option<PathBuf>, args: MountArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    let link: ArchiveLink = args.link.parse()?;
    let peers = parse_peers(&args.peers)?;
    let dir = std::path::absolute(&args.dir)?;
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: create an empty directory to mount on",
            dir.display()
        );
    }
    let record_dir = mounts_dir(&state).join(mount_id(&dir));
    let fuse_dir = record_dir.join("fuse");
    std::fs::create_dir_all(&fuse_dir)?;
    let runtime = runtime()?;
    let handle = runtime.handle().clone();
    let result = runtime.block_on(async {
        let mut config = NodeConfig::new(state.root().join("p2p"));
        config.bind = args.bind;
        config.discovery = args.discovery.config()?;
        config.ram = args.ram;
        config.deadline = Duration::from_secs(args.deadline.max(1));
        let node = Node::spawn(config).await?;
        let archive = match node.open(link, &peers).await {
            Ok(archive) => archive,
            Err(e) => {
                // Closed properly, the endpoint logs no error of its own.
                node.shutdown().await;
                return Err(e.into());
            }
        };
        let manifest = archive.manifest().clone();
        let ranges = match args.prefetch {
            PrefetchMode::None => Vec::new(),
            PrefetchMode::List => manifest.prefetch.clone(),
            PrefetchMode::All => std::iter::once(0..manifest.image_len).collect(),
        };
        if !ranges.is_empty() {
            let archive = archive.clone();
            tokio::spawn(async move { archive.prefetch(&ranges).await });
        }
        let source = std::sync::Arc::new(ArchiveSource {
            archive,
            handle: handle.clone(),
        });
        let fs_type = manifest.fs_type.name();
        let mounted = {
            let (dir, fuse_dir) = (dir.clone(), fuse_dir.clone());
            tokio::task::spawn_blocking(move || {
                hyperos_mount::mount_image(source, fs_type, &fuse_dir, &dir)
            })
            .await??
        };
        let record = MountRecord {
            dir: dir.clone(),
            fuse_dir: fuse_dir.clone(),
            pid: std::process::id(),
            link: format!("dat://{}+{}", manifest.archive, manifest.version),
        };
        hyperos_vm::paths::write_atomic(
            &record_dir.join("mount.json"),
            &serde_json::to_vec(&record)?,
        )?;
        println!(
            "Mounted dat://{}+{} ({}, {:.1} MB, fetched as read) at {}",
            manifest.archive,
            manifest.version,
            fs_type,
            manifest.image_len as f64 / 1e6,
            dir.display()
        );
        println!(
            "`hyperos unmount {}` (or Ctrl-C) unmounts it.",
            dir.display()
        );
        report_until_stopped(
            &node,
            manifest.image_len,
            &record_dir.join("progress.json"),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .await;
        let mut mounted = mounted;
        let unmounted = tokio::task::spawn_blocking(move || {
            let r = mounted.unmount();
            drop(mounted);
            r
        })
        .await?;
        node.shutdown().await;
        unmounted?;
        anyhow::Ok(())
    });
    let _ = std::fs::remove_file(record_dir.join("mount.json"));
    let _ = std::fs::remove_file(record_dir.join("progress.json"));
    runtime.shutdown_background();
    result?;
    Ok(0)
}

/// A mount's progress, as `<state>/mounts/<id>/progress.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProgressJson {
    /// Verified bytes fetched from peers.
    bytes_fetched: u64,
    /// Bytes read that were already in the local store.
    bytes_from_cache: u64,
    /// The length of the image.
    image_len: u64,
    /// Requests sent to peers.
    requests: u64,
    /// Requests that failed.
    failed_requests: u64,
    /// Peers known (dropped ones not counted).
    peers_known: u64,
    /// Peers with an open connection.
    peers_connected: u64,
}

impl ProgressJson {
    #[cfg(target_os = "linux")]
    fn new(p: hyperos_p2p::Progress, image_len: u64) -> Self {
        Self {
            bytes_fetched: p.bytes_fetched,
            bytes_from_cache: p.bytes_from_cache,
            image_len,
            requests: p.requests,
            failed_requests: p.failed_requests,
            peers_known: p.peers_known,
            peers_connected: p.peers_connected,
        }
    }

    /// One line: a bar of the share of the image fetched, and the counters.
    fn line(&self) -> String {
        const WIDTH: u64 = 20;
        let filled = (self.bytes_fetched.min(self.image_len) * WIDTH)
            .checked_div(self.image_len)
            .unwrap_or(0);
        format!(
            "[{}{}] {:.1} of {:.1} MB fetched, {:.1} MB from cache, {}/{} peers, {} requests ({} failed)",
            "#".repeat(filled as usize),
            "-".repeat((WIDTH - filled) as usize),
            megabytes(self.bytes_fetched),
            megabytes(self.image_len),
            megabytes(self.bytes_from_cache),
            self.peers_connected,
            self.peers_known,
            self.requests,
            self.failed_requests
        )
    }
}

/// Until Ctrl-C or SIGTERM: writes the node's progress to `path` (at most
/// twice a second, only when it changed, by rename) and, on a terminal,
/// redraws a one-line progress bar on stderr.
#[cfg(target_os = "linux")]
async fn report_until_stopped(node: &Node, image_len: u64, path: &Path, tty: bool) {
    use std::io::Write;
    let stop = wait_for_stop();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<ProgressJson> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let now = ProgressJson::new(node.progress(), image_len);
        if last.as_ref() == Some(&now) {
            continue;
        }
        match serde_json::to_vec(&now) {
            Ok(bytes) => {
                if let Err(e) = hyperos_vm::paths::write_atomic(path, &bytes) {
                    tracing::warn!("could not write {}: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("could not encode the progress: {e}"),
        }
        if tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\x1b[K", now.line());
            let _ = err.flush();
        }
        last = Some(now);
    }
    if tty && last.is_some() {
        eprintln!();
    }
}

#[derive(Debug, clap::Args)]
pub struct MountsArgs {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct MountJson {
    dir: PathBuf,
    link: String,
    pid: u32,
    /// `alive`, or `stale` when the mount process is gone (`hyperos unmount`
    /// cleans it up).
    state: &'static str,
    progress: Option<ProgressJson>,
}

pub fn mounts(state_dir: Option<PathBuf>, args: MountsArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    let dir = mounts_dir(&state);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("could not list {}", dir.display()));
        }
    };
    let mut list = Vec::new();
    for entry in entries {
        let path = entry.path();
        // A mount that is starting has no record yet; skip unreadable ones.
        let Some(record) = std::fs::read(path.join("mount.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<MountRecord>(&b).ok())
        else {
            continue;
        };
        let progress = std::fs::read(path.join("progress.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<ProgressJson>(&b).ok());
        let alive = hyperos_vm::state::process_alive(record.pid, "mount");
        list.push(MountJson {
            dir: record.dir,
            link: record.link,
            pid: record.pid,
            state: if alive { "alive" } else { "stale" },
            progress,
        });
    }
    list.sort_by(|a, b| a.dir.cmp(&b.dir));
    if args.json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(0);
    }
    if list.is_empty() {
        println!("No mounts.");
    }
    for m in list {
        println!(
            "{}  {}  pid {} ({})",
            m.dir.display(),
            m.link,
            m.pid,
            m.state
        );
        if let Some(p) = m.progress {
            println!("  {}", p.line());
        }
    }
    Ok(0)
}

pub fn unmount(state_dir: Option<PathBuf>, args: UnmountArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    let dir = std::path::absolute(&args.dir)?;
    let record_dir = mounts_dir(&state).join(mount_id(&dir));
    let record: MountRecord = match std::fs::read(record_dir.join("mount.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("nothing is mounted at {} by hyperos", dir.display())
        }
        Err(e) => return Err(e.into()),
    };
    if hyperos_vm::state::process_alive(record.pid, "mount") {
        signal_term(record.pid);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while hyperos_vm::state::process_alive(record.pid, "mount") {
            if std::time::Instant::now() > deadline {
                bail!(
                    "the mount process {} did not stop; is {} still in use?",
                    record.pid,
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A mount whose process was killed leaves its mounts behind: detach them.
    for path in [&record.dir, &record.fuse_dir] {
        if is_mounted(path) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(path)
                .status();
        }
    }
    let _ = std::fs::remove_dir_all(&record_dir);
    println!("Unmounted {}.", dir.display());
    Ok(0)
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
        })
        .unwrap_or(false)
}

fn signal_term(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(Debug, clap::Args)]
pub struct SharesArgs {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ShareJson {
    #[serde(flatten)]
    record: ShareRecord,
    /// `alive`, or `stale` when its process is gone (`hyperos unshare`
    /// removes the record).
    state: &'static str,
}

pub fn shares(state_dir: Option<PathBuf>, args: SharesArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    let list: Vec<ShareJson> = hyperos_p2p::shares::all_shares(state.root())
        .into_iter()
        .map(|record| ShareJson {
            state: if record.is_alive() { "alive" } else { "stale" },
            record,
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(0);
    }
    if list.is_empty() {
        println!("No shares.");
    }
    for s in list {
        let r = &s.record;
        println!(
            "{}  {} of {}  pid {} ({})",
            r.link,
            r.kind.name(),
            r.path.display(),
            r.pid,
            s.state
        );
        println!("  ticket  {}", r.ticket);
    }
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct UnshareArgs {
    /// The archive: its key, `dat://<key>` or a link to a version.
    key: String,
}

pub fn unshare(state_dir: Option<PathBuf>, args: UnshareArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    let text = args.key.trim();
    let link: ArchiveLink = if text.starts_with("dat://") {
        text.parse()?
    } else {
        ArchiveLink::latest(
            text.to_ascii_lowercase()
                .parse()
                .with_context(|| format!("{text:?} is not an archive key"))?,
        )
    };
    let key = link.key.to_hex();
    let Some(record) = hyperos_p2p::shares::share_of(state.root(), &key) else {
        bail!("nothing here shares dat://{key}; `hyperos shares` lists what is shared");
    };
    if record.kind == ShareKind::App && record.is_alive() {
        bail!(
            "the HyperOS app (pid {}) shares dat://{key} from {}; stop it from the app's window, or quit the app",
            record.pid,
            record.path.display()
        );
    }
    if record.is_alive() {
        signal_term(record.pid);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while record.is_alive() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "the {} process {} did not stop within 15 s; kill it (kill -9 {})",
                    record.kind.name(),
                    record.pid,
                    record.pid
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Gone, or stale: the record goes either way.
    record.remove(state.root());
    println!("Stopped {} of dat://{key}.", record.kind.name());
    Ok(0)
}
