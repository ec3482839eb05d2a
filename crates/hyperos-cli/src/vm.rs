//! The VM commands: init, boot, status, ip, pid, ssh, run, halt, kill, ps,
//! logs, rm, ssh-config, and the hidden supervisor.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use hyperos_ssh::{Endpoint, Session, UserKey};
use hyperos_vm::accel::Accel;
use hyperos_vm::instance::{self, DEFAULT_NAME, InstanceSpec, NetMode};
use hyperos_vm::manager::BootRequest;
use hyperos_vm::{Manager, Phase, StateDir, Status, VmError};
use serde::Serialize;

use crate::output;

/// Default seconds to wait for a boot: generous enough for emulation.
const DEFAULT_BOOT_TIMEOUT: u64 = 120;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Replace an existing key.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    /// The instance.
    #[arg(value_name = "NAME", env = "HYPEROS_INSTANCE", default_value = DEFAULT_NAME)]
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// Instance name.
    #[arg(short, long, env = "HYPEROS_INSTANCE", default_value = DEFAULT_NAME)]
    name: String,
    /// Guest memory: MiB, or with a unit (512M, 1G).
    #[arg(short, long)]
    memory: Option<String>,
    /// Virtual CPUs.
    #[arg(short, long)]
    cpus: Option<u32>,
    /// Guest hostname (default: random and memorable, kept across boots).
    #[arg(long)]
    hostname: Option<String>,
    /// user: rootless, SSH forwarded to localhost; bridged: on a host bridge.
    #[arg(long, value_name = "user|bridged")]
    net: Option<NetMode>,
    /// Host bridge for --net bridged (Linux; allow it in /etc/qemu/bridge.conf).
    #[arg(long, value_name = "BRIDGE")]
    bridge: Option<String>,
    /// The DHCP server's lease file to find the guest's IP in (--net bridged).
    #[arg(long, value_name = "PATH")]
    lease_file: Option<PathBuf>,
    /// Localhost port for the guest's SSH (--net user; default: a free one).
    #[arg(long, value_name = "PORT")]
    ssh_port: Option<u16>,
    /// Kernel to boot (default: the built HyperOS image).
    #[arg(long, value_name = "PATH", requires = "initrd")]
    kernel: Option<PathBuf>,
    /// initrd to boot.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Pass hostname and key on the kernel command line (`host=… sshkey="…"`)
    /// as the 2016 design did, instead of fw_cfg.
    #[arg(long)]
    legacy_cmdline: bool,
    /// Size of the persistent data disk (sparse), e.g. 8G; 0 for none.
    #[arg(long, value_name = "SIZE")]
    disk: Option<String>,
    /// Seconds to wait until SSH is ready.
    #[arg(long, default_value_t = DEFAULT_BOOT_TIMEOUT)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    name: NameArg,
    /// Keep printing every change.
    #[arg(short, long)]
    watch: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SshArgs {
    #[command(flatten)]
    name: NameArg,
    /// Force a PTY even for a command (-t), or never (-T).
    #[arg(short = 't', overrides_with = "no_tty")]
    tty: bool,
    #[arg(short = 'T')]
    no_tty: bool,
    /// Command to run instead of a login shell.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct HaltArgs {
    #[command(flatten)]
    name: NameArg,
    /// Seconds to wait before killing the VM.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    name: NameArg,
    /// QEMU's own output instead of the guest console.
    #[arg(long, conflicts_with = "supervisor")]
    qemu: bool,
    /// The supervisor's log instead of the guest console.
    #[arg(long)]
    supervisor: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    name: NameArg,
    /// Don't ask (containers); halt it first if it is running (VMs).
    #[arg(short, long)]
    force: bool,
    /// Remove the VM instance NAME even if a container has that name too.
    #[arg(long)]
    vm: bool,
}

#[derive(Debug, clap::Args)]
pub struct SshConfigArgs {
    #[command(flatten)]
    name: NameArg,
    /// Also write the private key to a 0600 file for OpenSSH (when it lives in the keychain).
    #[arg(long)]
    write_key: bool,
}

#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    qemu: PathBuf,
    #[arg(long)]
    accel: Accel,
    #[arg(long)]
    command_ms: Option<u64>,
}

