//! Share and lazy mount between nodes in separate network namespaces joined
//! by veth pairs: a real Debian minbase root filesystem (debootstrap, cached
//! under target/bench-cache/) is shared from one namespace and mounted
//! lazily in another; every file, link, directory and device node reads back
//! identical. A cut link leaves cached reads working, makes uncached reads
//! fail with EIO after `--deadline`, and does not stop `hyperos unmount`.
//! On one bridge, a reader with no ticket finds the sharer by mDNS alone,
//! and by a DHT whose only nodes run in the bridge's namespace.
//!
//! The `hyperos` processes enter only the network namespace (`nsenter
//! --net`), so their FUSE and loop mounts are visible to the test, which
//! reads through them as any local program would.
//!
//! Needs root; skipped otherwise.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Running, debian_rootfs, text};

fn not_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(true)
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
}

/// Network namespaces, deleted (with their veths) when dropped.
struct Lab {
    namespaces: Vec<String>,
}

impl Lab {
    fn new(tag: &str, count: usize) -> Lab {
        let namespaces: Vec<String> = (1..=count)
            .map(|i| format!("hy-{tag}{i}-{}", std::process::id()))
            .collect();
        let lab = Lab { namespaces };
        for ns in &lab.namespaces {
            sh(&format!("ip netns add {ns}\nip -n {ns} link set lo up"));
        }
        lab
    }

    fn ns(&self, i: usize) -> &str {
        &self.namespaces[i - 1]
    }

    /// A veth pair between nodes `a` and `b` on 10.88.`subnet`.0/24, named
    /// `v<b>` in `a` and `v<a>` in `b`, addresses .`a` and .`b`.
    fn link(&self, a: usize, b: usize, subnet: u8) {
        let (na, nb) = (self.ns(a), self.ns(b));
        sh(&format!(
            "ip link add v{b} netns {na} type veth peer name v{a} netns {nb}
             ip -n {na} addr add 10.88.{subnet}.{a}/24 dev v{b}
             ip -n {nb} addr add 10.88.{subnet}.{b}/24 dev v{a}
             ip -n {na} link set v{b} up
             ip -n {nb} link set v{a} up"
        ));
    }

    /// A bridge in node `hub` joining nodes `members` on 10.88.`subnet`.0/24:
    /// each member has `eth0` at .`member`, the hub has the bridge at .254.
    fn bridge(&self, hub: usize, members: &[usize], subnet: u8) {
        let nh = self.ns(hub);
        sh(&format!(
            "ip -n {nh} link add br0 type bridge
             ip -n {nh} addr add 10.88.{subnet}.254/24 dev br0
             ip -n {nh} link set br0 up"
        ));
        for &m in members {
            let nm = self.ns(m);
            sh(&format!(
                "ip link add eth0 netns {nm} type veth peer name p{m} netns {nh}
                 ip -n {nh} link set p{m} master br0
                 ip -n {nh} link set p{m} up
                 ip -n {nm} addr add 10.88.{subnet}.{m}/24 dev eth0
                 ip -n {nm} link set eth0 up"
            ));
        }
    }

    /// Runs `f` on a thread inside node `i`'s network namespace; threads it
    /// starts stay there, and so do their sockets.
    fn within<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns(i));
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a descriptor this thread owns moves only this
            // thread (and threads it starts) into the network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }

    /// A command run with only the network namespace of node `i`.
    fn command(&self, i: usize, state: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns(i)))
            .arg("--")
            .arg(BIN)
            .env("HYPEROS_STATE_DIR", state)
            .env("HYPEROS_KEYSTORE", "file")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A lazy mount: on drop, `hyperos unmount`, then the process is killed and
/// anything left mounted is detached.
struct Mount {
    dir: PathBuf,
    state: PathBuf,
    process: Option<Running>,
}

