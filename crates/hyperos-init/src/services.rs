//! Supervision of the long-running services (udhcpc, dropbear).
//!
//! A service that exits is restarted after a back-off that doubles from
//! [`MIN_BACKOFF`] to [`MAX_BACKOFF`] and resets once the service has stayed
//! up for [`STABLE_AFTER`]. Nothing restarts once shutdown has begun.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::log::say;

pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One supervised service.
struct Service {
    name: &'static str,
    make: Box<dyn Fn() -> Command>,
    pid: Option<Pid>,
    started_at: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

/// The services PID 1 keeps running.
#[derive(Default)]
pub struct Supervisor {
    services: Vec<Service>,
    stopping: bool,
}

/// The next back-off after a service that ran for `ran` died.
pub fn next_backoff(previous: Duration, ran: Duration) -> Duration {
    if ran >= STABLE_AFTER {
        MIN_BACKOFF
    } else {
        (previous * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
    }
}

impl Supervisor {
    /// Adds a service and starts it; `make` builds its command afresh for
    /// every start.
    pub fn start(&mut self, name: &'static str, make: impl Fn() -> Command + 'static) {
        let mut service = Service {
            name,
            make: Box::new(make),
            pid: None,
            started_at: Instant::now(),
            backoff: Duration::ZERO,
            restart_at: None,
        };
        spawn(&mut service);
        self.services.push(service);
    }

    /// Called for every reaped child: schedules the restart of a service.
    pub fn child_exited(&mut self, pid: Pid, how: &str) {
        let stopping = self.stopping;
        let Some(service) = self.services.iter_mut().find(|s| s.pid == Some(pid)) else {
            return;
        };
        service.pid = None;
        if stopping {
            return;
        }
        service.backoff = next_backoff(service.backoff, service.started_at.elapsed());
        service.restart_at = Some(Instant::now() + service.backoff);
        say!(
            "{} (pid {pid}) {how}; restarting in {} ms",
            service.name,
            service.backoff.as_millis()
        );
    }

    /// Restarts the services whose back-off has passed.
    pub fn restart_due(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        for service in &mut self.services {
            if service.restart_at.is_some_and(|at| at <= now) {
                spawn(service);
            }
        }
    }

    /// When the next restart is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services.iter().filter_map(|s| s.restart_at).min()
    }

    /// Stops restarting and sends every running service `signal`.
    pub fn signal_all(&mut self, signal: Signal) {
        self.stopping = true;
        for service in &self.services {
            if let Some(pid) = service.pid {
                let _ = kill(pid, signal);
            }
        }
    }

    /// Whether any service still runs (not yet reaped).
    pub fn any_running(&self) -> bool {
        self.services.iter().any(|s| s.pid.is_some())
    }
}

fn spawn(service: &mut Service) {
    service.restart_at = None;
    service.started_at = Instant::now();
    match (service.make)().spawn() {
        Ok(child) => {
            // The child is reaped by PID 1's waitpid(-1) loop, not through
            // this handle; dropping it neither waits nor kills.
            let pid = Pid::from_raw(child.id() as i32);
            say!("started {} (pid {pid})", service.name);
            service.pid = Some(pid);
        }
        Err(err) => {
            service.backoff = next_backoff(service.backoff, Duration::ZERO);
            service.restart_at = Some(Instant::now() + service.backoff);
            say!(
                "could not start {}: {err}; retrying in {} ms",
                service.name,
                service.backoff.as_millis()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut backoff = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..9 {
            backoff = next_backoff(backoff, Duration::from_secs(1));
            seen.push(backoff.as_millis());
        }
        assert_eq!(
            seen,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(next_backoff(MAX_BACKOFF, STABLE_AFTER), MIN_BACKOFF);
    }
}
