//! `archive_bench`: the lazy mount of a shared archive, measured on a Debian bookworm
//! minbase shared as EROFS by `hyperos share`, and written as the "Lazy
//! mount of a shared archive" section of docs/benchmarks.md.
//!
//! Each cold measurement uses a fresh mount state directory and drops the
//! page cache first. Bytes fetched are what the mount's blob store holds on
//! disk afterwards (`<state>/p2p/store/data`, allocated bytes), minus what it
//! held right after mounting. Links: loopback, and two network namespaces
//! through a router namespace whose veths are shaped to 100 Mbit/s with
//! `tc tbf`, while a UDP relay in the router (this binary, `relay`) holds
//! every datagram of the QUIC connection 10 ms each way (20 ms round trip;
//! the kernel here has no `netem`). The TCP baseline crosses the same path
//! inside a VXLAN tunnel, through a second such relay. Needs root.

#[path = "../debian.rs"]
mod debian;
#[path = "../machine.rs"]
mod machine;
#[path = "../report.rs"]
mod report;
use machine::{machine, today};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Measure the lazy archive mount and write its section of docs/benchmarks.md")]
struct Args {
    #[command(subcommand)]
    helper: Option<Helper>,
    /// Cold runs of each command (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The report to update (its "## Lazy mount of a shared archive" section).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Helper {
    /// (internal) UDP relay: forwards datagrams between clients arriving on
    /// `listen` and `upstream`, holding each for `delay_ms`.
    Relay {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long)]
        from: SocketAddr,
        #[arg(long, default_value_t = 10)]
        delay_ms: u64,
    },
    /// (internal) Serves one file to one TCP connection.
    TcpServe {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        file: PathBuf,
    },
    /// (internal) Reads everything from a TCP address; prints bytes and seconds.
    TcpGet { addr: SocketAddr },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.helper {
        Some(Helper::Relay {
            listen,
            upstream,
            from,
            delay_ms,
        }) => relay(listen, upstream, from, Duration::from_millis(delay_ms)),
        Some(Helper::TcpServe { listen, file }) => {
            let listener = TcpListener::bind(listen)?;
            println!("listening");
            std::io::stdout().flush()?;
            let (mut stream, _) = listener.accept()?;
            let mut f = std::fs::File::open(file)?;
            std::io::copy(&mut f, &mut stream)?;
            Ok(())
        }
        Some(Helper::TcpGet { addr }) => {
            let started = Instant::now();
            let mut stream = TcpStream::connect(addr)?;
            let bytes = std::io::copy(&mut stream, &mut std::io::sink())?;
            println!("{bytes} {}", started.elapsed().as_secs_f64());
            Ok(())
        }
        None => bench(args.runs, &args.out),
    }
}

/// A FIFO whose items come out `delay` after they went in.
struct Delayed {
    queue: Mutex<VecDeque<(Instant, Vec<u8>)>>,
    ready: Condvar,
}

impl Delayed {
    fn new() -> Arc<Delayed> {
        Arc::new(Delayed {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        })
    }

    fn push(&self, at: Instant, datagram: Vec<u8>) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back((at, datagram));
            self.ready.notify_one();
        }
    }

    fn pop(&self) -> Option<Vec<u8>> {
        let mut q = self.queue.lock().ok()?;
        loop {
            match q.front() {
                Some((at, _)) => {
                    let now = Instant::now();
                    if *at <= now {
                        return q.pop_front().map(|(_, d)| d);
                    }
                    let wait = *at - now;
                    q = self.ready.wait_timeout(q, wait).ok()?.0;
                }
                None => q = self.ready.wait(q).ok()?,
            }
        }
    }
}

