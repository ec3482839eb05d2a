//! The benchmark itself (Linux only: FUSE, loop and overlay mounts,
//! systemd-nspawn, network namespaces).

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::machine::{machine, today};
use crate::shaped_link::{ShapedLink, in_netns};
use crate::{debian, report};
use anyhow::{Context, bail};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "run_bench",
    about = "Measure `hyperos run` from a dat:// link and write its section of docs/benchmarks.md"
)]
struct Args {
    /// Runs of each case (the median and the range are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The report to update (its "## Live boot (hyperos run)" section).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

const HEADING: &str = "## Live boot (hyperos run)";

/// What the booted image runs once the boot is over.
const REPORT_UNIT: &str = "[Unit]
Description=Report the system state to /out and power off
After=multi-user.target

[Service]
# Not oneshot: a oneshot unit still starting keeps is-system-running --wait waiting.
Type=simple
ExecStart=/bin/sh -c 'systemctl is-system-running --wait > /out/state.tmp; mv /out/state.tmp /out/state; systemctl poweroff'

[Install]
WantedBy=multi-user.target
";

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs 0 measures nothing: give at least 1");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("no directory for the benchmark binary")?
        .to_owned();
    let (hyperos, relay) = (bin_dir.join("hyperos"), bin_dir.join("archive_bench"));
    for bin in [&hyperos, &relay] {
        if !bin.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p hyperos-cli -p hyperos-bench`",
                bin.display()
            );
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run_bench mounts, runs containers and makes network namespaces: run it as root");
    }
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        repo.join(&args.out)
    };
    let machine = machine();
    let minbase = debian::rootfs(&repo, "bookworm-minbase", &[])?;
    let systemd = debian::rootfs(&repo, "bookworm-systemd", &["systemd-sysv"])?;
    let bench = Bench {
        hyperos,
        work: tempfile::Builder::new()
            .prefix("hyperos-run-bench-")
            .tempdir()?,
        counter: Cell::new(0),
    };
    let version = std::fs::read_to_string(minbase.join("etc/debian_version"))?
        .trim()
        .to_owned();
    let booting = bench.fresh("systemd-tree");
    copy_tree(&systemd, &booting)?;
    install_report_unit(&booting)?;
    let trees = Trees {
        cat: minbase,
        boot: booting,
        version,
    };

    let mut results = Vec::new();
    results.push(bench.measure("loopback", None, None, "127.0.0.1:0", &trees, args.runs)?);
    {
        let link = ShapedLink::up(&format!("hyrun-{}", std::process::id()), 61, 7531, &relay)?;
        results.push(bench.measure(
            "100 Mbit/s, 20 ms RTT",
            Some(&link.sharer),
            Some(&link.reader),
            &link.sharer_addr.to_string(),
            &trees,
            args.runs,
        )?);
    }

    let section = report_section(&machine, args.runs, &results);
    println!("{section}");
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    std::fs::write(&out, report::replace_section(&old, HEADING, &section))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .status()?;
    if !status.success() {
        bail!("copying {} to {} failed", from.display(), to.display());
    }
    Ok(())
}

/// The unit reporting the boot's end, enabled in `tree`.
fn install_report_unit(tree: &Path) -> anyhow::Result<()> {
    let units = tree.join("etc/systemd/system");
    std::fs::write(units.join("hyperos-report.service"), REPORT_UNIT)?;
    let wants = units.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/hyperos-report.service",
        wants.join("hyperos-report.service"),
    )?;
    Ok(())
}

fn drop_caches() -> anyhow::Result<()> {
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches (needs root)")
}

/// A process whose stdout lines arrive on a channel, each with the time it
/// was read, and whose stderr is kept for error messages. Stopped with
/// SIGTERM (then SIGKILL) when dropped.
struct Spawned {
    child: Child,
    lines: Receiver<(String, Instant)>,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl Spawned {
    fn start(mut command: Command) -> anyhow::Result<Spawned> {
        let what = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let (tx, lines) = channel();
        let stdout = child.stdout.take().context("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((line, Instant::now()));
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().context("no stderr")?;
        let kept = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            if let Ok(mut kept) = kept.lock() {
                *kept = text;
            }
        });
        Ok(Spawned {
            child,
            lines,
            stderr,
            what,
        })
    }

    fn failure(&mut self, problem: &str) -> anyhow::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        anyhow::anyhow!("{}: {problem}\n{}", self.what, stderr.trim())
    }

    /// The next line of stdout and when it came.
    fn next_line(&mut self, timeout: Duration) -> anyhow::Result<(String, Instant)> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                Err(self.failure(&format!("no output within {} s", timeout.as_secs())))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.failure("ended without output")),
        }
    }

    fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!("still running after {} s", timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_success(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let status = self.wait(timeout)?;
        if !status.success() {
            return Err(self.failure(&format!("exited with {status}")));
        }
        Ok(())
    }

    /// SIGTERM, and SIGKILL if it is still there after 10 s.
    fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if self.wait(Duration::from_secs(10)).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// The two images and what the first prints.
struct Trees {
    /// The minbase that runs `cat /etc/debian_version`.
    cat: PathBuf,
    /// The systemd image with the report unit.
    boot: PathBuf,
    /// The minbase's /etc/debian_version.
    version: String,
}

struct Share {
    _process: Spawned,
    link: String,
    ticket: String,
    image_len: u64,
}

/// One measured `hyperos run`, from its last-run.json.
#[derive(Clone, Copy, Default)]
struct Sample {
    /// Seconds to the first line of output (or to the booted system's
    /// report), from starting `hyperos run`.
    ready: f64,
    /// Seconds until `hyperos run` exited.
    total: f64,
    fetched: u64,
    from_cache: u64,
    requests: u64,
}

/// Every run of one case.
#[derive(Default)]
struct Case(Vec<Sample>);

struct LinkResult {
    name: String,
    cat_image_len: u64,
    boot_image_len: u64,
    cold: Case,
    warm: Case,
    /// `hyperos seed` to completion: seconds and bytes fetched.
    seed: Vec<(f64, u64)>,
    seeded: Case,
    boot_cold: Case,
    boot_warm: Case,
    boot_states: Vec<String>,
}

struct Bench {
    hyperos: PathBuf,
    work: tempfile::TempDir,
    counter: Cell<usize>,
}

impl Bench {
    fn fresh(&self, what: &str) -> PathBuf {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        self.work.path().join(format!("{what}-{n}"))
    }

    fn hyperos(&self, netns: Option<&str>, state: &Path) -> Command {
        let mut c = in_netns(netns, &self.hyperos);
        c.env("HYPEROS_STATE_DIR", state)
            .env("HYPEROS_KEYSTORE", "file")
            .env_remove("RUST_LOG");
        c
    }

    fn share(&self, netns: Option<&str>, tree: &Path, bind: &str) -> anyhow::Result<Share> {
        let started = Instant::now();
        let mut c = self.hyperos(netns, &self.fresh("sharer"));
        c.arg("share")
            .arg(tree)
            .args(["--json", "--no-dht", "--no-lan", "--bind", bind]);
        let mut process = Spawned::start(c)?;
        let (line, _) = process.next_line(Duration::from_secs(600))?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("hyperos share printed {line:?}"))?;
        let field = |name: &str| {
            v[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("hyperos share printed no {name}: {line}"))
        };
        let share = Share {
            link: field("link")?,
            ticket: field("ticket")?,
            image_len: v["image_len"].as_u64().context("no image_len")?,
            _process: process,
        };
        eprintln!(
            "shared {} as {} ({:.1} MiB) in {:.1} s",
            tree.display(),
            share.link,
            mib(share.image_len),
            started.elapsed().as_secs_f64()
        );
        Ok(share)
    }

    fn last_run(state: &Path, name: &str) -> anyhow::Result<serde_json::Value> {
        let path = state.join("containers").join(name).join("last-run.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    fn sample(state: &Path, name: &str, ready: f64, total: f64) -> anyhow::Result<Sample> {
        let last = Bench::last_run(state, name)?;
        let field = |f: &str| {
            last[f]
                .as_u64()
                .with_context(|| format!("last-run.json: no {f}"))
        };
        Ok(Sample {
            ready,
            total,
            fetched: field("bytes_fetched")?,
            from_cache: field("bytes_from_cache")?,
            requests: field("requests")?,
        })
    }

    /// `hyperos run … -- cat /etc/debian_version` in `state`.
    fn cat(
        &self,
        netns: Option<&str>,
        state: &Path,
        share: &Share,
        version: &str,
    ) -> anyhow::Result<Sample> {
        let mut c = self.hyperos(netns, state);
        c.args(["run", "--name", "deb", "--volatile", "--no-dht", "--no-lan"])
            .args(["--peer", &share.ticket, &share.link])
            .args(["--", "cat", "/etc/debian_version"]);
        drop_caches()?;
        let started = Instant::now();
        let mut run = Spawned::start(c)?;
        let (line, at) = run.next_line(Duration::from_secs(300))?;
        run.wait_success(Duration::from_secs(60))?;
        let total = started.elapsed().as_secs_f64();
        if line != version {
            bail!("the container printed {line:?}, not the image's Debian version {version:?}");
        }
        Bench::sample(state, "deb", (at - started).as_secs_f64(), total)
    }

    /// `hyperos seed` in `state` until it has the whole image; returns
    /// seconds and bytes fetched.
    fn seed(&self, netns: Option<&str>, state: &Path, share: &Share) -> anyhow::Result<(f64, u64)> {
        let mut c = self.hyperos(netns, state);
        c.args(["seed", &share.link, "--peer", &share.ticket])
            .args(["--json", "--no-dht", "--no-lan"]);
        drop_caches()?;
        let started = Instant::now();
        let mut seed = Spawned::start(c)?;
        let (line, at) = seed.next_line(Duration::from_secs(600))?;
        seed.stop();
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("hyperos seed printed {line:?}"))?;
        let fetched = v["fetched"].as_u64().context("hyperos seed: no fetched")?;
        Ok(((at - started).as_secs_f64(), fetched))
    }

    /// `hyperos run --boot` of the systemd image in `state`, until the
    /// report unit has written the system's state; returns the sample and
    /// that state.
    fn boot(
        &self,
        netns: Option<&str>,
        state: &Path,
        share: &Share,
    ) -> anyhow::Result<(Sample, String)> {
        let out = self.fresh("boot-out");
        std::fs::create_dir_all(&out)?;
        let report = out.join("state");
        let mut c = self.hyperos(netns, state);
        c.args([
            "run",
            "--name",
            "sd",
            "--volatile",
            "--boot",
            "--no-dht",
            "--no-lan",
        ])
        .arg(format!("--bind={}:/out", out.display()))
        .args(["--peer", &share.ticket, &share.link]);
        drop_caches()?;
        let started = Instant::now();
        let mut run = Spawned::start(c)?;
        let deadline = started + Duration::from_secs(300);
        let ready = loop {
            if report.exists() {
                break started.elapsed().as_secs_f64();
            }
            if let Some(status) = run.child.try_wait()? {
                return Err(run.failure(&format!(
                    "exited with {status} before the system reported its state"
                )));
            }
            if Instant::now() > deadline {
                return Err(run.failure("the system did not report its state within 300 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        run.wait_success(Duration::from_secs(120))?;
        let total = started.elapsed().as_secs_f64();
        let word = std::fs::read_to_string(&report)?.trim().to_owned();
        if !matches!(word.as_str(), "running" | "degraded") {
            bail!("systemctl is-system-running said {word:?}, not running or degraded");
        }
        Ok((Bench::sample(state, "sd", ready, total)?, word))
    }

    /// Every case on one link: the sharer runs in `sharer`'s network
    /// namespace bound to `bind`, `hyperos run` in `reader`'s (`None`: the
    /// host). One share at a time.
    fn measure(
        &self,
        name: &str,
        sharer: Option<&str>,
        reader: Option<&str>,
        bind: &str,
        trees: &Trees,
        runs: usize,
    ) -> anyhow::Result<LinkResult> {
        let mut r = LinkResult {
            name: name.to_owned(),
            cat_image_len: 0,
            boot_image_len: 0,
            cold: Case::default(),
            warm: Case::default(),
            seed: Vec::new(),
            seeded: Case::default(),
            boot_cold: Case::default(),
            boot_warm: Case::default(),
            boot_states: Vec::new(),
        };
        let share = self.share(sharer, &trees.cat, bind)?;
        r.cat_image_len = share.image_len;
        for i in 1..=runs {
            let state = self.fresh("reader");
            let cold = self.cat(reader, &state, &share, &trees.version)?;
            let warm = self.cat(reader, &state, &share, &trees.version)?;
            let state = self.fresh("seeder");
            let seed = self.seed(reader, &state, &share)?;
            let seeded = self.cat(reader, &state, &share, &trees.version)?;
            eprintln!(
                "{name} run {i}: cold {:.3} s ({:.2} MiB), warm {:.3} s, seed {:.2} s ({:.1} MiB) then {:.3} s",
                cold.ready,
                mib(cold.fetched),
                warm.ready,
                seed.0,
                mib(seed.1),
                seeded.ready
            );
            r.cold.0.push(cold);
            r.warm.0.push(warm);
            r.seed.push(seed);
            r.seeded.0.push(seeded);
        }
        drop(share);
        let share = self.share(sharer, &trees.boot, bind)?;
        r.boot_image_len = share.image_len;
        for i in 1..=runs {
            let state = self.fresh("booter");
            let (cold, word) = self.boot(reader, &state, &share)?;
            let (warm, _) = self.boot(reader, &state, &share)?;
            eprintln!(
                "{name} boot {i}: cold {:.2} s ({:.1} MiB, {word}), warm {:.2} s",
                cold.ready,
                mib(cold.fetched),
                warm.ready
            );
            r.boot_cold.0.push(cold);
            r.boot_warm.0.push(warm);
            r.boot_states.push(word);
        }
        Ok(r)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of `values` and their range, e.g. `0.41 s (0.39–0.47)`.
fn spread(values: impl IntoIterator<Item = f64>, digits: usize, unit: &str) -> String {
    let v: Vec<f64> = values.into_iter().collect();
    let (Some(min), Some(max)) = (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) else {
        return "—".to_owned();
    };
    let median = median(v);
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    format!("{median:.digits$}{unit} ({min:.digits$}–{max:.digits$})")
}

impl Case {
    fn ready(&self) -> String {
        spread(self.0.iter().map(|s| s.ready), 2, "s")
    }
    fn total(&self) -> String {
        spread(self.0.iter().map(|s| s.total), 2, "s")
    }
    fn fetched(&self) -> String {
        spread(self.0.iter().map(|s| mib(s.fetched)), 2, "MiB")
    }
    fn cached(&self) -> String {
        spread(self.0.iter().map(|s| mib(s.from_cache)), 2, "MiB")
    }
    fn requests(&self) -> String {
        spread(self.0.iter().map(|s| s.requests as f64), 0, "")
    }
}

impl LinkResult {
    /// Seconds to the first line with the whole image fetched first, each run.
    fn whole_first(&self) -> Vec<f64> {
        self.seed
            .iter()
            .zip(&self.seeded.0)
            .map(|((secs, _), run)| secs + run.ready)
            .collect()
    }
}

/// A table of the cold and warm runs on each link.
fn case_table(
    results: &[LinkResult],
    ready: &str,
    cases: impl Fn(&LinkResult) -> [&Case; 2],
) -> String {
    let mut s = format!(
        "| link | case | {ready} | whole run | fetched | requests | from cache |\n|---|---|---:|---:|---:|---:|---:|\n"
    );
    for r in results {
        for (case, c) in ["cold, lazy", "warm"].into_iter().zip(cases(r)) {
            s.push_str(&format!(
                "| {} | {case} | {} | {} | {} | {} | {} |\n",
                r.name,
                c.ready(),
                c.total(),
                c.fetched(),
                c.requests(),
                c.cached()
            ));
        }
    }
    s
}

fn report_section(machine: &str, runs: usize, results: &[LinkResult]) -> String {
    let mut s = format!("{HEADING}\n\n");
    s.push_str(&format!(
        "Measured {} on {machine} with `cargo build --release -p hyperos-cli -p hyperos-bench && sudo target/release/run_bench --runs {runs}` (part of `./x bench`). \
         The containers run on this host with systemd-nspawn, as root: no VM is involved (this machine's /dev/kvm can't run guests). \
         Each image is shared as EROFS by `hyperos share` on another node and run with `hyperos run --volatile --no-dht --no-lan --peer TICKET dat://…`, which mounts it lazily: only the blocks read are fetched. \
         Every run starts after `echo 3 > /proc/sys/vm/drop_caches`; each cell is the median of {runs} runs and, in brackets, the fastest and slowest. \
         *Fetched*, *from cache* and *requests* are what `hyperos run` recorded in `containers/<name>/last-run.json` (verified chunk bytes from peers, bytes read from the local store, range requests to peers). \
         *Cold*: a fresh state directory for the reader. *Warm*: a second run in the same state directory.\n\n",
        today()
    ));
    s.push_str("The shaped link is sharer ─ router ─ reader in three network namespaces: `tc tbf` at 100 Mbit/s on both router veths, and a UDP relay in the router that holds every QUIC datagram 10 ms each way (20 ms round trip; this kernel has no `netem`).\n\n");
    if let Some(first) = results.first() {
        s.push_str(&format!(
            "### `hyperos run dat://… -- cat /etc/debian_version`\n\nDebian bookworm minbase, {:.1} MiB as EROFS. *First line*: from starting `hyperos run` to the first line of its output; *whole run*: until it exited (unmounted and all).\n\n",
            mib(first.cat_image_len)
        ));
    }
    s.push_str(&case_table(results, "first line", |r| [&r.cold, &r.warm]));
    s.push_str("\nWith the whole image fetched first: `hyperos seed` until it has every chunk, stopped, then the same run in its state directory.\n\n| link | seed | then first line | together | fetched by the seed | fetched by the run |\n|---|---:|---:|---:|---:|---:|\n");
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            spread(r.seed.iter().map(|(secs, _)| *secs), 2, "s"),
            r.seeded.ready(),
            spread(r.whole_first(), 2, "s"),
            spread(r.seed.iter().map(|(_, bytes)| mib(*bytes)), 1, "MiB"),
            r.seeded.fetched(),
        ));
    }
    s.push('\n');
    for r in results {
        let lazy = median(r.cold.0.iter().map(|c| c.ready));
        let whole = median(r.whole_first());
        let fetched = median(r.cold.0.iter().map(|c| c.fetched as f64));
        s.push_str(&format!(
            "- {}: the lazy cold run prints its line after **{lazy:.2} s**, {:.1}× sooner than fetching the whole image first ({whole:.2} s), having fetched {:.1} % of the image.\n",
            r.name,
            whole / lazy,
            100.0 * fetched / r.cat_image_len as f64,
        ));
    }
    if let Some(first) = results.first() {
        s.push_str(&format!(
            "\n### `hyperos run --boot`: Debian with systemd to running\n\nDebian bookworm minbase with `systemd-sysv`, {:.1} MiB as EROFS, plus a unit (`Type=simple`, after `multi-user.target`) that writes what `systemctl is-system-running --wait` says to a directory bound from the host and powers off. *Running*: from starting `hyperos run --boot` to that file appearing; *whole run*: until `hyperos run` exited after the poweroff.\n\n",
            mib(first.boot_image_len)
        ));
    }
    s.push_str(&case_table(results, "running", |r| {
        [&r.boot_cold, &r.boot_warm]
    }));
    let mut states: Vec<&str> = results
        .iter()
        .flat_map(|r| r.boot_states.iter().map(String::as_str))
        .collect();
    states.sort_unstable();
    states.dedup();
    s.push_str(&format!(
        "\n`systemctl is-system-running` said: {}.\n",
        states.join(", ")
    ));
    s
}
