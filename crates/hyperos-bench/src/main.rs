//! `hyperos-bench`: measures HyperOS and writes `docs/benchmarks.md`.
//!
//! It drives the real `hyperos` binary (built beside this one) the way a
//! user would, and reads the times the supervisor records in `state.json`
//! (host wall clock; the guest's kernel start is the `ready` time minus the
//! guest's own uptime). Phases, all from the moment `hyperos boot` starts:
//!
//! | phase | end of the phase |
//! |---|---|
//! | boot command | QEMU spawned |
//! | kernel start | the guest kernel starts running |
//! | PID 1 start | `hyperos-init` runs (kernel booted, initrd unpacked) |
//! | SSH ready | dropbear accepts logins and the lease is known (`boot` returns) |
//! | first command | `hyperos run true` has returned |
//!
//! The floor is the same kernel with a trivial initrd whose init powers off
//! at once: QEMU start to QEMU exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

mod machine;
use clap::Parser;
use machine::{machine, today};

#[derive(Debug, Parser)]
#[command(about = "Measure HyperOS and write docs/benchmarks.md")]
struct Args {
    /// Boots to measure.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Where to write the report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Skip `hyperos image build` and use the image already in image/out.
    #[arg(long)]
    no_build: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let image = repo.join("image/out");
    if !args.no_build {
        run(Command::new(&hyperos).args(["image", "build"]))?;
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.join("manifest.json")).context("reading image/out/manifest.json")?,
    )?;

    let mut report = String::new();
    report.push_str("# HyperOS benchmarks\n\n");
    report.push_str(&format!(
        "Measured {} on {} with `./x bench` (`cargo build --release -p hyperos-cli -p hyperos-bench && target/release/hyperos-bench --runs {}`).\n\n",
        today(),
        machine(),
        args.runs
    ));

    report.push_str(&size_section(&manifest));

    let state = tempfile::Builder::new()
        .prefix("hyperos-bench-")
        .tempdir()?;
    let env = |c: &mut Command| {
        c.env("HYPEROS_STATE_DIR", state.path())
            .env("HYPEROS_IMAGE_DIR", &image)
            .env("HYPEROS_KEYSTORE", "file")
            .stdin(Stdio::null());
    };
    let mut init = Command::new(&hyperos);
    init.arg("init");
    env(&mut init);
    run(&mut init)?;

    let mut rows: Vec<[f64; 5]> = Vec::new();
    let mut mem_kib: Vec<f64> = Vec::new();
    let mut accel = String::new();
    for i in 0..args.runs {
        let mut boot = Command::new(&hyperos);
        boot.args(["boot", "--name", "bench", "--json"]);
        env(&mut boot);
        let booted: serde_json::Value = serde_json::from_str(&run(&mut boot)?)?;
        accel = booted["accel"].as_str().unwrap_or("").to_owned();
        let mut first = Command::new(&hyperos);
        first.args(["run", "--name", "bench", "true"]);
        env(&mut first);
        run(&mut first)?;
        let done_ms = now_ms();
        let state_json: serde_json::Value = serde_json::from_slice(&std::fs::read(
            state.path().join("instances/bench/state.json"),
        )?)?;
        let t = &state_json["timings"];
        let at = |k: &str| {
            t[k].as_u64()
                .map(|v| v as f64)
                .context(format!("no {k} in state.json"))
        };
        let start = at("command_ms")?;
        rows.push([
            at("qemu_spawned_ms")? - start,
            at("kernel_start_ms")? - start,
            at("init_start_ms")? - start,
            at("ready_ms")? - start,
            done_ms as f64 - start,
        ]);
        if let Some(m) = state_json["guest_mem_used_kib"].as_f64() {
            mem_kib.push(m);
        }
        let mut kill = Command::new(&hyperos);
        kill.args(["kill", "bench"]);
        env(&mut kill);
        run(&mut kill)?;
        eprintln!(
            "boot {}/{}: ready after {:.0} ms",
            i + 1,
            args.runs,
            rows[i][3]
        );
    }

    report.push_str(&format!(
        "## Boot phases ({} boots, accelerator: {accel})\n\n",
        args.runs
    ));
    report.push_str("Milliseconds from the start of `hyperos boot` (host wall clock).\n\n");
    report.push_str("| phase ends when | median | p90 |\n|---|---:|---:|\n");
    let names = [
        "QEMU is spawned",
        "the guest kernel starts",
        "PID 1 (`hyperos-init`) starts",
        "SSH is ready (`hyperos boot` returns)",
        "the first command (`hyperos run true`) is done",
    ];
    for (col, name) in names.iter().enumerate() {
        let mut v: Vec<f64> = rows.iter().map(|r| r[col]).collect();
        report.push_str(&format!(
            "| {name} | {:.0} | {:.0} |\n",
            percentile(&mut v, 50.0),
            percentile(&mut v, 90.0)
        ));
    }

    let kernel = image.join("kernel");
    let floors = floor(&repo, &kernel, accel.as_str(), args.runs.min(10))?;
    let mut f = floors.clone();
    report.push_str(&format!(
        "\n## Floor: the same kernel with a trivial init\n\nA 1-file initrd whose `/init` (static busybox `poweroff -f`) powers off at once; QEMU start to QEMU exit, {} runs: median **{:.0} ms**, p90 {:.0} ms. The difference to *PID 1 starts* above is mostly unpacking the {} initrd under {accel}.\n",
        floors.len(),
        percentile(&mut f, 50.0),
        percentile(&mut f, 90.0),
        human(manifest["initrd"]["size"].as_u64().unwrap_or(0)),
    ));

    let mut m = mem_kib.clone();
    report.push_str(&format!(
        "\n## Guest memory\n\nIn use right after boot (MemTotal − MemAvailable, reported by PID 1 with `ready`), 512 MiB guest: median **{:.1} MiB** over {} boots.\n",
        percentile(&mut m, 50.0) / 1024.0,
        mem_kib.len()
    ));

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        repo.join(&args.out)
    };
    // Keep the sections other benchmarks (archive_bench) wrote.
    if let Ok(existing) = std::fs::read_to_string(&out)
        && let Some(at) = existing.find("\n## Lazy mount")
    {
        report.push_str(&existing[at..]);
    }
    std::fs::write(&out, &report)?;
    println!("{report}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn size_section(manifest: &serde_json::Value) -> String {
    let mut s = String::from("## Image size\n\n");
    let kernel = manifest["kernel"]["size"].as_u64().unwrap_or(0);
    let initrd = manifest["initrd"]["size"].as_u64().unwrap_or(0);
    s.push_str(&format!(
        "Kernel {} + initrd.gz {} = **{}** on disk (the 2016 image was 50 MB). Kernel release {}.\n\n",
        human(kernel),
        human(initrd),
        human(kernel + initrd),
        manifest["kernel_release"].as_str().unwrap_or("?")
    ));
    s.push_str("| part | files | uncompressed | share of the output |\n|---|---:|---:|---:|\n");
    if let Some(parts) = manifest["parts"].as_array() {
        for p in parts {
            s.push_str(&format!(
                "| {} | {} | {} | ~{} |\n",
                p["name"].as_str().unwrap_or("?"),
                p["entries"],
                human(p["uncompressed"].as_u64().unwrap_or(0)),
                human(p["compressed"].as_u64().unwrap_or(0)),
            ));
        }
    }
    s.push_str("\nThe share of each part in the gzip stream is estimated by compressing its files alone. The kernel is Debian's, LZ4-compressed by Debian; systemd-nspawn's bulk is `libsystemd-shared`.\n\n");
    s
}