fn relay(
    listen: SocketAddr,
    upstream: SocketAddr,
    from: SocketAddr,
    delay: Duration,
) -> anyhow::Result<()> {
    let down = Arc::new(UdpSocket::bind(listen)?);
    let up = Arc::new(UdpSocket::bind(from)?);
    up.connect(upstream)?;
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let (to_up, to_down) = (Delayed::new(), Delayed::new());
    println!("relaying");
    std::io::stdout().flush()?;
    let mut threads = Vec::new();
    {
        let (down, client, to_up) = (down.clone(), client.clone(), to_up.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, addr)) = down.recv_from(&mut buf) {
                if let Ok(mut c) = client.lock() {
                    *c = Some(addr);
                }
                to_up.push(Instant::now() + delay, buf[..n].to_vec());
            }
        }));
    }
    {
        let (up, to_down) = (up.clone(), to_down.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = up.recv(&mut buf) {
                to_down.push(Instant::now() + delay, buf[..n].to_vec());
            }
        }));
    }
    {
        let up = up.clone();
        threads.push(std::thread::spawn(move || {
            while let Some(d) = to_up.pop() {
                let _ = up.send(&d);
            }
        }));
    }
    threads.push(std::thread::spawn(move || {
        while let Some(d) = to_down.pop() {
            let to = client.lock().ok().and_then(|c| *c);
            if let Some(to) = to {
                let _ = down.send_to(&d, to);
            }
        }
    }));
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Where a node runs: the host's network, or a named network namespace
/// (entered with `nsenter --net`, so mounts stay visible to the host).
#[derive(Clone)]
struct Place(Option<String>);

impl Place {
    fn command(&self, program: &Path) -> Command {
        match &self.0 {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(program);
                c
            }
        }
    }
}

/// A process whose first stdout line has been read; killed when dropped.
struct Proc {
    child: Child,
    first_line: String,
}

impl Proc {
    fn start(mut command: Command) -> anyhow::Result<Proc> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(first_line) => Ok(Proc { child, first_line }),
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output()?;
                bail!(
                    "no output from {command:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    hyperos: PathBuf,
    work: tempfile::TempDir,
    counter: std::cell::Cell<usize>,
}

/// A lazy mount in a fresh state directory; unmounted when dropped.
struct LazyMount<'a> {
    bench: &'a Bench,
    state: PathBuf,
    dir: PathBuf,
    process: Option<Proc>,
    /// Seconds from `hyperos mount` to the filesystem being mounted.
    mount_secs: f64,
    /// Store bytes on disk right after mounting.
    baseline: u64,
}

impl LazyMount<'_> {
    fn fetched(&self) -> anyhow::Result<u64> {
        Ok(store_bytes(&self.state)?.saturating_sub(self.baseline))
    }

    /// Requests the mount has sent to peers (manifest and range requests,
    /// each a round trip), from the progress it writes twice a second.
    fn requests(&self) -> anyhow::Result<u64> {
        std::thread::sleep(Duration::from_millis(700));
        for record in std::fs::read_dir(self.state.join("mounts"))? {
            let path = record?.path().join("progress.json");
            if let Ok(bytes) = std::fs::read(&path) {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", path.display()))?;
                return v["requests"]
                    .as_u64()
                    .context("no requests in progress.json");
            }
        }
        Ok(0)
    }

    fn image_file(&self) -> anyhow::Result<PathBuf> {
        for record in std::fs::read_dir(self.state.join("mounts"))? {
            let fuse = record?.path().join("fuse");
            if let Some(file) = std::fs::read_dir(&fuse)?.next() {
                return Ok(file?.path());
            }
        }
        bail!("no FUSE image file under {}", self.state.display())
    }
}

