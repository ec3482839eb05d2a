//! PID 1's event loop: one `poll` over the signalfd, the agent port and the
//! input devices, with timeouts for the few timed things (service restarts,
//! the SSH probe, the lease wait, the agent port's re-checks).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use hyperos_proto::{GuestEvent, HostCommand, Lease};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::agent::Agent;
use crate::log::say;
use crate::net::read_lease;
use crate::services::Supervisor;
use crate::{input, power, procfs};

/// How long `ready` waits for a DHCP lease once SSH is up.
pub const LEASE_WAIT: Duration = Duration::from_secs(30);
/// How long dropbear gets to accept connections before PID 1 reports it.
pub const SSH_WAIT: Duration = Duration::from_secs(30);
/// Pause between connection attempts to dropbear.
const SSH_PROBE_EVERY: Duration = Duration::from_millis(50);
/// Pause between looks for an agent port that hasn't appeared.
const PORT_SCAN_EVERY: Duration = Duration::from_secs(1);

/// The conditions of the `ready` event.
pub struct Readiness {
    host_key: Option<String>,
    lease: Option<Lease>,
    started: Instant,
    lease_deadline: Instant,
    ssh_accepting: bool,
    ssh_next_probe: Instant,
    ssh_reported: bool,
    sent: bool,
}

impl Readiness {
    /// `has_network`: whether a DHCP client runs, so a lease is worth waiting for.
    pub fn new(host_key: Option<String>, has_network: bool) -> Self {
        let now = Instant::now();
        Readiness {
            host_key,
            lease: None,
            started: now,
            lease_deadline: if has_network { now + LEASE_WAIT } else { now },
            ssh_accepting: false,
            ssh_next_probe: now,
            ssh_reported: false,
            sent: false,
        }
    }

