//! The agent channel: the virtio-serial port [`AGENT_PORT_NAME`].
//!
//! PID 1 never blocks on it. The port is non-blocking; what can't be
//! written yet waits in a bounded outbox, flushed when poll says the port
//! is writable, and a message that doesn't fit is dropped (and logged).
//! While no host program has the port's other end open, the kernel reports
//! `POLLHUP` continuously, so the port then leaves the poll set and is
//! looked at again every [`HUP_RECHECK`].
//!
//! Every event is also logged to the console.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyperos_proto::agent::{MAX_LINE_LEN, decode, encode};
use hyperos_proto::{AGENT_PORT_NAME, GuestEvent, HostCommand};

use crate::log::say;

/// Most bytes waiting for the host.
pub const MAX_OUTBOX: usize = 64 * 1024;
/// How often a port whose host end is closed is looked at again.
pub const HUP_RECHECK: Duration = Duration::from_millis(500);

/// Splits a byte stream into lines of at most [`MAX_LINE_LEN`] bytes; a
/// longer line is dropped whole.
#[derive(Debug, Default)]
pub struct LineReader {
    partial: Vec<u8>,
    overlong: bool,
}

impl LineReader {
    /// Takes newly read bytes and returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let (chunk, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], true),
                None => (bytes, false),
            };
            bytes = &bytes[(chunk.len() + usize::from(complete)).min(bytes.len())..];
            if !self.overlong {
                if self.partial.len() + chunk.len() > MAX_LINE_LEN {
                    self.overlong = true;
                    self.partial.clear();
                } else {
                    self.partial.extend_from_slice(chunk);
                }
            }
            if complete {
                if !std::mem::take(&mut self.overlong) {
                    lines.push(std::mem::take(&mut self.partial));
                }
                self.partial.clear();
            }
        }
        lines
    }
}

/// Whether a virtio-ports `name` file names the agent port.
pub fn is_agent_port(name: &str) -> bool {
    name.trim_end() == AGENT_PORT_NAME
}

/// The agent port's device (`/dev/vportNpM`), if it has appeared.
pub fn find_port() -> Option<PathBuf> {
    std::fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_to_string(entry.path().join("name"))
                .is_ok_and(|name| is_agent_port(&name))
        })
        .map(|entry| PathBuf::from("/dev").join(entry.file_name()))
}

/// PID 1's end of the agent channel.
#[derive(Default)]
pub struct Agent {
    port: Option<File>,
    outbox: Vec<u8>,
    reader: LineReader,
    hup_until: Option<Instant>,
}

impl Agent {
    /// Opens the port if it has appeared. Returns whether it is open.
    pub fn open(&mut self) -> bool {
        if self.port.is_some() {
            return true;
        }
        let Some(path) = find_port() else {
            return false;
        };
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => {
                say!("agent channel on {}", path.display());
                self.port = Some(file);
                self.flush();
                true
            }
            Err(err) => {
                say!("could not open the agent port {}: {err}", path.display());
                false
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.port.is_some()
    }

    /// Logs an event and sends it to the host without blocking.
    pub fn send(&mut self, event: &GuestEvent) {
        let line = encode(event);
        say!("{}", String::from_utf8_lossy(&line[..line.len() - 1]));
        if self.outbox.len() + line.len() > MAX_OUTBOX {
            say!("the agent channel is backed up; event dropped");
            return;
        }
        self.outbox.extend_from_slice(&line);
        self.flush();
    }

    /// Writes what the port takes now; the rest waits for `POLLOUT`.
    pub fn flush(&mut self) {
        let Some(port) = &mut self.port else {
            return;
        };
        while !self.outbox.is_empty() {
            match port.write(&self.outbox) {
                Ok(0) => break,
                Ok(written) => {
                    self.outbox.drain(..written);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => {
                    say!(
                        "writing to the agent channel failed, {} bytes dropped: {err}",
                        self.outbox.len()
                    );
                    self.outbox.clear();
                }
            }
        }
    }

    /// The port and the events to poll it for, or `None` when it should sit
    /// this round out.
    pub fn poll_interest(&self, now: Instant) -> Option<(BorrowedFd<'_>, bool)> {
        if self.hup_until.is_some_and(|until| now < until) {
            return None;
        }
        let port = self.port.as_ref()?;
        Some((port.as_fd(), !self.outbox.is_empty()))
    }

    /// When the port should rejoin the poll set.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.hup_until
    }

    /// Handles poll's answer for the port; returns the host's commands.
    pub fn on_ready(&mut self, readable: bool, writable: bool, hung_up: bool) -> Vec<HostCommand> {
        let mut commands = Vec::new();
        if readable {
            commands = self.read_commands();
        }
        if writable {
            self.flush();
        }
        self.hup_until = hung_up.then(|| Instant::now() + HUP_RECHECK);
        commands
    }

    fn read_commands(&mut self) -> Vec<HostCommand> {
        let Some(port) = &mut self.port else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        let mut buf = [0u8; 4096];
        // Bounded: at most 64 KiB per wakeup, so a chatty host can't starve
        // the signals.
        for _ in 0..16 {
            match port.read(&mut buf) {
                // No host connected.
                Ok(0) => break,
                Ok(n) => {
                    for line in self.reader.push(&buf[..n]) {
                        match decode::<HostCommand>(&line) {
                            Some(command) => commands.push(command),
                            None => say!(
                                "ignored an unknown host command: {}",
                                String::from_utf8_lossy(&line)
                            ),
                        }
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        commands
    }

    /// Gives the host a last chance to read the outbox, for at most `limit`.
    pub fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.outbox.is_empty() && Instant::now() < deadline {
            self.flush();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_reads() {
        let mut reader = LineReader::default();
        assert!(reader.push(b"{\"command\":").is_empty());
        assert_eq!(
            reader.push(b"\"poweroff\"}\n{}\n{"),
            [b"{\"command\":\"poweroff\"}".to_vec(), b"{}".to_vec()]
        );
        assert_eq!(reader.push(b"}\n"), [b"{}".to_vec()]);
        assert_eq!(reader.push(b"\n"), [Vec::<u8>::new()]);
    }

    #[test]
    fn overlong_lines_are_dropped_whole() {
        let mut reader = LineReader::default();
        let big = vec![b'x'; MAX_LINE_LEN];
        assert!(reader.push(&big).is_empty());
        assert!(reader.push(b"yy").is_empty());
        assert_eq!(reader.push(b"tail\nok\n"), [b"ok".to_vec()]);
        let exact = vec![b'z'; MAX_LINE_LEN];
        let mut line = exact.clone();
        line.push(b'\n');
        assert_eq!(reader.push(&line), [exact]);
    }

    #[test]
    fn port_names() {
        assert!(is_agent_port("org.hyperos.agent\n"));
        assert!(!is_agent_port("org.hyperos.agent2\n"));
        assert!(!is_agent_port(""));
    }
}
