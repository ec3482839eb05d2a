//! The ACPI power button, as an evdev device.
//!
//! QEMU's `system_powerdown` presses the ACPI power button; the kernel's
//! `button` driver turns that into `KEY_POWER` on an input device, which
//! `evdev` exposes as `/dev/input/eventN`.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;

pub const EV_KEY: u16 = 1;
pub const KEY_POWER: u16 = 116;

/// Size of `struct input_event`: a `struct timeval`, then type, code, value.
pub const INPUT_EVENT_LEN: usize = std::mem::size_of::<libc::input_event>();
const TIMEVAL_LEN: usize = INPUT_EVENT_LEN - 8;

/// One input event, without its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    /// A press (not a release or auto-repeat) of the power button.
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// Parses whole `struct input_event` records in native byte order; a
/// trailing partial record is ignored.
pub fn parse_events(bytes: &[u8]) -> Vec<InputEvent> {
    bytes
        .chunks_exact(INPUT_EVENT_LEN)
        .map(|record| {
            let field = &record[TIMEVAL_LEN..];
            InputEvent {
                kind: u16::from_ne_bytes([field[0], field[1]]),
                code: u16::from_ne_bytes([field[2], field[3]]),
                value: i32::from_ne_bytes([field[4], field[5], field[6], field[7]]),
            }
        })
        .collect()
}

/// Opens every `/dev/input/event*`, non-blocking.
pub fn open_all() -> Vec<File> {
    let Ok(entries) = std::fs::read_dir("/dev/input") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("event"))
        .filter_map(|entry| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(entry.path())
                .ok()
        })
        .collect()
}

/// Reads what a device has and says whether the power button was pressed.
pub fn power_pressed(device: &mut File) -> bool {
    let mut buf = [0u8; INPUT_EVENT_LEN * 16];
    let mut pressed = false;
    for _ in 0..16 {
        match device.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pressed |= parse_events(&buf[..n])
                    .iter()
                    .any(InputEvent::is_power_press)
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    pressed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut bytes = vec![0xAB; TIMEVAL_LEN];
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&value.to_ne_bytes());
        bytes
    }

    #[test]
    fn parses_power_button_press_and_release() {
        assert_eq!(INPUT_EVENT_LEN, 24, "x86_64 and aarch64 Linux");
        let mut bytes = record(EV_KEY, KEY_POWER, 1);
        bytes.extend(record(0, 0, 0)); // EV_SYN
        bytes.extend(record(EV_KEY, KEY_POWER, 0));
        bytes.extend([1, 2, 3]); // partial record
        let events = parse_events(&bytes);
        assert_eq!(events.len(), 3);
        assert!(events[0].is_power_press());
        assert!(!events[1].is_power_press());
        assert!(!events[2].is_power_press(), "a release is not a press");
        assert!(
            !InputEvent {
                kind: EV_KEY,
                code: 115,
                value: 1
            }
            .is_power_press()
        );
        assert!(
            !InputEvent {
                kind: EV_KEY,
                code: KEY_POWER,
                value: 2
            }
            .is_power_press()
        );
    }
}
