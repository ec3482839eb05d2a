//! Shutdown: stop everything, unmount, power off.
//!
//! Reboot is never offered: the root is an initramfs, so a rebooted guest
//! would come back as the same fresh VM under a host that thinks it stopped.
//! Every way of stopping — `poweroff`, `halt`, `reboot`, ctrl-alt-del, the
//! ACPI button, the host's command — powers the VM off.

use std::time::{Duration, Instant};

use hyperos_proto::GuestEvent;
use nix::errno::Errno;
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, sync};

use crate::agent::Agent;
use crate::log::say;
use crate::mount::unmount_all;
use crate::services::Supervisor;

/// How long services get between SIGTERM and SIGKILL.
pub const SERVICE_GRACE: Duration = Duration::from_secs(3);
/// How long every other process gets.
pub const OTHERS_GRACE: Duration = Duration::from_secs(1);
/// How long the host gets to read the `stopping` event.
pub const AGENT_GRACE: Duration = Duration::from_millis(300);

/// What [`reap`] found.
pub enum Reaped {
    /// No child is left.
    NoChildren,
    /// Some children still run.
    SomeRunning,
}

/// Reaps every exited child, telling the supervisor about its services.
pub fn reap(supervisor: &mut Supervisor) -> Reaped {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                supervisor.child_exited(pid, &format!("exited with status {code}"));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                supervisor.child_exited(pid, &format!("was killed by {signal}"));
            }
            Ok(WaitStatus::StillAlive) => return Reaped::SomeRunning,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return Reaped::NoChildren,
        }
    }
}

/// Powers the VM off. Never returns.
pub fn shutdown(reason: &str, agent: &mut Agent, supervisor: &mut Supervisor) -> ! {
    agent.send(&GuestEvent::Stopping {
        reason: reason.to_owned(),
    });
    agent.drain(AGENT_GRACE);

    supervisor.signal_all(Signal::SIGTERM);
    let deadline = Instant::now() + SERVICE_GRACE;
    while supervisor.any_running() && Instant::now() < deadline {
        reap(supervisor);
        std::thread::sleep(Duration::from_millis(20));
    }
    if supervisor.any_running() {
        say!("services still running after {SERVICE_GRACE:?}; killing them");
        supervisor.signal_all(Signal::SIGKILL);
    }

    // Everything else: dropbear's sessions, orphans. PID 1 is spared by kill(-1).
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + OTHERS_GRACE;
    while Instant::now() < deadline {
        if let Reaped::NoChildren = reap(supervisor) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let deadline = Instant::now() + OTHERS_GRACE;
    while Instant::now() < deadline {
        if let Reaped::NoChildren = reap(supervisor) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    power_off()
}

/// Syncs, unmounts everything and powers off. Never returns: should the
/// kernel refuse, PID 1 sleeps rather than exit (which would panic it).
pub fn power_off() -> ! {
    sync();
    unmount_all();
    sync();
    say!("powering off");
    let err = reboot(RebootMode::RB_POWER_OFF);
    say!("power off failed: {err:?}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