fn manager(state_dir: Option<PathBuf>) -> anyhow::Result<Manager> {
    Ok(Manager::new(StateDir::resolve(state_dir)?))
}

pub fn init(state_dir: Option<PathBuf>, args: InitArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    let out = hyperos_ssh::keys::init(&state.keys_dir(), args.force)?;
    if out.created {
        println!("Created an ed25519 SSH key, kept in {}.", out.key.store);
        if let Some(why) = out.fallback_reason {
            println!("  (not in a keychain: {why})");
        }
    } else {
        println!(
            "Your SSH key already exists, kept in {} (--force replaces it).",
            out.key.store
        );
    }
    println!("  public key: {}", out.key.public_openssh());
    println!("  fingerprint: {}", out.key.fingerprint());
    Ok(0)
}

#[derive(Serialize)]
struct BootedJson<'a> {
    name: &'a str,
    hostname: &'a str,
    ip: Option<&'a str>,
    ssh_host: String,
    ssh_port: u16,
    pid: Option<u32>,
    accel: &'a str,
    host_key_fingerprint: Option<String>,
}

pub fn boot(state_dir: Option<PathBuf>, args: BootArgs) -> anyhow::Result<i32> {
    let command_ms = hyperos_vm::state::now_ms();
    let state = StateDir::resolve(state_dir)?;
    let manager = Manager::new(state.clone());
    let public_key = match hyperos_ssh::keys::public_key(&state.keys_dir()) {
        Ok(k) => k,
        Err(hyperos_ssh::SshError::NoKey) => {
            eprintln!("No SSH key yet; creating one (as `hyperos init` would).");
            init(Some(state.root().to_owned()), InitArgs { force: false })?;
            hyperos_ssh::keys::public_key(&state.keys_dir())?
        }
        Err(e) => return Err(e.into()),
    };
    let (kernel, initrd) = match (args.kernel, args.initrd) {
        (Some(k), Some(i)) => (k, i),
        _ => {
            let dir = crate::image::default_image_dir();
            (dir.join("kernel"), dir.join("initrd.gz"))
        }
    };
    let memory_mib = args
        .memory
        .as_deref()
        .map(instance::parse_memory)
        .transpose()?;
    let disk_bytes = args.disk.as_deref().map(parse_size).transpose()?;
    let request = BootRequest {
        name: args.name.clone(),
        hostname: args.hostname,
        memory_mib,
        cpus: args.cpus,
        net: args.net,
        kernel,
        initrd,
        ssh_port: args.ssh_port,
        bridge: args.bridge,
        lease_file: args.lease_file,
        authorized_keys: vec![public_key],
        legacy_cmdline: args.legacy_cmdline,
        disk_bytes,
        timeout: Duration::from_secs(args.timeout),
    };
    if !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("Booting {}…", args.name);
    }
    let launcher = hyperos_vm::launcher::SelfExec::current(state.root(), command_ms)?;
    let booted = manager.boot(request, &launcher)?;
    if let Some(warning) = &booted.accel_warning {
        eprintln!("warning: {warning}");
    }
    let (ssh_host, ssh_port) = ssh_target(&booted.spec, &booted.status)?;
    let accel = booted
        .status
        .record
        .as_ref()
        .map(|r| r.accel.as_str())
        .unwrap_or("");
    if args.json {
        output::json(&BootedJson {
            name: &booted.spec.name,
            hostname: &booted.spec.hostname,
            ip: booted.status.ip(),
            ssh_host,
            ssh_port,
            pid: booted.status.qemu_pid(),
            accel,
            host_key_fingerprint: host_fingerprint(&booted.status),
        })?;
    } else {
        let took = booted
            .status
            .record
            .as_ref()
            .and_then(|r| r.timings.ready_ms)
            .map(|t| format!(" in {:.1} s", t.saturating_sub(command_ms) as f64 / 1000.0))
            .unwrap_or_default();
        println!("HyperOS has booted{took} ({accel}):");
        println!("  name      {}", booted.spec.name);
        println!("  hostname  {}", booted.spec.hostname);
        println!("  ip        {}", booted.status.ip().unwrap_or("-"));
        println!("  ssh       {ssh_host}:{ssh_port}");
        println!(
            "  pid       {}",
            booted
                .status
                .qemu_pid()
                .map_or("-".into(), |p| p.to_string())
        );
        if let Some(fp) = host_fingerprint(&booted.status) {
            println!("  host key  {fp} (pinned)");
        }
        let name_arg = if booted.spec.name == DEFAULT_NAME {
            String::new()
        } else {
            format!(" {}", booted.spec.name)
        };
        println!("Log in with `hyperos ssh{name_arg}`; stop it with `hyperos halt{name_arg}`.");
    }
    Ok(0)
}

