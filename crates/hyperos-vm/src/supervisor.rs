//! The supervisor: one process per running instance, the only writer of its
//! `state.json` and `lease.json`.
//!
//! ```text
//!                 ┌──────────── agent.sock ◀── QEMU virtio-serial ◀── guest PID 1
//!  supervisor ────┤  GuestEvent lines: started, lease, ready, stopping
//!  (tokio task)   ├──────────── QEMU child: its exit ends the supervisor
//!                 ├──────────── lease file (bridged): notify → the lease for our hostname
//!                 └──────────── SIGTERM/SIGINT: ask the guest to power off, then kill
//! ```
//!
//! It runs detached from the terminal that booted the VM (`hyperos boot`
//! starts it and returns once `state.json` says running). QEMU gets
//! `PR_SET_PDEATHSIG` on Linux, so a killed supervisor never leaves an
//! orphaned VM behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyperos_proto::agent::{self, GuestEvent, HostCommand, MAX_LINE_LEN};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::VmError;
use crate::accel::Accel;
use crate::instance::{InstanceSpec, NetMode};
use crate::lease;
use crate::paths::InstanceDir;
use crate::state::{LeaseRecord, LeaseSource, Phase, StateRecord, now_ms};

/// How long a guest gets to power off after it was asked to.
pub const POWEROFF_GRACE: Duration = Duration::from_secs(20);

/// What the supervisor is told when started.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: InstanceDir,
    pub qemu: PathBuf,
    pub accel: Accel,
    /// When `hyperos boot` was invoked, ms since the Unix epoch.
    pub command_ms: Option<u64>,
}

enum Input {
    Event(GuestEvent),
    AgentClosed,
    LeaseFileChanged,
}

/// Runs the instance until QEMU exits. Errors are also recorded in
/// `state.json` as `failed`.
pub async fn run(options: Options) -> Result<(), VmError> {
    let dir = options.dir.clone();
    let result = supervise(options).await;
    if let Err(err) = &result {
        let mut record = StateRecord::read(&dir.state())
            .ok()
            .flatten()
            .unwrap_or_else(|| StateRecord::new(Phase::Failed));
        record.phase = Phase::Failed;
        record.since_ms = now_ms();
        record.error = Some(err.to_string());
        let _ = record.write(&dir.state());
    }
    let _ = std::fs::remove_file(dir.agent_socket());
    let _ = std::fs::remove_file(dir.qmp_socket());
    result
}

