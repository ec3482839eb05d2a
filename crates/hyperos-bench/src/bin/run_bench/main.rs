//! `run_bench`: live boot of containers with `hyperos run` from a `dat://`
//! link, written as the "Live boot (hyperos run)" section of
//! docs/benchmarks.md.
//!
//! Two images, shared as EROFS by `hyperos share` on another node:
//!
//! - a Debian bookworm minbase runs `cat /etc/debian_version`: the time from
//!   starting `hyperos run` to the first line of its output, cold (a fresh
//!   state directory for the reader), warm (a second run in the same state
//!   directory), and with the whole image fetched first (`hyperos seed`,
//!   stopped once it has everything, then the same run);
//! - a Debian bookworm with systemd, plus a unit that writes what
//!   `systemctl is-system-running --wait` says to a bound directory and
//!   powers off, boots with `hyperos run --boot`: the time until that file
//!   says running or degraded, cold and warm.
//!
//! On loopback, and on a 100 Mbit/s, 20 ms round-trip link between network
//! namespaces (`shaped_link`). Bytes fetched and requests are what
//! `hyperos run` records in `containers/<name>/last-run.json`. Every run
//! starts after `echo 3 > /proc/sys/vm/drop_caches`. Needs root.

#[cfg(target_os = "linux")]
mod bench;
#[cfg(target_os = "linux")]
#[path = "../../debian.rs"]
mod debian;
#[cfg(target_os = "linux")]
#[path = "../../machine.rs"]
mod machine;
#[cfg(target_os = "linux")]
#[path = "../../report.rs"]
mod report;
#[cfg(target_os = "linux")]
#[path = "../../shaped_link.rs"]
mod shaped_link;

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    bench::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> anyhow::Result<()> {
    anyhow::bail!(
        "run_bench runs containers with systemd-nspawn in network namespaces: it needs Linux"
    )
}
