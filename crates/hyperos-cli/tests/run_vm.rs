//! `hyperos run --vm`: the container runs inside a booted HyperOS VM, whose
//! own `hyperos` fetches the archive peer to peer from the host's share
//! (reached through QEMU's user networking at 10.0.2.2), mounts it lazily and
//! runs it with systemd-nspawn; its writable layer lives on the VM's data
//! disk and survives hard kills of the VM.
//!
//! Needs root (the host shares a directory: EROFS is built as root) and the
//! real image; skipped without root.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Instant;

use common::{Env, busybox_root, debian_rootfs, is_root, text};

fn skip(test: &str) -> bool {
    let root = is_root();
    if !root {
        eprintln!("skipping {test}: needs root");
    }
    !root
}

/// A share of the host's running in the background, stopped when dropped
/// (also when a test fails half-way).
struct Share<'a> {
    env: &'a Env,
    link: String,
}

impl Share<'_> {
    fn start<'a>(env: &'a Env, dir: &Path) -> Share<'a> {
        let out = env.ok(&[
            "share",
            dir.to_str().unwrap(),
            "--daemon",
            "--json",
            "--bind",
            "127.0.0.1:0",
            "--no-dht",
            "--no-lan",
        ]);
        let shared: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        Share {
            env,
            link: shared["link"].as_str().unwrap().to_owned(),
        }
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let _ = self.env.run(&["unshare", &self.link]);
    }
}

#[test]
fn run_in_the_vm_fetches_a_small_part_from_the_host_share() {
    if skip("run_in_the_vm_fetches_a_small_part_from_the_host_share") {
        return;
    }
    let rootfs = debian_rootfs("bookworm-minbase", &[]);
    let version = std::fs::read_to_string(rootfs.join("etc/debian_version")).unwrap();
    let env = Env::new();
    let share = Share::start(&env, &rootfs);
    let link = share.link.clone();
    env.boot("main", &[]);
    let started = Instant::now();
    let out = env.run(&[
        "run",
        "--vm",
        "main",
        "--name",
        "deb",
        "--no-dht",
        "--no-lan",
        &link,
        "--",
        "cat",
        "/etc/debian_version",
    ]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "run --vm failed ({}): {}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), version);
    // What the guest fetched, from its own record.
    let last = env.ok(&[
        "ssh",
        "main",
        "--",
        "cat",
        "/var/lib/hyperos/containers/deb/last-run.json",
    ]);
    let last: serde_json::Value = serde_json::from_str(&last).unwrap();
    let (fetched, len) = (
        last["bytes_fetched"].as_u64().unwrap(),
        last["image_len"].as_u64().unwrap(),
    );
    eprintln!(
        "run --vm: {:.1} s, the guest fetched {fetched} of {len} bytes",
        took.as_secs_f64()
    );
    assert!(
        fetched > 0 && fetched * 20 < len,
        "the guest fetched {fetched} of {len} bytes: more than 5%"
    );
    // The exit code comes back through SSH; the container is listed in
    // the guest afterwards, stopped.
    let out = env.run(&[
        "run", "--vm", "main", "--name", "deb", "--no-dht", "--no-lan", &link, "--", "sh", "-c",
        "exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let ps = env.ok(&["ssh", "main", "--", "hyperos", "ps", "--json"]);
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "deb" && c["state"] == "stopped"),
        "{ps}"
    );
    // A path can't go to the VM: one clear line.
    let err = env.fails(&[
        "run",
        "--vm",
        "main",
        rootfs.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert!(err.contains("--vm runs dat:// links"), "{err}");
    drop(share);
}

#[test]
fn synced_writes_survive_twenty_hard_kills_of_the_vm() {
    if skip("synced_writes_survive_twenty_hard_kills_of_the_vm") {
        return;
    }
    const TRIALS: u32 = 20;
    let image = tempfile::tempdir().unwrap();
    busybox_root(image.path());
    let env = Env::new();
    let share = Share::start(&env, image.path());
    let link = share.link.clone();
    for trial in 1..=TRIALS {
        env.boot("main", &[]);
        // Everything written and synced before the last kill is there; then
        // one more line, synced, and the VM is killed at once.
        let script = format!("cat /log 2>/dev/null; echo {trial} >> /log; sync");
        let out = env.run(&[
            "run", "--vm", "main", "--name", "dur", "--no-dht", "--no-lan", &link, "--", "sh",
            "-c", &script,
        ]);
        assert!(
            out.status.success(),
            "trial {trial}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let expected: String = (1..trial).map(|i| format!("{i}\n")).collect();
        assert_eq!(
            text(&out.stdout),
            expected,
            "trial {trial}: the log lost synced lines"
        );
        env.ok(&["kill", "main"]);
    }
    env.boot("main", &[]);
    let out = env.ok(&[
        "run", "--vm", "main", "--name", "dur", "--no-dht", "--no-lan", &link, "--", "cat", "/log",
    ]);
    let expected: String = (1..=TRIALS).map(|i| format!("{i}\n")).collect();
    assert_eq!(out, expected);
    drop(share);
}
