//! `hyperos-init`: PID 1 of the HyperOS guest.
//!
//! The kernel runs it as `/init` from the initramfs, which stays the root.
//! The same binary is udhcpc's script, as `/usr/libexec/hyperos/dhcp-hook`;
//! `argv[0]` decides which it is.
//!
//! # Boot
//!
//! ```text
//!  mount /proc /sys /dev /dev/pts /dev/shm /run /tmp /sys/fs/cgroup
//!  stdio → /dev/console; block signals → signalfd
//!  load /etc/hyperos/modules (finit_module, in order)
//!  wait ≤ 2 s: agent port ─▶ open it, send `started`; fw_cfg; eth0
//!  config: fw_cfg JSON ∪ /proc/cmdline (fw_cfg wins, bad fields dropped)
//!  hostname, /etc/hosts, /root/.ssh/authorized_keys
//!  data disk (serial hyperos-data) → /var/lib/hyperos (mkfs only if blank)
//!  /etc/machine-id (kept on the data disk; systemd-nspawn needs one)
//!  host key (/var/lib/hyperos/ssh), created on first boot
//!  lo up, eth0 up, supervise udhcpc ──(hook: ip, resolv.conf, lease.json, SIGHUP 1)
//!  supervise dropbear
//! ```
//!
//! # Event loop
//!
//! ```text
//!             ┌──────────────── poll ────────────────┐
//!  signalfd ──┤ SIGCHLD  → reap all, restart services │
//!             │ SIGHUP   → read lease.json, `lease`   │
//!             │ SIGTERM SIGINT SIGUSR1/2 SIGPWR ──────┼──▶ shutdown
//!  agent    ──┤ {"command":"poweroff"} ───────────────┼──▶ shutdown
//!  evdev    ──┤ KEY_POWER pressed (ACPI) ─────────────┼──▶ shutdown
//!  timeouts ──┤ service back-off, SSH probe, lease    │
//!             │ wait → `ready` (SSH up and a lease)   │
//!             └───────────────────────────────────────┘
//!  shutdown: `stopping`, TERM/KILL services, then everyone,
//!            sync, unmount (children first), sync, power off
//! ```
//!
//! PID 1 never exits: on a fatal error it powers the VM off, since an
//! exiting PID 1 panics the kernel.

#[cfg(target_os = "linux")]
mod agent;
#[cfg(target_os = "linux")]
mod boot;
#[cfg(target_os = "linux")]
mod config;
#[cfg(target_os = "linux")]
mod dhcp_hook;
#[cfg(target_os = "linux")]
mod disk;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod event_loop;
#[cfg(target_os = "linux")]
mod files;
#[cfg(target_os = "linux")]
mod hostkey;
#[cfg(target_os = "linux")]
mod identity;
#[cfg(target_os = "linux")]
mod input;
#[cfg(target_os = "linux")]
mod log;
#[cfg(target_os = "linux")]
mod modules;
#[cfg(target_os = "linux")]
mod mount;
#[cfg(target_os = "linux")]
mod net;
#[cfg(target_os = "linux")]
mod power;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod procfs;
#[cfg(target_os = "linux")]
mod services;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if name == "dhcp-hook" {
        let event = args.next().map(|arg| arg.to_string_lossy().into_owned());
        return dhcp_hook::run(event.as_deref());
    }
    if std::process::id() == 1 {
        boot::run()
    }
    log::say!("runs only as PID 1 of a HyperOS guest (or as its dhcp-hook)");
    std::process::ExitCode::from(2)
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("hyperos-init runs only as PID 1 of a Linux guest");
}