impl Drop for LazyMount<'_> {
    fn drop(&mut self) {
        let _ = self
            .bench
            .hyperos_cmd(&self.state)
            .arg("unmount")
            .arg(&self.dir)
            .output();
        drop(self.process.take());
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

impl Bench {
    fn hyperos_cmd(&self, state: &Path) -> Command {
        self.hyperos_at(&Place(None), state)
    }

    fn hyperos_at(&self, place: &Place, state: &Path) -> Command {
        let mut c = place.command(&self.hyperos);
        c.env("HYPEROS_STATE_DIR", state)
            .env("HYPEROS_KEYSTORE", "file")
            .env_remove("RUST_LOG");
        c
    }

    fn fresh(&self, what: &str) -> PathBuf {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        self.work.path().join(format!("{what}{n}"))
    }

    fn mount(&self, place: &Place, link: &str, ticket: &str) -> anyhow::Result<LazyMount<'_>> {
        let state = self.fresh("state");
        let dir = self.fresh("mnt");
        std::fs::create_dir_all(&dir)?;
        drop_caches()?;
        let started = Instant::now();
        let mut c = self.hyperos_at(place, &state);
        c.arg("mount").arg(link).arg(&dir).args([
            "--peer",
            ticket,
            "--deadline",
            "60",
            "--bind",
            "0.0.0.0:0",
            // Only the ticket's peer: nothing else to find or count.
            "--no-dht",
            "--no-lan",
        ]);
        let process = Proc::start(c)?;
        let mount_secs = started.elapsed().as_secs_f64();
        if !process.first_line.starts_with("Mounted dat://") {
            bail!("hyperos mount: {}", process.first_line);
        }
        let baseline = store_bytes(&state)?;
        Ok(LazyMount {
            bench: self,
            state,
            dir,
            process: Some(process),
            mount_secs,
            baseline,
        })
    }
}

/// Allocated bytes under the mount's blob store.
fn store_bytes(state: &Path) -> anyhow::Result<u64> {
    let store = state.join("p2p/store");
    if !store.exists() {
        return Ok(0);
    }
    let out = Command::new("du")
        .args(["-s", "-B1"])
        .arg(&store)
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du output")
}

fn drop_caches() -> anyhow::Result<()> {
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches (needs root)")
}

