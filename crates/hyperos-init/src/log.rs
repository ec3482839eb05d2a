//! Console logging.
//!
//! PID 1's stderr is `/dev/console` (ttyS0) once the early mounts are done.
//! Every line carries the `hyperos-init:` prefix so it stands out among the
//! kernel's and dropbear's. A failed write is ignored: `eprintln!` would
//! panic, and a panicking PID 1 takes the kernel down with it.

use std::io::Write;

/// Writes one line to stderr, ignoring errors.
pub fn line(prefix: &str, args: std::fmt::Arguments<'_>) {
    let text = format!("{prefix}: {args}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Logs a line to the console with the `hyperos-init:` prefix.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::line("hyperos-init", format_args!($($arg)*))
    };
}
pub(crate) use say;
