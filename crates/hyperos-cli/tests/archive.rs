//! Share and lazy mount, end to end with real processes, real iroh
//! connections on loopback, real FUSE and loop mounts: the shared tree
//! reads back identical, a cut network gives EIO after the deadline (no
//! hang), a restored peer serves again, unmount works, and a restarted
//! mount reads everything cached with no peer at all.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Running, text};

fn hyperos(state: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("HYPEROS_STATE_DIR", state)
        .env("HYPEROS_KEYSTORE", "file")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/debian_version"), "12.7\n").unwrap();
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(tree.join("big.bin"), big).unwrap();
    std::os::unix::fs::symlink("etc/debian_version", tree.join("version")).unwrap();
    tree
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// The entry of `hyperos mounts --json` for `dir`, once its progress shows
/// fetched bytes (the mount writes it at most twice a second).
fn mount_progress(state: &Path, dir: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = hyperos(state).args(["mounts", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["dir"] == dir.to_str().unwrap())
            .cloned();
        if let Some(entry) = entry
            && entry["progress"]["bytes_fetched"].as_u64().unwrap_or(0) > 0
        {
            return entry;
        }
        assert!(Instant::now() < deadline, "no progress in {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

#[test]
fn share_mount_cut_restore_unmount_and_warm_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let port = free_udp_port();
    let bind = format!("127.0.0.1:{port}");

    let share_cmd = || {
        let mut c = hyperos(&a);
        c.arg("share").arg(&tree).args(["--json", "--bind", &bind]);
        c
    };
    let sharer = Running::start(share_cmd());
    let shared: serde_json::Value = serde_json::from_str(&sharer.first_line).unwrap();
    let key = shared["key"].as_str().unwrap().to_owned();
    let ticket = shared["ticket"].as_str().unwrap().to_owned();
    assert_eq!(shared["fs_type"], "erofs");
    assert_eq!(shared["version"], 1);
    let secret = a.join(format!("archives/{key}.secret"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mount_cmd = |peers: bool| {
        let mut c = hyperos(&b);
        c.arg("mount").arg(format!("dat://{key}")).arg(&mnt).args([
            "--deadline",
            "3",
            "--bind",
            "127.0.0.1:0",
        ]);
        if peers {
            c.args(["--peer", &ticket]);
        }
        c
    };
    let mount = Running::start(mount_cmd(true));
    assert!(
        mount.first_line.starts_with("Mounted dat://"),
        "{}",
        mount.first_line
    );
    assert!(mounted(&mnt));

    // A small file reads right; then the peer goes away.
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/debian_version")).unwrap(),
        "12.7\n"
    );
    assert_eq!(
        std::fs::read_link(mnt.join("version")).unwrap(),
        Path::new("etc/debian_version")
    );

    // The mount's progress: a small read fetched something, far from all.
    let listed = mount_progress(&b, &mnt);
    assert_eq!(listed["dir"], mnt.to_str().unwrap());
    assert!(
        listed["link"]
            .as_str()
            .unwrap()
            .starts_with(&format!("dat://{key}+1")),
        "{listed}"
    );
    assert_eq!(listed["state"], "alive");
    assert_eq!(listed["pid"], mount.child.id());
    let progress = &listed["progress"];
    let fetched = progress["bytes_fetched"].as_u64().unwrap();
    let image_len = progress["image_len"].as_u64().unwrap();
    assert!(fetched > 0 && fetched < image_len, "{progress}");
    assert_eq!(progress["peers_known"], 1, "{progress}");
    sharer.stop();

    // Cut: what was read still reads; an uncached read fails with EIO after
    // the deadline instead of hanging.
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/debian_version")).unwrap(),
        "12.7\n"
    );
    let started = Instant::now();
    let err = std::fs::read(mnt.join("big.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    // The peer is back (same node key, same port): reads succeed again and
    // every byte matches the original.
    let sharer = Running::start(share_cmd());
    drop_caches();
    let big = std::fs::read(mnt.join("big.bin")).unwrap();
    assert!(
        big == std::fs::read(tree.join("big.bin")).unwrap(),
        "big.bin differs"
    );

    // Unmount: the mount process exits and nothing stays mounted.
    let out = hyperos(&b).arg("unmount").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!mounted(&mnt));
    let out = hyperos(&b).args(["mounts", "--json"]).output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "[]");
    drop(mount);
    sharer.stop();

    // A restarted mount with no peer at all reads everything it cached.
    let mount = Running::start(mount_cmd(false));
    assert!(
        mount.first_line.starts_with("Mounted dat://"),
        "{}",
        mount.first_line
    );
    drop_caches();
    assert!(
        std::fs::read(mnt.join("big.bin")).unwrap() == std::fs::read(tree.join("big.bin")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/debian_version")).unwrap(),
        "12.7\n"
    );
    mount.stop();
    assert!(!mounted(&mnt));
}

#[test]
fn bad_links_and_paths_get_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = hyperos(tmp.path())
        .args(["mount", "dat://not-a-key", "/tmp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with("hyperos: ") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(err.contains("dat://"), "says what a link looks like: {err}");

    let junk = tmp.path().join("junk.bin");
    std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
    let out = hyperos(tmp.path())
        .arg("share")
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("not a filesystem image"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = hyperos(tmp.path())
        .args(["unmount", "/nonexistent-mount-point"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nothing is mounted"),
        "{}",
        text(&out.stderr)
    );
}

/// Every file, directory and symlink under `original` is the same under
/// `copy`, and `copy` has nothing more.
fn assert_same_tree(original: &Path, copy: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(original)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut copied: Vec<_> = std::fs::read_dir(copy)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    copied.sort();
    assert_eq!(names, copied, "entries of {}", copy.display());
    for name in names {
        let (a, b) = (original.join(&name), copy.join(&name));
        let kind = std::fs::symlink_metadata(&a).unwrap().file_type();
        if kind.is_symlink() {
            assert_eq!(
                std::fs::read_link(&a).unwrap(),
                std::fs::read_link(&b).unwrap()
            );
        } else if kind.is_dir() {
            assert_same_tree(&a, &b);
        } else {
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{} differs",
                b.display()
            );
        }
    }
}

#[test]
fn seed_serves_the_archive_after_the_sharer_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree(tmp.path());
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();

    let mut share = hyperos(&a);
    share
        .arg("share")
        .arg(&tree)
        .args(["--json", "--bind", "127.0.0.1:0"]);
    let sharer = Running::start(share);
    let shared: serde_json::Value = serde_json::from_str(&sharer.first_line).unwrap();
    let key = shared["key"].as_str().unwrap().to_owned();

    // B fetches everything from A and reports once it has it all.
    let mut seed = hyperos(&b);
    seed.args([
        "seed",
        &format!("dat://{key}"),
        "--json",
        "--bind",
        "127.0.0.1:0",
    ])
    .args(["--peer", shared["ticket"].as_str().unwrap()]);
    let seeder = Running::start(seed);
    let seeded: serde_json::Value = serde_json::from_str(&seeder.first_line).unwrap();
    assert_eq!(seeded["key"], key.as_str());
    assert_eq!(seeded["version"], 1);
    assert_eq!(seeded["bytes"], shared["image_len"]);
    assert!(seeded["chunks"].as_u64().unwrap() > 0, "{seeded}");
    assert!(
        seeded["fetched"].as_u64().unwrap() >= seeded["bytes"].as_u64().unwrap(),
        "{seeded}"
    );
    sharer.stop();

    // C knows only B: every file reads back identical.
    let mut mount = hyperos(&c);
    mount
        .arg("mount")
        .arg(format!("dat://{key}"))
        .arg(&mnt)
        .args(["--deadline", "10", "--bind", "127.0.0.1:0"])
        .args(["--peer", seeded["ticket"].as_str().unwrap()]);
    let mount = Running::start(mount);
    assert!(
        mount.first_line.starts_with("Mounted dat://"),
        "{}",
        mount.first_line
    );
    assert_same_tree(&tree, &mnt);
    mount.stop();
    assert!(!mounted(&mnt));
    seeder.stop();
}

#[test]
fn share_daemon_is_listed_serves_and_unshare_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();

    // The command returns once the share serves, leaving it in the background.
    let out = hyperos(&a)
        .arg("share")
        .arg(&tree)
        .args(["--daemon", "--json", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shared: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = shared["key"].as_str().unwrap().to_owned();
    let pid = shared["pid"].as_u64().unwrap() as u32;
    // Running, not a zombie left for a reaper that may not come.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
    };
    assert!(alive());

    // Listed, and recorded where other commands read it.
    let out = hyperos(&a).args(["shares", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(entry["key"], key.as_str());
    assert_eq!(entry["state"], "alive");
    assert_eq!(entry["pid"], pid);
    assert_eq!(entry["version"], 1);
    assert_eq!(entry["path"], tree.to_str().unwrap());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join(format!("shares/{key}/share.json"))).unwrap())
            .unwrap();
    assert_eq!(record["ticket"], shared["ticket"]);

    // A second share in the same state directory is refused in one line.
    let out = hyperos(&a)
        .arg("share")
        .arg(&tree)
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("hyperos unshare"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // It serves: a mount reads through the recorded ticket.
    let mut mount = hyperos(&b);
    mount
        .arg("mount")
        .arg(format!("dat://{key}"))
        .arg(&mnt)
        .args(["--deadline", "10", "--bind", "127.0.0.1:0"])
        .args(["--peer", record["ticket"].as_str().unwrap()]);
    let mount = Running::start(mount);
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/debian_version")).unwrap(),
        "12.7\n"
    );
    mount.stop();

    // Unshare stops the process and removes the record.
    let out = hyperos(&a).arg("unshare").arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!alive());
    let out = hyperos(&a).args(["shares", "--json"]).output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "[]");
    let out = hyperos(&a).arg("unshare").arg(&key).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nothing here shares"));
}

/// A Mainline DHT of five nodes on loopback (no internet here), as a
/// comma-separated bootstrap list.
fn local_dht() -> (mainline::Testnet, String) {
    let testnet = mainline::Testnet::builder(5)
        .bind_address(std::net::Ipv4Addr::LOCALHOST)
        .build()
        .unwrap();
    let bootstrap = testnet.bootstrap.join(",");
    (testnet, bootstrap)
}

#[test]
fn seed_and_mount_find_the_sharer_on_the_dht_without_a_ticket() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree(tmp.path());
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let (_dht, bootstrap) = local_dht();
    let with_dht = |state: &Path| {
        let mut c = hyperos(state);
        c.env("HYPEROS_DHT_BOOTSTRAP", &bootstrap);
        c
    };

    let mut share = with_dht(&a);
    share
        .arg("share")
        .arg(&tree)
        .args(["--json", "--no-lan", "--bind", "127.0.0.1:0"]);
    let sharer = Running::start(share);
    let shared: serde_json::Value = serde_json::from_str(&sharer.first_line).unwrap();
    let key = shared["key"].as_str().unwrap().to_owned();

    // Without the DHT nothing is found, in one line that says what to do.
    let out = hyperos(&b)
        .args(["seed", &format!("dat://{key}"), "--no-dht", "--no-lan"])
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--peer") && err.contains("no peer"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // B finds A by the archive's topic alone and fetches everything.
    let mut seed = with_dht(&b);
    seed.args(["seed", &format!("dat://{key}"), "--json", "--no-lan"])
        .args(["--bind", "127.0.0.1:0"]);
    let seeder = Running::start(seed);
    let seeded: serde_json::Value = serde_json::from_str(&seeder.first_line).unwrap();
    assert_eq!(seeded["key"], key.as_str());
    assert_eq!(seeded["bytes"], shared["image_len"]);
    sharer.stop();

    // C finds B (A is gone) and reads every file. A's records are still on
    // the DHT; asking it must not cost the read deadline (20 s): every peer
    // found is asked at once, and the mount opens when B has answered.
    let mut mount = with_dht(&c);
    mount
        .arg("mount")
        .arg(format!("dat://{key}"))
        .arg(&mnt)
        .args(["--deadline", "20", "--no-lan", "--bind", "127.0.0.1:0"]);
    let started = Instant::now();
    let mount = Running::start(mount);
    assert!(
        mount.first_line.starts_with("Mounted dat://"),
        "{}",
        mount.first_line
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "mounting took {took:?}");
    assert_same_tree(&tree, &mnt);
    mount.stop();
    assert!(!mounted(&mnt));
    seeder.stop();
}

/// Waits until the mount at `dir` has fetched at least `bytes`, or `secs`
/// pass; returns what it fetched.
fn fetched_by(state: &Path, dir: &Path, bytes: u64, secs: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let fetched = mount_progress(state, dir)["progress"]["bytes_fetched"]
            .as_u64()
            .unwrap();
        if fetched >= bytes || Instant::now() > deadline {
            return fetched;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prefetch_list_and_all_fetch_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tree(tmp.path());
    // 4 MiB that do not compress, so the image is larger than the list.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(tree.join("noise.bin"), noise).unwrap();
    let a = tmp.path().join("a");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();

    // A list that is not `OFFSET LENGTH` is refused in one line.
    let bad = tmp.path().join("bad.list");
    std::fs::write(&bad, "0 10\nten bytes\n").unwrap();
    let out = hyperos(&a)
        .arg("share")
        .arg(&tree)
        .arg("--prefetch")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("OFFSET LENGTH"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The publisher lists 1 MiB from 2 MiB on (inside noise.bin).
    let list = tmp.path().join("prefetch.list");
    std::fs::write(&list, "# the middle of noise.bin\n2097152 1048576\n").unwrap();
    let mut share = hyperos(&a);
    share
        .arg("share")
        .arg(&tree)
        .arg("--prefetch")
        .arg(&list)
        .args(["--json", "--no-dht", "--no-lan", "--bind", "127.0.0.1:0"]);
    let sharer = Running::start(share);
    let shared: serde_json::Value = serde_json::from_str(&sharer.first_line).unwrap();
    let key = shared["key"].as_str().unwrap().to_owned();
    let image_len = shared["image_len"].as_u64().unwrap();
    let ticket = shared["ticket"].as_str().unwrap().to_owned();

    let mount = |state: &Path, mode: &str| {
        let mut c = hyperos(state);
        c.arg("mount")
            .arg(format!("dat://{key}"))
            .arg(&mnt)
            .args(["--prefetch", mode, "--no-dht", "--no-lan"])
            .args(["--bind", "127.0.0.1:0", "--peer", &ticket]);
        Running::start(c)
    };
    // Nothing read, but mounting reads a little: no prefetch stays well
    // under the listed 1 MiB...
    let m = mount(&tmp.path().join("none"), "none");
    let none = fetched_by(&tmp.path().join("none"), &mnt, 1 << 20, 3);
    m.stop();
    assert!(none < 1 << 20, "fetched {none} without prefetch");
    // ...the default fetches the list...
    let m = mount(&tmp.path().join("list"), "list");
    let listed = fetched_by(&tmp.path().join("list"), &mnt, 1 << 20, 30);
    m.stop();
    assert!(listed >= 1 << 20, "fetched {listed} of the listed 1 MiB");
    assert!(listed < image_len, "fetched {listed} of {image_len}");
    // ...and `all` the whole image, which then reads with the sharer gone.
    let state = tmp.path().join("all");
    let m = mount(&state, "all");
    let all = fetched_by(&state, &mnt, image_len, 60);
    assert!(all >= image_len, "fetched {all} of {image_len}");
    sharer.stop();
    drop_caches();
    assert_same_tree(&tree, &mnt);
    m.stop();
    assert!(!mounted(&mnt));
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn new(path: PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
        SmallDisk(path)
    }

    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_a_sound_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..6_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(tree.join("noise.bin"), &noise).unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();

    // Sharing onto a full disk: one line that says so.
    let full = SmallDisk::new(tmp.path().join("full"), "2m");
    let out = hyperos(&full.0)
        .arg("share")
        .arg(&tree)
        .args(["--no-dht", "--no-lan", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("hyperos: ")).count(),
        1,
        "{err}"
    );

    let mut share = hyperos(&tmp.path().join("a"));
    share
        .arg("share")
        .arg(&tree)
        .args(["--json", "--no-dht", "--no-lan", "--bind", "127.0.0.1:0"]);
    let sharer = Running::start(share);
    let shared: serde_json::Value = serde_json::from_str(&sharer.first_line).unwrap();
    let mount = || {
        let mut c = hyperos(&full.0);
        c.arg("mount")
            .arg(format!("dat://{}", shared["key"].as_str().unwrap()))
            .arg(&mnt)
            .args([
                "--deadline",
                "5",
                "--prefetch",
                "none",
                "--no-dht",
                "--no-lan",
            ])
            .args(["--bind", "127.0.0.1:0", "--peer"])
            .arg(shared["ticket"].as_str().unwrap());
        Running::start(c)
    };
    // The cache fills up: the read fails with EIO, it does not hang.
    let m = mount();
    let err = std::fs::read(mnt.join("noise.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    m.stop();
    assert!(!mounted(&mnt));
    // With room again, the same cache serves every byte right.
    full.grow("64m");
    let m = mount();
    drop_caches();
    assert!(std::fs::read(mnt.join("noise.bin")).unwrap() == noise);
    m.stop();
    sharer.stop();
}