fn sh(script: &str) -> anyhow::Result<()> {
    let out = Command::new("sh").args(["-ec", script]).output()?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs a command to completion and returns the seconds it took.
fn timed(command: &mut Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = command.stdin(Stdio::null()).output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(secs)
}

/// `tar c DIR/usr`, its output counted (GNU tar skips reading files when it
/// writes to /dev/null itself): bytes and seconds.
fn tar_usr(dir: &Path) -> anyhow::Result<(u64, f64)> {
    drop_caches()?;
    let started = Instant::now();
    let mut child = Command::new("tar")
        .arg("cf")
        .arg("-")
        .arg("-C")
        .arg(dir)
        .arg("usr")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().context("tar stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    if !child.wait()?.success() {
        bail!("tar c {}/usr failed", dir.display());
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / 1048576.0)
}

/// Network namespaces, deleted when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

struct LinkResult {
    name: String,
    mount_secs: f64,
    baseline: u64,
    true_secs: f64,
    true_bytes: u64,
    true_requests: u64,
    apt_secs: f64,
    apt_bytes: u64,
    apt_requests: u64,
    whole_copy_secs: f64,
    whole_copy_requests: u64,
    whole_true_secs: f64,
    tcp_secs: f64,
    tcp_bytes: u64,
}

struct Share {
    _process: Proc,
    link: String,
    ticket: String,
    image_len: u64,
}

fn share(bench: &Bench, place: &Place, tree: &Path, bind: &str) -> anyhow::Result<Share> {
    let state = bench.fresh("share");
    let mut c = bench.hyperos_at(place, &state);
    c.arg("share")
        .arg(tree)
        .args(["--json", "--no-dht", "--no-lan", "--bind", bind]);
    let process = Proc::start(c)?;
    let v: serde_json::Value = serde_json::from_str(&process.first_line)
        .with_context(|| format!("hyperos share printed {:?}", process.first_line))?;
    let key = v["key"].as_str().context("no key")?;
    Ok(Share {
        link: format!("dat://{key}"),
        ticket: v["ticket"].as_str().context("no ticket")?.to_owned(),
        image_len: v["image_len"].as_u64().context("no image_len")?,
        _process: process,
    })
}

fn measure_link(
    bench: &Bench,
    name: &str,
    share: &Share,
    mounter: &Place,
    tcp_serve: (&Place, SocketAddr),
    image_copy: &Path,
    runs: usize,
) -> anyhow::Result<LinkResult> {
    let chroot = |dir: &Path, args: &[&str]| -> anyhow::Result<f64> {
        drop_caches()?;
        timed(Command::new("chroot").arg(dir).args(args))
    };
    let (mut mounts, mut baselines, mut trues, mut true_bytes, mut apts, mut apt_bytes) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut true_requests, mut apt_requests) = (vec![], vec![]);
    for run in 0..runs {
        let m = bench.mount(mounter, &share.link, &share.ticket)?;
        mounts.push(m.mount_secs);
        baselines.push(m.baseline as f64);
        let before = m.requests()?;
        trues.push(chroot(&m.dir, &["/bin/true"])?);
        true_bytes.push(m.fetched()? as f64);
        true_requests.push(m.requests()?.saturating_sub(before) as f64);
        drop(m);
        let m = bench.mount(mounter, &share.link, &share.ticket)?;
        let before = m.requests()?;
        apts.push(chroot(&m.dir, &["apt-get", "--version"])?);
        apt_bytes.push(m.fetched()? as f64);
        apt_requests.push(m.requests()?.saturating_sub(before) as f64);
        eprintln!(
            "{name} run {}: mount {:.2}s, /bin/true {:.3}s {} {} requests, apt-get --version {:.3}s {} {} requests",
            run + 1,
            mounts[run],
            trues[run],
            mib(true_bytes[run] as u64),
            true_requests[run],
            apts[run],
            mib(apt_bytes[run] as u64),
            apt_requests[run]
        );
    }

    // The whole image first: copy it out of a fresh lazy mount, then a
    // local loop mount and the same /bin/true; and a plain TCP copy of the
    // same image file over the same path. Alternated, `runs` times.
    let (mut copies, mut copy_requests, mut whole_trues, mut tcps) =
        (vec![], vec![], vec![], vec![]);
    let mut tcp_bytes = 0;
    for run in 0..runs {
        let m = bench.mount(mounter, &share.link, &share.ticket)?;
        let image = m.image_file()?;
        let _ = std::fs::remove_file(image_copy);
        let before = m.requests()?;
        drop_caches()?;
        copies.push(timed(Command::new("cp").arg(&image).arg(image_copy))?);
        copy_requests.push(m.requests()?.saturating_sub(before) as f64);
        drop(m);
        let loop_dir = bench.fresh("loop");
        std::fs::create_dir_all(&loop_dir)?;
        drop_caches()?;
        let started = Instant::now();
        timed(
            Command::new("mount")
                .args(["-t", "erofs", "-o", "ro,loop"])
                .arg(image_copy)
                .arg(&loop_dir),
        )?;
        let r = timed(Command::new("chroot").arg(&loop_dir).arg("/bin/true"));
        whole_trues.push(started.elapsed().as_secs_f64());
        let _ = Command::new("umount").arg(&loop_dir).output();
        r?;

        let (server_place, addr) = tcp_serve;
        let mut c = server_place.command(&std::env::current_exe()?);
        c.args(["tcp-serve", "--listen", &addr.to_string(), "--file"])
            .arg(image_copy);
        let server = Proc::start(c)?;
        drop_caches()?;
        let out = mounter
            .command(&std::env::current_exe()?)
            .args(["tcp-get", &addr.to_string()])
            .output()?;
        drop(server);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        tcp_bytes = parts
            .next()
            .and_then(|s| s.parse().ok())
            .context("tcp-get")?;
        tcps.push(
            parts
                .next()
                .and_then(|s| s.parse().ok())
                .context("tcp-get")?,
        );
        eprintln!(
            "{name} run {}: whole image copied in {:.2}s ({} requests), TCP copy {:.2}s",
            run + 1,
            copies[run],
            copy_requests[run],
            tcps[run]
        );
    }

    Ok(LinkResult {
        name: name.to_owned(),
        mount_secs: median(mounts),
        baseline: median(baselines) as u64,
        true_secs: median(trues),
        true_bytes: median(true_bytes) as u64,
        true_requests: median(true_requests) as u64,
        apt_secs: median(apts),
        apt_bytes: median(apt_bytes) as u64,
        apt_requests: median(apt_requests) as u64,
        whole_copy_secs: median(copies),
        whole_copy_requests: median(copy_requests) as u64,
        whole_true_secs: median(whole_trues),
        tcp_secs: median(tcps),
        tcp_bytes,
    })
}