impl Mount {
    fn start(
        lab: &Lab,
        node: usize,
        state: &Path,
        dir: &Path,
        link: &str,
        peers: &[&str],
        more: &[&str],
    ) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let mut c = lab.command(node, state);
        c.arg("mount")
            .arg(link)
            .arg(dir)
            .args(["--bind", "0.0.0.0:0"])
            .args(more);
        if !more.contains(&"--deadline") {
            c.args(["--deadline", "3"]);
        }
        for peer in peers {
            c.args(["--peer", peer]);
        }
        let process = Running::start(c);
        assert!(
            process.first_line.starts_with("Mounted dat://"),
            "{}",
            process.first_line
        );
        assert!(mounted(dir));
        Mount {
            dir: dir.to_owned(),
            state: state.to_owned(),
            process: Some(process),
        }
    }

    fn unmount(&mut self) -> std::process::Output {
        let out = Command::new(BIN)
            .arg("unmount")
            .arg(&self.dir)
            .env("HYPEROS_STATE_DIR", &self.state)
            .env("HYPEROS_KEYSTORE", "file")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if let Some(mut p) = self.process.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while p.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        out
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.process.is_some() {
            let _ = self.unmount();
        }
        let fuse_dirs = std::fs::read_dir(self.state.join("mounts"))
            .map(|d| d.flatten().map(|e| e.path().join("fuse")).collect())
            .unwrap_or_else(|_| Vec::new());
        for path in std::iter::once(&self.dir).chain(&fuse_dirs) {
            if mounted(path) {
                let _ = Command::new("umount").arg("-l").arg(path).status();
            }
        }
    }
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

/// Compares every entry under `orig` with the same path under `copy`: type,
/// mode, owner, size, contents of regular files, link targets, device
/// numbers, and the names in every directory. Returns (files, bytes).
fn compare_trees(orig: &Path, copy: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (a, b) = (orig.join(&rel), copy.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&a).unwrap(),
            std::fs::symlink_metadata(&b).unwrap_or_else(|e| panic!("{}: {e}", b.display())),
        );
        let what = rel.display();
        assert_eq!(ma.mode(), mb.mode(), "mode of /{what}");
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of /{what}"
        );
        let ft = ma.file_type();
        if ft.is_dir() {
            let names = |p: &Path| -> BTreeSet<_> {
                std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect()
            };
            let (na, nb) = (names(&a), names(&b));
            assert_eq!(na, nb, "entries of /{what}");
            stack.extend(na.into_iter().map(|n| rel.join(n)));
        } else if ft.is_file() {
            assert_eq!(ma.len(), mb.len(), "size of /{what}");
            let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            assert!(da == db, "contents of /{what} differ");
            files += 1;
            bytes += da.len() as u64;
        } else if ft.is_symlink() {
            assert_eq!(
                std::fs::read_link(&a).unwrap(),
                std::fs::read_link(&b).unwrap(),
                "target of /{what}"
            );
        } else if ft.is_char_device() || ft.is_block_device() {
            assert_eq!(ma.rdev(), mb.rdev(), "device number of /{what}");
        }
    }
    (files, bytes)
}

/// The largest regular file under `root`, relative to it.
fn largest_file(root: &Path) -> PathBuf {
    let mut best = (0, PathBuf::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let m = std::fs::symlink_metadata(root.join(&rel)).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(root.join(&rel)).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        } else if m.is_file() && m.len() > best.0 {
            best = (m.len(), rel);
        }
    }
    best.1
}

struct Shared {
    _process: Running,
    link: String,
    ticket: String,
}

fn share(lab: &Lab, node: usize, state: &Path, tree: &Path, bind: &str) -> Shared {
    share_with(lab, node, state, tree, &["--bind", bind])
}

fn share_with(lab: &Lab, node: usize, state: &Path, tree: &Path, args: &[&str]) -> Shared {
    let mut c = lab.command(node, state);
    c.arg("share").arg(tree).arg("--json").args(args);
    let process = Running::start(c);
    let shared: serde_json::Value = serde_json::from_str(&process.first_line)
        .unwrap_or_else(|e| panic!("{e}: {}", process.first_line));
    assert_eq!(shared["fs_type"], "erofs");
    let key = shared["key"].as_str().unwrap();
    let ticket = shared["ticket"].as_str().unwrap().to_owned();
    Shared {
        link: format!("dat://{key}"),
        ticket,
        _process: process,
    }
}

