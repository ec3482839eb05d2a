//! Starting child processes from PID 1.
//!
//! PID 1 blocks the signals it reads through its signalfd, and the kernel
//! hands it the unknown `key=value` words of the command line as its
//! environment. Neither must reach a child: every child gets an empty signal
//! mask, default dispositions, and a clean environment.
//!
//! That environment names the guest's state directory, the data disk, for
//! the guest's own `hyperos` ([`STATE_DIR_ENV`]); dropbear passes it on to
//! SSH sessions (`-e`), so `hyperos mount` over SSH keeps its cache there.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// `PATH` of every child.
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The variable `hyperos` reads its state directory from.
pub const STATE_DIR_ENV: &str = "HYPEROS_STATE_DIR";

/// A command with a clean environment and signal state. Its stdin is
/// `/dev/null`; stdout and stderr are the console, like PID 1's.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("TERM", "linux")
        .env(STATE_DIR_ENV, crate::disk::DATA_DIR)
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (sigemptyset, sigprocmask, signal), touching no
    // memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            reset_signals();
            Ok(())
        });
    }
    command
}

/// Like [`command`], in a session of its own so that a console's job
/// control signals don't reach it. For long-running services.
pub fn service_command(program: &str) -> Command {
    let mut command = command(program);
    // SAFETY: setsid is async-signal-safe; its failure (already a session
    // leader) is harmless and ignored.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command
}

/// Restores the default disposition of every catchable signal and empties
/// the signal mask. Only async-signal-safe calls: it runs between fork and
/// exec.
fn reset_signals() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: SIG_DFL is a valid disposition for any catchable signal;
            // an invalid number only makes the call fail.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set before sigprocmask reads it.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
    }
}