    /// Probes SSH when due and sends `ready` once its conditions hold.
    fn advance(&mut self, now: Instant, agent: &mut Agent) {
        if self.sent {
            return;
        }
        if !self.ssh_accepting && now >= self.ssh_next_probe {
            let ssh = SocketAddr::from((Ipv4Addr::LOCALHOST, 22));
            self.ssh_accepting =
                TcpStream::connect_timeout(&ssh, Duration::from_millis(200)).is_ok();
            self.ssh_next_probe = Instant::now() + SSH_PROBE_EVERY;
            if !self.ssh_accepting && !self.ssh_reported && now >= self.started + SSH_WAIT {
                self.ssh_reported = true;
                agent.send(&GuestEvent::Error {
                    message: format!(
                        "dropbear accepts no connections on port 22 after {SSH_WAIT:?}"
                    ),
                });
            }
        }
        if !self.ssh_accepting || (self.lease.is_none() && now < self.lease_deadline) {
            return;
        }
        self.sent = true;
        if self.lease.is_none() {
            agent.send(&GuestEvent::Error {
                message: "no DHCP lease yet: the guest may be unreachable over the network".into(),
            });
        }
        let Some(host_key) = self.host_key.clone() else {
            say!("not sending ready: the SSH host key is unknown");
            return;
        };
        let (mem_used_kib, mem_total_kib) = procfs::memory_kib();
        agent.send(&GuestEvent::Ready {
            host_key,
            uptime_ms: procfs::uptime_ms(),
            mem_used_kib,
            mem_total_kib,
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.sent {
            None
        } else if !self.ssh_accepting {
            Some(self.ssh_next_probe)
        } else if self.lease.is_none() {
            Some(self.lease_deadline)
        } else {
            Some(Instant::now())
        }
    }
}

/// What PID 1 waits on once booted.
pub struct EventLoop {
    signals: SignalFd,
    agent: Agent,
    inputs: Vec<File>,
    supervisor: Supervisor,
    readiness: Readiness,
    next_port_scan: Instant,
}

impl EventLoop {
    pub fn new(
        signals: SignalFd,
        agent: Agent,
        inputs: Vec<File>,
        supervisor: Supervisor,
        readiness: Readiness,
    ) -> Self {
        EventLoop {
            signals,
            agent,
            inputs,
            supervisor,
            readiness,
            next_port_scan: Instant::now(),
        }
    }

    /// Serves until something asks for power off, then shuts down.
    pub fn run(mut self) -> ! {
        say!(
            "event loop: {} input device(s), agent channel {}",
            self.inputs.len(),
            if self.agent.is_open() {
                "open"
            } else {
                "not found yet"
            }
        );
        let reason = loop {
            if let Some(reason) = self.turn() {
                break reason;
            }
        };
        say!("shutting down: {reason}");
        power::shutdown(reason, &mut self.agent, &mut self.supervisor)
    }

    /// One round of the loop; `Some(reason)` to power off.
    fn turn(&mut self) -> Option<&'static str> {
        let now = Instant::now();
        self.supervisor.restart_due(now);
        self.readiness.advance(now, &mut self.agent);
        if !self.agent.is_open() && now >= self.next_port_scan {
            self.agent.open();
            self.next_port_scan = now + PORT_SCAN_EVERY;
        }

        let deadline = [
            self.supervisor.next_deadline(),
            self.agent.next_deadline(),
            self.readiness.next_deadline(),
            (!self.agent.is_open()).then_some(self.next_port_scan),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                // Round up, so the loop doesn't spin through the last millisecond.
                PollTimeout::from(u16::try_from(ms + 1).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };

        let (signal_ready, agent_ready, inputs_ready) = {
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let agent_index = self
                .agent
                .poll_interest(Instant::now())
                .map(|(fd, want_write)| {
                    let mut flags = PollFlags::POLLIN;
                    if want_write {
                        flags |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(fd, flags));
                    fds.len() - 1
                });
            let inputs_start = fds.len();
            fds.extend(
                self.inputs
                    .iter()
                    .map(|device| PollFd::new(device.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return None,
                Err(err) => {
                    say!("poll failed: {err}");
                    std::thread::sleep(Duration::from_millis(100));
                    return None;
                }
            }
            let revents = |fd: &PollFd<'_>| fd.revents().unwrap_or(PollFlags::empty());
            (
                revents(&fds[0]).contains(PollFlags::POLLIN),
                agent_index.map(|i| revents(&fds[i])),
                fds[inputs_start..].iter().map(revents).collect::<Vec<_>>(),
            )
        };

        let mut reason = None;
        if signal_ready {
            reason = self.on_signals();
        }
        if let Some(flags) = agent_ready {
            let commands = self.agent.on_ready(
                flags.contains(PollFlags::POLLIN),
                flags.contains(PollFlags::POLLOUT),
                flags.contains(PollFlags::POLLHUP),
            );
            for command in commands {
                match command {
                    HostCommand::Poweroff => reason = reason.or(Some("poweroff")),
                }
            }
        }
        let mut gone = Vec::new();
        for (index, flags) in inputs_ready.into_iter().enumerate() {
            if flags.contains(PollFlags::POLLIN) && input::power_pressed(&mut self.inputs[index]) {
                say!("power button pressed");
                reason = reason.or(Some("acpi"));
            }
            if flags.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                gone.push(index);
            }
        }
        for index in gone.into_iter().rev() {
            self.inputs.remove(index);
        }
        reason
    }

    fn on_signals(&mut self) -> Option<&'static str> {
        let mut reason = None;
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match signal {
                Signal::SIGCHLD => {
                    power::reap(&mut self.supervisor);
                }
                Signal::SIGHUP => self.on_lease_changed(),
                // busybox reboot; a reboot would only bring back a blank VM.
                Signal::SIGTERM => reason = reason.or(Some("signal")),
                // ctrl-alt-del
                Signal::SIGINT => reason = reason.or(Some("reboot")),
                // busybox halt, poweroff; a UPS-style power failure
                Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGPWR => {
                    reason = reason.or(Some("poweroff"));
                }
                other => say!("ignored {other}"),
            }
        }
        reason
    }

    fn on_lease_changed(&mut self) {
        match read_lease() {
            Some(lease) => {
                self.agent.send(&GuestEvent::Lease(lease.clone()));
                self.readiness.lease = Some(lease);
            }
            None => say!("SIGHUP without a readable lease file"),
        }
    }
}