#[test]
fn two_namespaces_share_mount_compare_every_file_cut_and_unmount() {
    if not_root() {
        eprintln!("needs root for network namespaces and mounts; skipped");
        return;
    }
    let rootfs = debian_rootfs("bookworm-minbase", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::new("a", 2);
    lab.link(1, 2, 41);
    let sharer = share(&lab, 1, &tmp.path().join("a"), &rootfs, "10.88.41.1:7401");
    let mnt = tmp.path().join("mnt");
    let b = tmp.path().join("b");

    // A small file reads right over the veth; then the link goes down.
    let mut mount = Mount::start(&lab, 2, &b, &mnt, &sharer.link, &[&sharer.ticket], &[]);
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/debian_version")).unwrap(),
        std::fs::read_to_string(rootfs.join("etc/debian_version")).unwrap()
    );
    sh(&format!("ip -n {} link set v2 down", lab.ns(1)));

    // Cut: what was read reads from the cache; an uncached read fails with
    // EIO after the deadline (3 s), not a hang.
    drop_caches();
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/debian_version")).unwrap(),
        std::fs::read_to_string(rootfs.join("etc/debian_version")).unwrap()
    );
    let big = largest_file(&rootfs);
    let started = Instant::now();
    let err = std::fs::read(mnt.join(&big)).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(5),
        "EIO reading /{}: {err}",
        big.display()
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(45),
        "EIO after {waited:?}"
    );

    // Unmount works with the link still down.
    let out = mount.unmount();
    assert!(out.status.success(), "unmount: {}", text(&out.stderr));
    assert!(!mounted(&mnt));
    drop(mount);

    // Link back up, mount again with the warm cache: every entry of the
    // tree reads back identical through the lazy mount.
    sh(&format!("ip -n {} link set v2 up", lab.ns(1)));
    let mount = Mount::start(&lab, 2, &b, &mnt, &sharer.link, &[&sharer.ticket], &[]);
    drop_caches();
    let started = Instant::now();
    let (files, bytes) = compare_trees(&rootfs, &mnt);
    eprintln!(
        "compared {files} files, {:.1} MB, in {:?}",
        bytes as f64 / 1e6,
        started.elapsed()
    );
    assert!(files > 1000, "only {files} files");
    drop(mount);
    drop(sharer);
}

#[test]
fn three_namespaces_second_reader_over_a_shaped_link_and_cut_first() {
    if not_root() {
        eprintln!("needs root for network namespaces and mounts; skipped");
        return;
    }
    let rootfs = debian_rootfs("bookworm-minbase", &[]);
    let tmp = tempfile::tempdir().unwrap();
    // 1 ↔ 2 on 10.88.42.0/24; 1 ↔ 3 on 10.88.43.0/24, shaped to 50 Mbit/s
    // both ways; 3 reaches the sharer's address on the other link through 1.
    let lab = Lab::new("t", 3);
    lab.link(1, 2, 42);
    lab.link(1, 3, 43);
    sh(&format!(
        "ip -n {n3} route add default via 10.88.43.1
         ip netns exec {n1} tc qdisc add dev v3 root tbf rate 50mbit burst 64kb latency 50ms
         ip netns exec {n3} tc qdisc add dev v1 root tbf rate 50mbit burst 64kb latency 50ms",
        n1 = lab.ns(1),
        n3 = lab.ns(3),
    ));
    let sharer = share(&lab, 1, &tmp.path().join("a"), &rootfs, "10.88.42.1:7402");

    let mnt2 = tmp.path().join("mnt2");
    let mount2 = Mount::start(
        &lab,
        2,
        &tmp.path().join("b"),
        &mnt2,
        &sharer.link,
        &[&sharer.ticket],
        &[],
    );
    let (files, _) = compare_trees(&rootfs, &mnt2);
    assert!(files > 1000, "only {files} files");

    let mnt3 = tmp.path().join("mnt3");
    let mount3 = Mount::start(
        &lab,
        3,
        &tmp.path().join("c"),
        &mnt3,
        &sharer.link,
        &[&sharer.ticket],
        &[],
    );
    let started = Instant::now();
    compare_trees(&rootfs, &mnt3);
    eprintln!(
        "node 3 read everything over 50 Mbit/s in {:?}",
        started.elapsed()
    );

    // Node 2's link goes down: it reads everything from its cache.
    sh(&format!("ip -n {} link set v2 down", lab.ns(1)));
    drop_caches();
    compare_trees(&rootfs, &mnt2);
    drop(mount3);
    drop(mount2);
    drop(sharer);
}