async fn supervise(options: Options) -> Result<(), VmError> {
    let dir = &options.dir;
    let spec_bytes = std::fs::read(dir.spec()).map_err(VmError::io("read", dir.spec()))?;
    let spec: InstanceSpec =
        serde_json::from_slice(&spec_bytes).map_err(|source| VmError::CorruptState {
            path: dir.spec(),
            source,
        })?;
    let _span = tracing::info_span!("supervise", instance = %spec.name).entered();

    let mut record = StateRecord::new(Phase::Booting);
    record.supervisor_pid = Some(std::process::id());
    record.accel = options.accel.as_str().to_owned();
    record.timings.command_ms = options.command_ms;
    record.write(&dir.state())?;
    let _ = std::fs::remove_file(dir.lease());

    for socket in [dir.agent_socket(), dir.qmp_socket()] {
        let _ = std::fs::remove_file(&socket);
    }
    let listener = UnixListener::bind(dir.agent_socket())
        .map_err(VmError::io("listen on", dir.agent_socket()))?;

    let log =
        std::fs::File::create(dir.qemu_log()).map_err(VmError::io("create", dir.qemu_log()))?;
    let log2 = log
        .try_clone()
        .map_err(VmError::io("open", dir.qemu_log()))?;
    let mut command = tokio::process::Command::new(&options.qemu);
    command
        .args(crate::qemu::args(&spec, dir, options.accel))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(VmError::io("start", options.qemu.clone()))?;
    record.qemu_pid = child.id();
    record.timings.qemu_spawned_ms = Some(now_ms());
    record.write(&dir.state())?;
    tracing::info!(pid = ?record.qemu_pid, accel = %record.accel, "QEMU started");

    let (tx, mut rx) = mpsc::channel::<Input>(64);
    let _lease_watcher = match spec.net {
        NetMode::Bridged => Some(watch_lease_file(&spec, tx.clone())?),
        NetMode::User => None,
    };
    if spec.net == NetMode::Bridged {
        let _ = tx.try_send(Input::LeaseFileChanged);
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(VmError::io("handle signals for", dir.path()))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(VmError::io("handle signals for", dir.path()))?;

    let boot_deadline = Instant::now() + Duration::from_secs(spec.boot_timeout_secs.max(1));
    let mut kill_deadline: Option<Instant> = None;
    let mut agent_writer: Option<OwnedWriteHalf> = None;
    let mut ready = false;
    let mut have_lease = false;
    let mut started_uptime_ms: Option<u64> = None;

    let exit = loop {
        let deadline = if record.phase == Phase::Booting {
            Some(boot_deadline)
        } else {
            kill_deadline
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => {
                break status.map_err(VmError::io("wait for", options.qemu.clone()))?;
            }
            accepted = listener.accept(), if agent_writer.is_none() => {
                let (stream, _) = accepted.map_err(VmError::io("accept on", dir.agent_socket()))?;
                let (read, write) = stream.into_split();
                agent_writer = Some(write);
                tokio::spawn(read_agent(read, tx.clone()));
            }
            Some(input) = rx.recv() => match input {
                Input::Event(event) => {
                    handle_event(&event, dir, &spec, &mut record, &mut ready, &mut have_lease, &mut started_uptime_ms)?;
                }
                Input::AgentClosed => tracing::debug!("agent channel closed"),
                Input::LeaseFileChanged => {
                    if let Some(found) = read_lease_file(&spec)
                        && (!have_lease || LeaseRecord::read(&dir.lease())?.map(|l| l.ip) != Some(found.ip.clone())) {
                            tracing::info!(ip = %found.ip, "lease found in the DHCP server's lease file");
                            LeaseRecord {
                                ip: found.ip,
                                lease_secs: found.expires.map(|e| e.saturating_sub(now_ms() / 1000)),
                                source: LeaseSource::LeaseFile,
                                at_ms: now_ms(),
                            }
                            .write(&dir.lease())?;
                            have_lease = true;
                        }
                }
            },
            _ = sigterm.recv() => {
                request_poweroff(dir, &mut agent_writer, &mut record).await?;
                kill_deadline = Some(Instant::now() + POWEROFF_GRACE);
            }
            _ = sigint.recv() => {
                request_poweroff(dir, &mut agent_writer, &mut record).await?;
                kill_deadline = Some(Instant::now() + POWEROFF_GRACE);
            }
            () = sleep => {
                if record.phase == Phase::Booting {
                    tracing::warn!("the guest was not ready in time; stopping it");
                    record.error = Some(format!("the guest was not ready within {} s", spec.boot_timeout_secs));
                } else {
                    tracing::warn!("the guest did not power off in time; killing it");
                }
                let _ = child.start_kill();
                let status = child.wait().await.map_err(VmError::io("wait for", options.qemu.clone()))?;
                break status;
            }
        }
        if record.phase == Phase::Booting && ready && have_lease {
            record.phase = Phase::Running;
            record.since_ms = now_ms();
            record.write(&dir.state())?;
            tracing::info!("running");
        }
    };

    let was = record.phase;
    record.since_ms = now_ms();
    record.qemu_pid = None;
    record.phase = match (was, exit.code()) {
        (Phase::Booting, _) => {
            if record.error.is_none() {
                record.error = Some(format!(
                    "QEMU exited ({exit}) before the guest was ready{}",
                    last_line(&dir.qemu_log())
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                ));
            }
            Phase::Failed
        }
        (Phase::Running, Some(code)) if code != 0 => {
            record.error = Some(format!("QEMU exited with status {code}"));
            Phase::Failed
        }
        _ => Phase::Stopped,
    };
    if record.phase == Phase::Stopped && exit.code().is_none() {
        record.error = Some(format!("QEMU was killed ({exit})"));
    }
    let _ = std::fs::remove_file(dir.lease());
    record.write(&dir.state())?;
    tracing::info!(phase = %record.phase, %exit, "QEMU exited");
    Ok(())
}

fn handle_event(
    event: &GuestEvent,
    dir: &InstanceDir,
    spec: &InstanceSpec,
    record: &mut StateRecord,
    ready: &mut bool,
    have_lease: &mut bool,
    started_uptime_ms: &mut Option<u64>,
) -> Result<(), VmError> {
    tracing::info!(?event, "guest event");
    match event {
        GuestEvent::Started { uptime_ms, .. } => *started_uptime_ms = Some(*uptime_ms),
        GuestEvent::Lease(l) => {
            // On a bridge the host's lease file is the source of truth.
            if spec.net == NetMode::User {
                LeaseRecord {
                    ip: l.ip.clone(),
                    lease_secs: Some(l.lease_secs),
                    source: LeaseSource::Guest,
                    at_ms: now_ms(),
                }
                .write(&dir.lease())?;
                *have_lease = true;
            }
        }
        GuestEvent::Ready {
            host_key,
            uptime_ms,
            mem_used_kib,
            ..
        } => {
            let now = now_ms();
            let kernel_start = now.saturating_sub(*uptime_ms);
            record.timings.kernel_start_ms = Some(kernel_start);
            record.timings.init_start_ms = started_uptime_ms.map(|u| kernel_start + u);
            record.timings.ready_ms = Some(now);
            record.guest_mem_used_kib = Some(*mem_used_kib);
            let key = host_key
                .split_ascii_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            crate::paths::write_atomic(
                &dir.known_hosts(),
                format!("{} {key}\n", crate::paths::known_hosts_alias(&spec.name)).as_bytes(),
            )?;
            record.host_key = Some(key);
            *ready = true;
            record.write(&dir.state())?;
        }
        GuestEvent::Stopping { reason } => {
            tracing::info!(%reason, "guest is stopping");
            record.phase = Phase::Stopping;
            record.since_ms = now_ms();
            record.write(&dir.state())?;
        }
        GuestEvent::Error { message } => tracing::warn!(%message, "guest reported an error"),
    }
    Ok(())
}

async fn request_poweroff(
    dir: &InstanceDir,
    agent: &mut Option<OwnedWriteHalf>,
    record: &mut StateRecord,
) -> Result<(), VmError> {
    tracing::info!("asking the guest to power off");
    if record.phase != Phase::Stopping {
        record.phase = Phase::Stopping;
        record.since_ms = now_ms();
        record.write(&dir.state())?;
    }
    let sent = match agent {
        Some(w) => w
            .write_all(&agent::encode(&HostCommand::Poweroff))
            .await
            .is_ok(),
        None => false,
    };
    if !sent {
        let qmp = dir.qmp_socket();
        let _ = tokio::task::spawn_blocking(move || crate::qmp::execute(&qmp, "system_powerdown"))
            .await;
    }
    Ok(())
}

async fn read_agent(read: tokio::net::unix::OwnedReadHalf, tx: mpsc::Sender<Input>) {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bound each line: a guest can't make the host buffer without limit.
        let mut limited = (&mut reader).take(MAX_LINE_LEN as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE_LEN {
            tracing::warn!("dropping an over-long agent line");
            // Skip the rest of it.
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).await.is_err() {
                break;
            }
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(event) = agent::decode::<GuestEvent>(text)
            && tx.send(Input::Event(event)).await.is_err()
        {
            return;
        }
    }
    let _ = tx.send(Input::AgentClosed).await;
}

fn lease_file(spec: &InstanceSpec) -> PathBuf {
    spec.lease_file
        .clone()
        .unwrap_or_else(lease::default_lease_file)
}

fn read_lease_file(spec: &InstanceSpec) -> Option<lease::ServerLease> {
    let text = std::fs::read_to_string(lease_file(spec)).ok()?;
    lease::find(&lease::parse(&text), &spec.hostname, now_ms() / 1000)
}

/// Watches the lease file's directory (the file may not exist yet, and DHCP
/// servers replace it by renaming).
fn watch_lease_file(
    spec: &InstanceSpec,
    tx: mpsc::Sender<Input>,
) -> Result<notify::RecommendedWatcher, VmError> {
    use notify::Watcher;
    let file = lease_file(spec);
    let parent = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| p.file_name() == name.as_deref())
        {
            let _ = tx.try_send(Input::LeaseFileChanged);
        }
    })
    .map_err(|source| VmError::Watch {
        path: parent.clone(),
        source,
    })?;
    watcher
        .watch(&parent, notify::RecursiveMode::NonRecursive)
        .map_err(|source| VmError::Watch {
            path: parent.clone(),
            source,
        })?;
    Ok(watcher)
}

fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}
