//! The guest's own `hyperos`, end to end in a real VM: the guest mounts an
//! archive the host shares (reached through QEMU user networking, where the
//! host is 10.0.2.2), then runs a container from it with systemd-nspawn on an
//! overlay whose upper directory is on the data disk — what
//! `hyperos run --vm` does inside the VM. The guest shares a directory too.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Env, Running, text};
use hyperos_p2p::PeerTicket;

/// Where the guest reaches the host under QEMU user networking.
const HOST_FROM_GUEST: [u8; 4] = [10, 0, 2, 2];

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny container root: the host's static busybox as `/bin/sh`, a
/// greeting, and 300 kB of data to compare.
fn container_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let busybox = Path::new("/usr/bin/busybox");
    let deps = std::fs::read(busybox)
        .ok()
        .and_then(|elf| hyperos_image::elf::read_deps(&elf).ok().flatten());
    assert!(
        deps.is_some_and(|d| d.interpreter.is_none() && d.needed.is_empty()),
        "the container root needs a static /usr/bin/busybox: apt-get install busybox-static"
    );
    std::fs::copy(busybox, root.join("usr/bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("usr/bin/sh")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::write(root.join("etc/hello"), "hello from the host\n").unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(root.join("data.bin"), data).unwrap();
    root
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Runs `script` with sh in the guest over SSH; returns stdout, or panics
/// with everything when it fails.
fn guest(env: &Env, name: &str, script: &str) -> String {
    let out = env.run(&["ssh", name, "--", "sh", "-c", script]);
    assert!(
        out.status.success(),
        "in the guest ({}): {script}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn guest_mounts_a_host_share_and_runs_a_container_from_it() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let root = container_root(tmp.path());

    // The host shares the root on loopback only.
    let port = free_udp_port();
    let mut share = env.cmd(&["share"]);
    share
        .arg(&root)
        .args(["--json", "--bind", &format!("127.0.0.1:{port}")]);
    let sharer = Running::start(share);
    let shared: serde_json::Value = serde_json::from_str(&sharer.first_line).unwrap();
    assert_eq!(shared["fs_type"], "erofs");
    let key = shared["key"].as_str().unwrap().to_owned();
    let ticket: PeerTicket = shared["ticket"].as_str().unwrap().parse().unwrap();
    assert!(
        ticket.addrs.iter().all(|a| a.ip().is_loopback()),
        "bound to loopback: {:?}",
        ticket.addrs
    );
    // QEMU's user networking forwards the guest's 10.0.2.2:PORT to the
    // host's 127.0.0.1:PORT.
    let from_guest = ticket.with_addrs([SocketAddr::from((HOST_FROM_GUEST, port))]);

    env.boot("guest", &[]);

    // The guest carries the same hyperos, and its state is on the data disk
    // without being told.
    let host_version = text(&env.run(&["--version"]).stdout);
    let facts = guest(
        &env,
        "guest",
        "command -v hyperos; hyperos --version; echo \"$HYPEROS_STATE_DIR\"; \
         grep ' /var/lib/hyperos ' /proc/mounts | cut -d' ' -f3; cat /etc/machine-id",
    );
    let facts: Vec<&str> = facts.lines().collect();
    assert_eq!(
        facts.first().copied(),
        Some("/usr/bin/hyperos"),
        "no hyperos in the guest: is image/out older than this test? \
         Delete image/out and run the tests again ({facts:?})"
    );
    assert_eq!(facts[1], host_version.trim());
    assert_eq!(facts[2], "/var/lib/hyperos");
    assert_eq!(facts[3], "ext4", "the state dir is the data disk");
    let machine_id = facts[4].to_owned();
    assert!(
        machine_id.len() == 32 && machine_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{machine_id:?}"
    );

    // Mount the host's share lazily in the guest and read from it. The
    // mount runs in the background, in a session of its own, as a daemon
    // would; the time is the guest's own clock.
    let mounted = guest(
        &env,
        "guest",
        &format!(
            "mkdir -p /mnt/c; read t0 _ < /proc/uptime; \
             setsid hyperos mount dat://{key} /mnt/c --peer {from_guest} --deadline 20 \
               </dev/null >/tmp/mount.log 2>&1 & \
             i=0; until grep -q '^Mounted' /tmp/mount.log; do \
               i=$((i+1)); \
               if [ $i -ge 1200 ] || grep -q '^hyperos:' /tmp/mount.log; then \
                 cat /tmp/mount.log; exit 1; fi; \
               sleep 0.05; done; \
             cat /mnt/c/etc/hello; read t1 _ < /proc/uptime; \
             sha256sum /mnt/c/data.bin; read t2 _ < /proc/uptime; \
             echo \"times $t0 $t1 $t2\"; \
             grep -E ' /mnt/c | erofs ' /proc/mounts | cut -d' ' -f1,3; \
             hyperos mounts --json"
        ),
    );
    let lines: Vec<&str> = mounted.lines().collect();
    assert_eq!(lines[0], "hello from the host");
    assert_eq!(
        lines[1].split_whitespace().next(),
        Some(sha256(&root.join("data.bin")).as_str()),
        "data.bin reads back the same in the guest"
    );
    let times: Vec<f64> = lines[2]
        .strip_prefix("times ")
        .unwrap()
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    eprintln!(
        "guest: mount and read a small file {:.2} s, then 300 kB {:.2} s",
        times[1] - times[0],
        times[2] - times[1]
    );
    assert!(
        lines[3].starts_with("/dev/loop") && lines[3].ends_with(" erofs"),
        "{mounted}"
    );
    // `hyperos mounts` finds the mount in the default state dir.
    let mounts: serde_json::Value = serde_json::from_str(&lines[4..].join("\n")).unwrap();
    assert_eq!(mounts[0]["dir"], "/mnt/c", "{mounts}");
    assert_eq!(mounts[0]["state"], "alive", "{mounts}");

    // A container from the mounted archive: overlay with its upper dir on
    // the data disk, run by systemd-nspawn; its exit status comes back and,
    // with `--console=pipe`, its output as it wrote it (no PTY's \r\n).
    let out = env.run(&[
        "ssh",
        "guest",
        "--",
        "sh",
        "-c",
        "c=/var/lib/hyperos/containers/t; mkdir -p $c/upper $c/work /run/t && \
         mount -t overlay overlay -o lowerdir=/mnt/c,upperdir=$c/upper,workdir=$c/work /run/t && \
         systemd-nspawn --register=no --keep-unit --quiet --console=pipe -D /run/t \
           /bin/sh -c 'cat /etc/hello; echo \"pid $$\"; echo made inside > /made; exit 7'",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the container's exit status: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "hello from the host\npid 1\n");
    let after = guest(
        &env,
        "guest",
        "cat /var/lib/hyperos/containers/t/upper/made; \
         test ! -e /mnt/c/made && echo lower untouched; \
         umount /run/t && hyperos unmount /mnt/c && \
         grep -cE ' (/mnt/c|/run/t) |hyperos-image|erofs|overlay' /proc/mounts; \
         cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l",
    );
    assert_eq!(
        after, "made inside\nlower untouched\nUnmounted /mnt/c.\n0\n0\n",
        "the write went to the data disk; unmounting left no mount and no loop device"
    );
    drop(sharer);

    // The guest shares too: a directory becomes EROFS (mkfs.erofs is in the
    // image), and with no keychain in the guest the archive's signing key
    // falls back to a 0600 file on the data disk.
    let shared = guest(
        &env,
        "guest",
        "mkdir -p /tmp/s && echo made in the guest > /tmp/s/f && \
         hyperos share /tmp/s --daemon --json --bind 127.0.0.1:0",
    );
    let shared: serde_json::Value = serde_json::from_str(shared.trim()).unwrap();
    assert_eq!(shared["fs_type"], "erofs", "{shared}");
    let guest_key = shared["key"].as_str().unwrap();
    assert_eq!(
        guest(
            &env,
            "guest",
            &format!(
                "stat -c %a /var/lib/hyperos/archives/{guest_key}.secret && \
                 hyperos unshare {guest_key} >/dev/null && echo unshared"
            )
        ),
        "600\nunshared\n"
    );

    // The machine id lives on the data disk: the same after a reboot.
    env.ok(&["halt", "guest"]);
    env.wait_state("guest", "stopped", Duration::from_secs(60));
    env.boot("guest", &[]);
    assert_eq!(
        guest(&env, "guest", "cat /etc/machine-id").trim(),
        machine_id
    );
}