/// The fingerprint of the SSH host key the guest reported.
fn host_fingerprint(status: &Status) -> Option<String> {
    status
        .record
        .as_ref()
        .and_then(|r| r.host_key.as_deref())
        .and_then(hyperos_ssh::keys::fingerprint_of)
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let value: u64 = num
        .parse()
        .with_context(|| format!("invalid size {text:?}: use e.g. 8G or 512M"))?;
    let scale = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" | "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => bail!("invalid size {text:?}: use e.g. 8G or 512M"),
    };
    Ok(value * scale)
}

/// Host and port to reach an instance's SSH server.
fn ssh_target(spec: &InstanceSpec, status: &Status) -> anyhow::Result<(String, u16)> {
    match spec.net {
        NetMode::User => Ok((
            "127.0.0.1".into(),
            spec.ssh_port
                .context("the instance has no SSH port recorded")?,
        )),
        NetMode::Bridged => Ok((
            status
                .ip()
                .context("the instance has no IP address yet")?
                .to_owned(),
            22,
        )),
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    kind: &'static str,
    name: &'a str,
    state: Phase,
    hostname: &'a str,
    ip: Option<&'a str>,
    ssh_port: Option<u16>,
    pid: Option<u32>,
    memory_mib: u32,
    cpus: u32,
    net: NetMode,
    accel: Option<&'a str>,
    since_ms: Option<u64>,
    error: Option<&'a str>,
    host_key_fingerprint: Option<String>,
    stale: bool,
}

fn status_json<'a>(spec: &'a InstanceSpec, status: &'a Status) -> StatusJson<'a> {
    let record = status.record.as_ref();
    StatusJson {
        kind: "vm",
        name: &spec.name,
        state: status.phase,
        hostname: &spec.hostname,
        ip: status.ip(),
        ssh_port: spec.ssh_port,
        pid: status.qemu_pid(),
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        net: spec.net,
        accel: record.map(|r| r.accel.as_str()).filter(|a| !a.is_empty()),
        since_ms: record.map(|r| r.since_ms),
        error: record
            .and_then(|r| r.error.as_deref())
            .filter(|_| status.phase == Phase::Failed),
        host_key_fingerprint: host_fingerprint(status).filter(|_| status.phase.is_live()),
        stale: status.stale,
    }
}

fn status_line(spec: &InstanceSpec, status: &Status) -> String {
    let mut line = format!("{}: {}", spec.name, status.phase);
    if let Some(ip) = status.ip() {
        line.push_str(&format!(", ip {ip}"));
    }
    if let Some(pid) = status.qemu_pid() {
        line.push_str(&format!(", pid {pid}"));
    }
    if status.phase == Phase::Failed
        && let Some(err) = status.record.as_ref().and_then(|r| r.error.as_deref())
    {
        line.push_str(&format!(" ({err})"));
    }
    line
}

pub fn status(state_dir: Option<PathBuf>, args: StatusArgs) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let name = &args.name.name;
    let spec = manager.spec(name)?;
    let print = |status: &Status| -> anyhow::Result<()> {
        if args.json {
            println!("{}", serde_json::to_string(&status_json(&spec, status))?);
        } else {
            println!("{}", status_line(&spec, status));
        }
        Ok(())
    };
    if args.watch {
        let dir = manager.instance(name)?;
        let watch = hyperos_vm::watch::InstanceWatch::new(&dir)?;
        let mut failed = None;
        watch.follow(|status| {
            if let Err(e) = print(status) {
                failed = Some(e);
                return false;
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(0)
    } else {
        let status = manager.status(name)?;
        print(&status)?;
        Ok(0)
    }
}

pub fn ip(state_dir: Option<PathBuf>, args: NameArg) -> anyhow::Result<i32> {
    let status = manager(state_dir)?.status(&args.name)?;
    match status.ip() {
        Some(ip) => {
            println!("{ip}");
            Ok(0)
        }
        None if status.phase.is_live() => bail!(
            "{} has no IP address yet (it is {})",
            args.name,
            status.phase
        ),
        None => Err(VmError::NotRunning(args.name).into()),
    }
}

pub fn pid(state_dir: Option<PathBuf>, args: NameArg) -> anyhow::Result<i32> {
    let status = manager(state_dir)?.status(&args.name)?;
    match status.qemu_pid() {
        Some(pid) => {
            println!("{pid}");
            Ok(0)
        }
        None => Err(VmError::NotRunning(args.name).into()),
    }
}

/// Connects to a running instance with the user's key and the pinned host key.
fn connect(manager: &Manager, name: &str) -> anyhow::Result<(tokio::runtime::Runtime, Session)> {
    let spec = manager.spec(name)?;
    let status = manager.status(name)?;
    if status.phase != Phase::Running {
        if status.phase.is_live() {
            bail!(
                "{name} is {}, not running yet; wait for `hyperos boot` to finish",
                status.phase
            );
        }
        return Err(VmError::NotRunning(name.to_owned()).into());
    }
    let host_key = status
        .record
        .as_ref()
        .and_then(|r| r.host_key.clone())
        .context("the guest reported no SSH host key")?;
    let (host, port) = ssh_target(&spec, &status)?;
    let key: UserKey = hyperos_ssh::keys::load(&manager.state_dir().keys_dir())?;
    let endpoint = Endpoint {
        host,
        port,
        user: "root".into(),
        host_key,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let session = runtime.block_on(Session::connect(&endpoint, &key, Duration::from_secs(20)))?;
    Ok((runtime, session))
}

pub fn ssh(state_dir: Option<PathBuf>, args: SshArgs) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let (runtime, session) = connect(&manager, &args.name.name)?;
    let command =
        (!args.command.is_empty()).then(|| hyperos_ssh::client::shell_join(&args.command));
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let tty = if args.no_tty {
        false
    } else {
        args.tty || (command.is_none() && interactive)
    };
    let status = runtime.block_on(async {
        let status = session.attach(command.as_deref(), tty).await;
        session.close().await;
        status
    });
    // A read of a terminal stdin may still be blocked in tokio's blocking
    // pool; don't wait for it.
    runtime.shutdown_background();
    Ok(status? as i32)
}

/// Runs `command` in an instance with this process's stdio (a PTY with
/// `tty`) and returns its exit status: `hyperos run CMD…`, and the
/// `hyperos run` of a container sent to the guest by `--vm`.
pub fn run_command(
    state_dir: Option<PathBuf>,
    name: &str,
    command: &[String],
    tty: bool,
) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let (runtime, session) = connect(&manager, name)?;
    let command = hyperos_ssh::client::shell_join(command);
    let status = runtime.block_on(async {
        let status = session.attach(Some(&command), tty).await;
        session.close().await;
        status
    });
    runtime.shutdown_background();
    Ok(status? as i32)
}

pub fn halt(state_dir: Option<PathBuf>, args: HaltArgs) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let status = manager.halt(&args.name.name, Duration::from_secs(args.timeout))?;
    println!("{}: {}", args.name.name, status.phase);
    Ok(0)
}

pub fn kill(state_dir: Option<PathBuf>, args: NameArg) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let status = manager.kill(&args.name)?;
    println!("{}: {}", args.name, status.phase);
    Ok(0)
}