/// A small tree: a text file and 2 MB that do not compress.
fn small_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "found-on-the-lan\n").unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(tree.join("noise.bin"), noise).unwrap();
    tree
}

/// A reader that finds the sharer with no ticket: checks the mount reads
/// both files right, and returns how long mounting took.
fn mount_without_ticket_and_read(
    lab: &Lab,
    node: usize,
    state: &Path,
    mnt: &Path,
    link: &str,
    tree: &Path,
    discovery: &[&str],
) -> Duration {
    let started = Instant::now();
    let mount = Mount::start(lab, node, state, mnt, link, &[], discovery);
    let took = started.elapsed();
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/hostname")).unwrap(),
        "found-on-the-lan\n"
    );
    assert!(
        std::fs::read(mnt.join("noise.bin")).unwrap()
            == std::fs::read(tree.join("noise.bin")).unwrap(),
        "noise.bin differs"
    );
    drop(mount);
    took
}

#[test]
fn lan_reader_finds_the_sharer_by_mdns_across_a_bridge() {
    if not_root() {
        eprintln!("needs root for network namespaces and mounts; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = small_tree(tmp.path());
    // Node 1 holds the bridge; 2 shares, 3 reads; no DHT anywhere.
    let lab = Lab::new("m", 3);
    lab.bridge(1, &[2, 3], 44);
    let sharer = share_with(
        &lab,
        2,
        &tmp.path().join("a"),
        &tree,
        &["--no-dht", "--bind", "0.0.0.0:0"],
    );
    let mnt = tmp.path().join("mnt");

    // Without the LAN either, nothing is found: one line that says what to do.
    std::fs::create_dir_all(&mnt).unwrap();
    let out = lab
        .command(3, &tmp.path().join("b"))
        .args(["mount", &sharer.link])
        .arg(&mnt)
        .args(["--no-dht", "--no-lan", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no peer") && err.contains("--peer"), "{err}");
    assert!(!mounted(&mnt));

    let took = mount_without_ticket_and_read(
        &lab,
        3,
        &tmp.path().join("b"),
        &mnt,
        &sharer.link,
        &tree,
        &["--no-dht"],
    );
    eprintln!("found by mDNS and mounted in {took:?}");
    assert!(took < Duration::from_secs(10), "mounting took {took:?}");
    drop(sharer);
}

#[test]
fn reader_finds_the_sharer_on_a_dht_inside_the_namespaces() {
    if not_root() {
        eprintln!("needs root for network namespaces and mounts; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = small_tree(tmp.path());
    // Node 1 holds the bridge and a DHT of three nodes at 10.88.45.254;
    // 2 shares, 3 reads; no mDNS.
    let lab = Lab::new("d", 3);
    lab.bridge(1, &[2, 3], 45);
    let dht = lab.within(1, || {
        mainline::Testnet::builder(3)
            .bind_address(std::net::Ipv4Addr::new(10, 88, 45, 254))
            .build()
            .unwrap()
    });
    let bootstrap = dht.bootstrap.join(",");
    let sharer = share_with(
        &lab,
        2,
        &tmp.path().join("a"),
        &tree,
        &[
            "--no-lan",
            "--dht-bootstrap",
            &bootstrap,
            "--bind",
            "0.0.0.0:0",
        ],
    );
    let took = mount_without_ticket_and_read(
        &lab,
        3,
        &tmp.path().join("b"),
        &tmp.path().join("mnt"),
        &sharer.link,
        &tree,
        &[
            "--no-lan",
            "--dht-bootstrap",
            &bootstrap,
            "--deadline",
            "30",
        ],
    );
    // Had nothing been found within the deadline, the mount would have failed.
    eprintln!("found on the DHT and mounted in {took:?}");
    drop(sharer);
    drop(dht);
}
