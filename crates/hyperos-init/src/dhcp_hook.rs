//! The udhcpc script: this binary run as `/usr/libexec/hyperos/dhcp-hook`.
//!
//! udhcpc runs it with the event as `argv[1]` and the lease in its
//! environment. `bound`/`renew` configure the interface, write
//! [`LEASE_FILE`](crate::net::LEASE_FILE) and send PID 1 a `SIGHUP`;
//! `deconfig` removes the address and the lease file.

use std::path::Path;
use std::process::ExitCode;

use hyperos_proto::Lease;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::net::{LEASE_FILE, ip, lease_from_env, read_lease, resolv_conf};

macro_rules! hook_say {
    ($($arg:tt)*) => {
        $crate::log::line("hyperos-init (dhcp-hook)", format_args!($($arg)*))
    };
}

/// Entry point when `argv[0]` is `dhcp-hook`.
pub fn run(event: Option<&str>) -> ExitCode {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let result = match event {
        Some(event @ ("bound" | "renew")) => lease_from_env(var)
            .map_err(Error::msg)
            .and_then(|lease| configure(event, &lease)),
        Some("deconfig") => deconfigure(var("interface").as_deref()),
        Some(event @ ("leasefail" | "nak")) => {
            hook_say!("{event} on {}", var("interface").unwrap_or_default());
            Ok(())
        }
        other => {
            hook_say!("unknown event {other:?}, ignored");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            hook_say!("{}", err.report());
            ExitCode::FAILURE
        }
    }
}

fn configure(event: &str, lease: &Lease) -> Result<()> {
    let interface = lease.interface.as_str();
    let address = format!("{}/{}", lease.ip, lease.prefix_len);
    // A renewal of the same address must not drop the connections using it.
    let same_address =
        read_lease().is_some_and(|old| old.ip == lease.ip && old.interface == lease.interface);
    if event == "bound" || !same_address {
        ip(&["addr", "flush", "dev", interface])?;
    }
    ip(&["addr", "replace", &address, "dev", interface])?;
    ip(&["link", "set", interface, "up"])?;
    if let Some(router) = &lease.router {
        ip(&[
            "route", "replace", "default", "via", router, "dev", interface,
        ])?;
    }
    let domain = std::env::var("domain").ok();
    write_atomic(
        Path::new("/etc/resolv.conf"),
        resolv_conf(lease, domain.as_deref()).as_bytes(),
        0o644,
    )?;
    std::fs::create_dir_all("/run/hyperos")
        .map_err(|err| Error::msg(format!("could not create /run/hyperos: {err}")))?;
    let mut json = serde_json::to_vec(lease).unwrap_or_default();
    json.push(b'\n');
    write_atomic(Path::new(LEASE_FILE), &json, 0o644)?;
    hook_say!("{event}: {address} on {interface}");
    // PID 1 reads the file and tells the host.
    let _ = kill(Pid::from_raw(1), Signal::SIGHUP);
    Ok(())
}

fn deconfigure(interface: Option<&str>) -> Result<()> {
    let _ = std::fs::remove_file(LEASE_FILE);
    match interface {
        Some(interface) => {
            ip(&["addr", "flush", "dev", interface])?;
            ip(&["link", "set", interface, "up"])
        }
        None => Err(Error::msg("deconfig without an interface")),
    }
}
