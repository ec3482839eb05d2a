//! The HyperOS desktop app: a tray icon and a window over the core crates.
//!
//! ```text
//!  tray menu ─┐                        ┌─▶ hyperos_vm::Manager (boot, halt) ─▶ supervisor ─▶ QEMU
//!  window UI ─┼─▶ commands (app.rs) ───┤
//!             │                        └─▶ hyperos_ssh::Session::into_pty ─▶ xterm.js tabs
//!  watch.rs ──┴─ notify on instances/ ─▶ AppView ─▶ tray icon + menu, "view" event to the UI
//! ```
//!
//! The app has no VM, SSH or archive logic of its own: booting, halting and
//! status come from `hyperos-vm`, logins and keys from `hyperos-ssh`, link
//! parsing from `hyperos-archive`, sharing a dropped file or folder from
//! `hyperos-imagefs`, `hyperos-p2p` and `hyperos-run`. The same binary runs as an instance's
//! supervisor when started with `__supervise` (see
//! `hyperos_vm::launcher`), so the installed app needs no `hyperos` CLI.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod app;
mod link;
mod settings;
mod share;
mod terminal;
mod tray;
mod view;
mod vm;
mod watch;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match hyperos_vm::launcher::SuperviseArgs::from_argv(&argv) {
        Ok(Some(args)) => std::process::exit(supervise(args)),
        Ok(None) => {}
        Err(err) => {
            eprintln!("hyperos-desktop: {err}");
            std::process::exit(2);
        }
    }
    init_tracing("warn");
    app::run(&argv);
}

fn supervise(args: hyperos_vm::launcher::SuperviseArgs) -> i32 {
    init_tracing("info");
    #[cfg(unix)]
    {
        match args.run() {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("hyperos-desktop: {err}");
                1
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = args;
        eprintln!("hyperos-desktop: the VM supervisor is not available on this platform yet");
        1
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