fn bench(runs: usize, out: &Path) -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let hyperos = std::env::current_exe()?
        .parent()
        .context("no directory for the benchmark binary")?
        .join("hyperos");
    if !hyperos.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p hyperos-cli`",
            hyperos.display()
        );
    }
    let machine = machine();
    let tree = debian::rootfs(&repo, "bookworm-minbase", &[])?;
    let bench = Bench {
        hyperos,
        work: tempfile::Builder::new()
            .prefix("hyperos-archive-bench-")
            .tempdir()?,
        counter: std::cell::Cell::new(0),
    };
    let image_copy = bench.work.path().join("image.erofs");
    let host = Place(None);
    let mut results = Vec::new();

    // Loopback.
    let started = Instant::now();
    let lo = share(&bench, &host, &tree, "127.0.0.1:7511")?;
    let share_secs = started.elapsed().as_secs_f64();
    let image_len = lo.image_len;
    eprintln!(
        "shared {} ({}) in {share_secs:.1}s",
        lo.link,
        mib(image_len)
    );
    results.push(measure_link(
        &bench,
        "loopback",
        &lo,
        &host,
        (&host, "127.0.0.1:7512".parse()?),
        &image_copy,
        runs,
    )?);

    // Fully cached reads: a lazy mount that has read /usr once, and the
    // same image loop-mounted from local disk, alternated, each after
    // drop_caches. The lazy mount must send no request meanwhile.
    let m = bench.mount(&host, &lo.link, &lo.ticket)?;
    tar_usr(&m.dir)?;
    let loop_dir = bench.fresh("loop");
    std::fs::create_dir_all(&loop_dir)?;
    sh(&format!(
        "mount -t erofs -o ro,loop {} {}",
        image_copy.display(),
        loop_dir.display()
    ))?;
    let before = m.requests()?;
    let (mut cached, mut local, mut usr_bytes) = (vec![], vec![], 0);
    let alternated = (0..runs).try_for_each(|_| {
        let (bytes, secs) = tar_usr(&m.dir)?;
        usr_bytes = bytes;
        cached.push(secs);
        local.push(tar_usr(&loop_dir)?.1);
        anyhow::Ok(())
    });
    let _ = Command::new("umount").arg(&loop_dir).output();
    alternated?;
    let cached_requests = m.requests()?.saturating_sub(before);
    if cached_requests > 0 {
        bail!("the lazy mount sent {cached_requests} requests while reading what it had cached");
    }
    drop(m);
    drop(lo);
    let (cached_secs, local_secs) = (median(cached), median(local));
    eprintln!("tar c /usr: lazy mount (cached) {cached_secs:.2}s, local loop {local_secs:.2}s");

    // 100 Mbit/s, 20 ms round trip: sharer ─ router (tbf, delay relay) ─ mounter.
    let id = std::process::id();
    let (s, r, mo) = (
        format!("hyb-s-{id}"),
        format!("hyb-r-{id}"),
        format!("hyb-m-{id}"),
    );
    let namespaces = Namespaces(vec![s.clone(), r.clone(), mo.clone()]);
    for ns in &namespaces.0 {
        sh(&format!("ip netns add {ns}\nip -n {ns} link set lo up"))?;
    }
    sh(&format!(
        "ip link add vr netns {s} type veth peer name vs netns {r}
         ip link add vm netns {r} type veth peer name vr netns {mo}
         ip -n {s} addr add 10.88.51.2/24 dev vr
         ip -n {r} addr add 10.88.51.1/24 dev vs
         ip -n {r} addr add 10.88.52.1/24 dev vm
         ip -n {mo} addr add 10.88.52.2/24 dev vr
         for l in \"{s} vr\" \"{r} vs\" \"{r} vm\" \"{mo} vr\"; do set -- $l; ip -n $1 link set $2 up; done
         ip -n {s} route add default via 10.88.51.1
         ip -n {mo} route add default via 10.88.52.1
         ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1
         ip netns exec {r} tc qdisc add dev vs root tbf rate 100mbit burst 64kb limit 4mb
         ip netns exec {r} tc qdisc add dev vm root tbf rate 100mbit burst 64kb limit 4mb
         ip netns exec {r} nft add table ip relay
         ip netns exec {r} nft add chain ip relay pre '{{ type nat hook prerouting priority -100; }}'
         ip netns exec {r} nft add rule ip relay pre iifname vm ip daddr 10.88.51.2 udp dport 7521 redirect to :7621"
    ))?;
    let mut c = Place(Some(r.clone())).command(&std::env::current_exe()?);
    c.args([
        "relay",
        "--listen",
        "0.0.0.0:7621",
        "--upstream",
        "10.88.51.2:7521",
        "--from",
        "10.88.51.1:0",
        "--delay-ms",
        "10",
    ]);
    let relay = Proc::start(c)?;
    // The TCP baseline takes the same path: a VXLAN tunnel (10.99.0.0/24)
    // between sharer and mounter whose UDP datagrams cross the same tbf
    // veths and a second relay with the same 10 ms each way, so TCP sees
    // the 20 ms round trip too (its ACKs are held as QUIC's are).
    sh(&format!(
        "ip -n {s} link add vx0 type vxlan id 7 remote 10.88.51.1 local 10.88.51.2 dstport 4789 srcport 4789 4790
         ip -n {mo} link add vx0 type vxlan id 7 remote 10.88.51.2 local 10.88.52.2 dstport 4789 srcport 4789 4790
         ip -n {s} addr add 10.99.0.1/24 dev vx0
         ip -n {mo} addr add 10.99.0.2/24 dev vx0
         for n in {s} {mo}; do
           ip -n $n link set vx0 mtu 1450 up
           # The relay hands the inner packets on as bytes: their TCP
           # checksums must be filled in before, not left to an offload.
           ip netns exec $n ethtool -K vx0 tx off >/dev/null
         done
         ip netns exec {r} nft add rule ip relay pre iifname vm ip daddr 10.88.51.2 udp dport 4789 redirect to :7789"
    ))?;
    let mut c = Place(Some(r.clone())).command(&std::env::current_exe()?);
    c.args([
        "relay",
        "--listen",
        "0.0.0.0:7789",
        "--upstream",
        "10.88.51.2:4789",
        "--from",
        "10.88.51.1:4789",
        "--delay-ms",
        "10",
    ]);
    let tunnel_relay = Proc::start(c)?;
    let shaped_share = share(&bench, &Place(Some(s.clone())), &tree, "10.88.51.2:7521")?;
    results.push(measure_link(
        &bench,
        "100 Mbit/s, 20 ms RTT",
        &shaped_share,
        &Place(Some(mo.clone())),
        (&Place(Some(s.clone())), "10.99.0.1:7522".parse()?),
        &image_copy,
        runs,
    )?);
    drop(shaped_share);
    drop(tunnel_relay);
    drop(relay);
    drop(namespaces);

    let section = report(
        &machine,
        runs,
        image_len,
        share_secs,
        &results,
        usr_bytes,
        cached_secs,
        local_secs,
    );
    println!("{section}");
    let old = std::fs::read_to_string(out).unwrap_or_default();
    std::fs::write(out, report::replace_section(&old, HEADING, &section))?;
    Ok(())
}

const HEADING: &str = "## Lazy mount of a shared archive";

#[allow(clippy::too_many_arguments)]
fn report(
    machine: &str,
    runs: usize,
    image_len: u64,
    share_secs: f64,
    results: &[LinkResult],
    usr_bytes: u64,
    cached_secs: f64,
    local_secs: f64,
) -> String {
    let pct = |b: u64| 100.0 * b as f64 / image_len as f64;
    let mut s = String::new();
    s.push_str(&format!("{HEADING}\n\n"));
    s.push_str(&format!(
        "Measured {} on {machine} with `cargo build --release -p hyperos-cli -p hyperos-bench && sudo target/release/archive_bench --runs {runs}`.\n\n",
        today()
    ));
    s.push_str(&format!(
        "Image: a Debian bookworm minbase (`debootstrap --variant=minbase`), shared as EROFS by `hyperos share` ({}, built and hashed in {share_secs:.1} s). \
         Each cold run mounts with a fresh state directory after `echo 3 > /proc/sys/vm/drop_caches`; the median of {runs} runs is shown. \
         *Fetched* is what the mount's blob store holds on disk after the command (allocated bytes of `<state>/p2p/store`) minus what it held right after mounting \
         (*held after mount*: the manifest, the chunk index and what mounting the filesystem read); it includes the store's own per-chunk files, so it is an upper bound on payload. \
         *Requests* are the requests the mount sent to peers during the command (its `requests` counter in `hyperos mounts --json`), each one round trip; up to 16 are in flight at once, so the round trips in sequence are fewer.\n\n",
        mib(image_len)
    ));
    s.push_str("No VM is involved: the sharer, the mounter and the commands run on the host (so TCG does not matter here). The shaped link is sharer ─ router ─ mounter in three network namespaces: `tc tbf` at 100 Mbit/s on both router veths, and a UDP relay in the router that holds every QUIC datagram 10 ms each way (20 ms round trip; this kernel has no `netem`). The TCP copy (this binary's `tcp-serve`/`tcp-get`, from the sharer's namespace, page cache dropped first) takes the same path: it runs over a VXLAN tunnel between sharer and mounter whose datagrams cross the same tbf veths and a second relay with the same 10 ms each way, so TCP sees the same rate and round trip (less 50 bytes of VXLAN header per packet).\n\n");
    s.push_str("| link | mount | held after mount | cold `/bin/true` | fetched | share of image | requests | cold `apt-get --version` | fetched | share of image | requests |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        s.push_str(&format!(
            "| {} | {:.2} s | {} | {:.3} s | {} | {:.1} % | {} | {:.3} s | {} | {:.1} % | {} |\n",
            r.name,
            r.mount_secs,
            mib(r.baseline),
            r.true_secs,
            mib(r.true_bytes),
            pct(r.true_bytes),
            r.true_requests,
            r.apt_secs,
            mib(r.apt_bytes),
            pct(r.apt_bytes),
            r.apt_requests
        ));
    }
    s.push_str("\nAgainst fetching the whole image first (copy the image file out of a fresh lazy mount, then a local loop mount and `chroot /bin/true`), and full-fetch throughput against a plain TCP copy of the same bytes (medians of the same number of runs, the two alternated):\n\n");
    s.push_str("| link | lazy mount + cold `/bin/true` | whole image first + `/bin/true` | full fetch | requests | TCP copy |\n|---|---:|---:|---:|---:|---:|\n");
    for r in results {
        let mbit = |bytes: u64, secs: f64| bytes as f64 * 8.0 / secs / 1e6;
        s.push_str(&format!(
            "| {} | {:.2} s | {:.2} s | {:.1} s ({:.0} Mbit/s) | {} | {:.1} s ({:.0} Mbit/s) |\n",
            r.name,
            r.mount_secs + r.true_secs,
            r.mount_secs + r.whole_copy_secs + r.whole_true_secs,
            r.whole_copy_secs,
            mbit(image_len, r.whole_copy_secs),
            r.whole_copy_requests,
            r.tcp_secs,
            mbit(r.tcp_bytes, r.tcp_secs),
        ));
    }
    s.push_str(&format!(
        "\nFully cached reads, `tar c /usr` ({}) after drop_caches, medians of {runs} runs alternating the two: through a lazy mount that has all of `/usr` in its store (and sent no request meanwhile) **{cached_secs:.2} s**; the same image loop-mounted from local disk **{local_secs:.2} s**.\n",
        mib(usr_bytes)
    ));
    let worst = results
        .iter()
        .map(|r| r.baseline + r.true_bytes)
        .max()
        .unwrap_or(0);
    let verdict = if worst < 2 * 1048576 {
        "met"
    } else {
        "not met"
    };
    s.push_str(&format!(
        "\nTarget: a cold `/bin/true` fetches under 2 MiB: **{verdict}** ({} at most, counting what the mount itself held before the command).\n",
        mib(worst)
    ));
    s
}
