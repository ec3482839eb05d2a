//! The boot sequence of PID 1, up to the event loop.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use hyperos_proto::GuestEvent;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::agent::Agent;
use crate::config::{self, Settings};
use crate::error::{Context, Error, Result};
use crate::event_loop::{EventLoop, Readiness};
use crate::hostkey::{self, HOST_KEY};
use crate::log::say;
use crate::net::{self, find_interface};
use crate::process::service_command;
use crate::services::Supervisor;
use crate::{disk, identity, input, modules, mount, power, procfs};

/// How long PID 1 waits for the devices it needs after loading modules.
pub const DEVICE_WAIT: Duration = Duration::from_secs(2);
/// Pause between looks at sysfs while waiting.
const DEVICE_POLL: Duration = Duration::from_millis(10);

/// The signals PID 1 reads through its signalfd.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
    ] {
        set.add(signal);
    }
    set
}

/// Runs PID 1. Never returns.
pub fn run() -> ! {
    // With panic = "abort" a panic would kill PID 1 and panic the kernel;
    // power off cleanly instead.
    std::panic::set_hook(Box::new(|info| {
        say!("fatal: {info}");
        power::power_off()
    }));

    let failures = mount::mount_early();
    console_stdio();
    let signals = match block_signals() {
        Ok(signals) => signals,
        Err(err) => {
            say!("{}; cannot supervise anything, powering off", err.report());
            power::power_off()
        }
    };
    // Ctrl-alt-del sends PID 1 SIGINT instead of rebooting at once.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    say!("starting, uptime {} ms", procfs::uptime_ms());

    let mut problems = failures;
    problems.extend(modules::load_all());

    let mut agent = Agent::default();
    let deadline = Instant::now() + DEVICE_WAIT;
    wait_until(deadline, || agent.open());
    agent.send(&GuestEvent::Started {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_ms: procfs::uptime_ms(),
    });
    wait_until(deadline, || {
        Path::new("/sys/firmware/qemu_fw_cfg/by_name").is_dir()
    });
    wait_until(deadline, || find_interface().is_some());
    for problem in problems {
        agent.send(&GuestEvent::Error { message: problem });
    }

    let (settings, config_problems) = config::load();
    for message in config_problems {
        agent.send(&GuestEvent::Error { message });
    }
    if let Err(err) = configure_identity(&settings) {
        report(&mut agent, err);
    }

    match disk::mount_data_disk() {
        Ok(Some(device)) => say!(
            "data disk {} mounted on {}",
            device.display(),
            disk::DATA_DIR
        ),
        Ok(None) => say!("no data disk; {} is not persistent", disk::DATA_DIR),
        Err(err) => report(&mut agent, err),
    }

    if let Err(err) = identity::ensure_machine_id() {
        report(&mut agent, err);
    }

    let host_key = match hostkey::ensure() {
        Ok(key) => Some(key),
        Err(err) => {
            report(&mut agent, err);
            None
        }
    };

    let mut supervisor = Supervisor::default();
    let has_network = match start_network(&settings, &mut supervisor) {
        Ok(()) => true,
        Err(err) => {
            report(&mut agent, err);
            false
        }
    };
    supervisor.start("dropbear", || {
        let mut dropbear = service_command("/usr/sbin/dropbear");
        // -e: sessions inherit the environment `service_command` sets up
        // (PATH, and the state directory for the guest's `hyperos`).
        dropbear.args(["-F", "-E", "-e", "-s", "-g", "-p", "22", "-r", HOST_KEY]);
        dropbear
    });

    let readiness = Readiness::new(host_key, has_network);
    EventLoop::new(signals, agent, input::open_all(), supervisor, readiness).run()
}

fn report(agent: &mut Agent, err: Error) {
    agent.send(&GuestEvent::Error {
        message: err.report(),
    });
}

/// Points stdin, stdout and stderr at `/dev/console` (the kernel gives
/// PID 1 none when the initramfs has no `/dev/console` node).
fn console_stdio() {
    let Ok(console) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        // dup2 onto fds 0-2 only replaces the standard streams.
        let _ = nix::unistd::dup2(console.as_raw_fd(), fd);
    }
}

fn block_signals() -> Result<SignalFd> {
    let signals = handled_signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .context(|| "could not block signals".to_owned())?;
    SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context(|| "could not create the signalfd".to_owned())
}

/// Calls `ready` every [`DEVICE_POLL`] until it says yes or `deadline` passes.
fn wait_until(deadline: Instant, mut ready: impl FnMut() -> bool) -> bool {
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(DEVICE_POLL);
    }
}

fn configure_identity(settings: &Settings) -> Result<()> {
    identity::set_hostname(&settings.hostname)?;
    if settings.authorized_keys.is_empty() {
        say!("no SSH keys were given: nobody can log in");
    }
    identity::write_authorized_keys(&settings.authorized_keys)
}

fn start_network(settings: &Settings, supervisor: &mut Supervisor) -> Result<()> {
    net::ip(&["link", "set", "lo", "up"])?;
    let interface = find_interface()
        .ok_or_else(|| Error::msg("no network interface appeared; the guest is offline"))?;
    net::ip(&["link", "set", &interface, "up"])?;
    let hostname = settings.hostname.clone();
    supervisor.start("udhcpc", move || net::udhcpc(&interface, &hostname));
    Ok(())
}