/// Boots the kernel with an initrd whose init powers off at once.
fn floor(repo: &Path, kernel: &Path, accel: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let busybox = find_busybox(&repo.join("image/cache/staging"))
        .context("no busybox in image/cache/staging: run `hyperos image build` first")?;
    let dir = tempfile::tempdir()?;
    let initrd = dir.path().join("floor.cpio.gz");
    {
        let file = std::fs::File::create(&initrd)?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
        let mut cpio = hyperos_image::cpio::CpioWriter::new(gz, 0);
        cpio.dir("dev", 0o755)?;
        cpio.char_device("dev/console", 0o600, 5, 1)?;
        // busybox picks its applet from argv[0], which is the init's path.
        cpio.file("poweroff", 0o755, &std::fs::read(&busybox)?)?;
        cpio.finish()?.finish()?;
    }
    let accel = if accel.is_empty() { "tcg" } else { accel };
    let cpu = if accel == "tcg" { "max" } else { "host" };
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", accel, "-machine", "q35", "-cpu", cpu, "-m", "512"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(&initrd)
            // busybox picks its applet from argv[0]; the kernel passes words after `--` to init.
            .args([
                "-append",
                "console=ttyS0 quiet no_timer_check panic=-1 -- poweroff -f",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed().as_secs() > 120 {
                let _ = child.kill();
                bail!("the floor VM did not power off within 120 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        if !status.success() {
            bail!("the floor VM failed: {status}");
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

fn find_busybox(staging: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(staging).ok()?.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("busybox-static_")
        {
            for rel in ["bin/busybox", "usr/bin/busybox"] {
                let p = entry.path().join(rel);
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

fn human(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