pub fn ps(state_dir: Option<PathBuf>, args: PsArgs) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let list = manager.list()?;
    let containers = hyperos_run::Containers::new(manager.state_dir().root()).list()?;
    if args.json {
        let mut rows: Vec<serde_json::Value> = list
            .iter()
            .map(|(spec, status)| serde_json::to_value(status_json(spec, status)))
            .collect::<Result<_, _>>()?;
        for container in &containers {
            let mut row = serde_json::to_value(container)?;
            row["kind"] = "container".into();
            rows.push(row);
        }
        output::json(&rows)?;
        return Ok(0);
    }
    if list.is_empty() && containers.is_empty() {
        println!("No instances; `hyperos boot` starts one.");
        return Ok(0);
    }
    if !list.is_empty() {
        println!(
            "{:<16} {:<9} {:<20} {:<15} {:<8} {:>6}",
            "NAME", "STATE", "HOSTNAME", "IP", "PID", "MEMORY"
        );
    }
    for (spec, status) in &list {
        println!(
            "{:<16} {:<9} {:<20} {:<15} {:<8} {:>5}M",
            spec.name,
            status.phase.to_string(),
            spec.hostname,
            status.ip().unwrap_or("-"),
            status.qemu_pid().map_or("-".into(), |p| p.to_string()),
            spec.memory_mib
        );
    }
    if !containers.is_empty() {
        if !list.is_empty() {
            println!();
        }
        println!("{:<16} {:<9} {:<8} SOURCE", "CONTAINER", "STATE", "PID");
        for c in &containers {
            println!(
                "{:<16} {:<9} {:<8} {}",
                c.name,
                c.state,
                c.pid.map_or("-".into(), |p| p.to_string()),
                c.source.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(0)
}

pub fn logs(state_dir: Option<PathBuf>, args: LogsArgs) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let dir = manager.instance(&args.name.name)?;
    let path = if args.qemu {
        dir.qemu_log()
    } else if args.supervisor {
        dir.supervisor_log()
    } else {
        dir.console_log()
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
            Ok(0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} has no log yet at {}", args.name.name, path.display())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn rm(state_dir: Option<PathBuf>, args: RmArgs) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let name = &args.name.name;
    let containers = hyperos_run::Containers::new(manager.state_dir().root());
    if !args.vm && containers.dir(name).path().is_dir() {
        return crate::container::rm(&containers, name, args.force);
    }
    if args.force && manager.status(name)?.phase.is_live() {
        manager.halt(name, Duration::from_secs(30))?;
    }
    manager.remove(name)?;
    println!("Removed {name}.");
    Ok(0)
}

pub fn ssh_config(state_dir: Option<PathBuf>, args: SshConfigArgs) -> anyhow::Result<i32> {
    let manager = manager(state_dir)?;
    let name = &args.name.name;
    let spec = manager.spec(name)?;
    let status = manager.status(name)?;
    let dir = manager.instance(name)?;
    let keys = manager.state_dir().keys_dir();
    let key_file = keys.join("id_ed25519");
    let key = hyperos_ssh::keys::load(&keys)?;
    if args.write_key && matches!(key.store, hyperos_ssh::KeyStore::Keychain) {
        hyperos_ssh::keys::export_private(&key, &key_file)?;
        eprintln!("Wrote the private key to {} (0600).", key_file.display());
    }
    let alias = hyperos_vm::paths::known_hosts_alias(name);
    let (host, port) = match ssh_target(&spec, &status) {
        Ok(t) => t,
        Err(_) => ("127.0.0.1".into(), spec.ssh_port.unwrap_or(22)),
    };
    println!(
        "# HyperOS instance {name} ({}); add to ~/.ssh/config",
        spec.hostname
    );
    println!("Host {alias}");
    println!("  HostName {host}");
    println!("  Port {port}");
    println!("  User root");
    println!("  HostKeyAlias {alias}");
    println!("  UserKnownHostsFile {}", dir.known_hosts().display());
    println!("  StrictHostKeyChecking yes");
    println!("  IdentitiesOnly yes");
    if key_file.exists() {
        println!("  IdentityFile {}", key_file.display());
    } else {
        println!(
            "  # The key is in the OS keychain: run `hyperos ssh-config {name} --write-key` to export it for OpenSSH."
        );
        println!("  IdentityFile {}", key_file.display());
    }
    Ok(0)
}

pub fn supervise(state_dir: Option<PathBuf>, args: SuperviseArgs) -> anyhow::Result<i32> {
    #[cfg(unix)]
    {
        let state = StateDir::resolve(state_dir)?;
        let dir = state.instance(&args.name);
        if !dir.exists() {
            return Err(VmError::UnknownInstance(args.name).into());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(hyperos_vm::supervisor::run(
            hyperos_vm::supervisor::Options {
                dir,
                qemu: args.qemu,
                accel: args.accel,
                command_ms: args.command_ms,
            },
        ))?;
        Ok(0)
    }
    #[cfg(not(unix))]
    {
        let _ = (state_dir, args);
        bail!("the VM supervisor is not available on this platform yet")
    }
}
