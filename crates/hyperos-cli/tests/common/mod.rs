//! Shared fixtures of the end-to-end tests: the real image, a private state
//! directory per test, and the `hyperos` binary run as a user would.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hyperos");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The built image (kernel, initrd.gz), built once for all test processes:
/// a file lock serialises concurrent builders and the build is cached.
pub fn image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let out = repo().join("image/out");
            std::fs::create_dir_all(&out).unwrap();
            let lock = std::fs::File::create(repo().join("image/.build.lock")).unwrap();
            lock.lock().unwrap();
            if !(out.join("kernel").exists() && out.join("initrd.gz").exists()) {
                let status = Command::new(BIN)
                    .args(["image", "build"])
                    .status()
                    .expect("run hyperos image build");
                assert!(status.success(), "hyperos image build failed");
            }
            lock.unlock().unwrap();
            out
        })
        .clone()
}

/// A private state directory with its own key, and every instance booted
/// in it killed when dropped.
pub struct Env {
    pub state: tempfile::TempDir,
    pub image: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let image = image();
        let state = tempfile::Builder::new()
            .prefix("hyperos-test-")
            .tempdir()
            .unwrap();
        let env = Env { state, image };
        let out = env.cmd(&["init"]).output().unwrap();
        assert!(out.status.success(), "init: {}", text(&out.stderr));
        env
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("HYPEROS_STATE_DIR", self.state.path())
            .env("HYPEROS_IMAGE_DIR", &self.image)
            .env("HYPEROS_KEYSTORE", "file")
            .env_remove("HYPEROS_INSTANCE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hyperos {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs and expects failure, returning stderr (which must be one line
    /// starting with "hyperos: ", unless `multi_line`).
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "hyperos {args:?} should fail");
        let err = text(&out.stderr);
        assert!(err.starts_with("hyperos: "), "{args:?}: {err}");
        err
    }

    /// Boots an instance and returns its `--json` description.
    pub fn boot(&self, name: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["boot", "--name", name, "--json", "--memory", "384M"];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("boot --json output {out:?}: {e}"))
    }

    pub fn status(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", name, "--json"])).unwrap()
    }

    /// Waits (polling, as a test may) until the instance is in `state`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(name);
            if status["state"] == state {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became {state}: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.state.path().join("instances").join(name)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.state.path().join("instances")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let _ = self.cmd(&["kill", &name]).output();
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn pid_alive(pid: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    !stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// A running `hyperos` process whose first stdout line has been read.
pub struct Running {
    pub child: Child,
    pub first_line: String,
}

impl Running {
    pub fn start(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(first_line) => Running { child, first_line },
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("no output from {command:?}: {}", text(&out.stderr));
            }
        }
    }

    pub fn stop(mut self) {
        // SIGTERM, as `hyperos unmount` and service managers send.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "process did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first, so a mount process unmounts what it mounted even
        // when a test fails half-way; SIGKILL if it does not stop.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Debian mirror apt uses here (deb822 or one-line sources), else
/// deb.debian.org.
pub fn debian_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            if entry
                .path()
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                texts.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for t in &texts {
        for line in t.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let url = match w.as_slice() {
                ["URIs:", url, ..] => url,
                ["deb", rest @ ..] => match rest.iter().find(|x| x.starts_with("http")) {
                    Some(url) => url,
                    None => continue,
                },
                _ => continue,
            };
            if url.starts_with("http") && url.trim_end_matches('/').ends_with("/debian") {
                return (*url).to_owned();
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

/// A Debian bookworm minbase root filesystem with `include`d packages,
/// made once with debootstrap and kept under target/bench-cache/NAME
/// (shared with the benchmarks).
pub fn debian_rootfs(name: &str, include: &[&str]) -> PathBuf {
    let cache = repo().join("target/bench-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let rootfs = cache.join(name);
    let lock = std::fs::File::create(cache.join(".rootfs.lock")).unwrap();
    lock.lock().unwrap();
    if !rootfs.join("usr/bin/apt-get").exists() {
        let tmp = cache.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut command = Command::new("debootstrap");
        command.arg("--variant=minbase");
        if !include.is_empty() {
            command.arg(format!("--include={}", include.join(",")));
        }
        let out = command
            .arg("bookworm")
            .arg(&tmp)
            .arg(debian_mirror())
            .output()
            .expect("debootstrap (apt-get install debootstrap)");
        assert!(out.status.success(), "debootstrap: {}", text(&out.stderr));
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::rename(&tmp, &rootfs).unwrap();
    }
    lock.unlock().unwrap();
    rootfs
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A private state directory for host-side commands (no VM image), with
/// whatever a failed test left running or mounted under it cleaned up.
pub struct HostState {
    dir: tempfile::TempDir,
}

impl HostState {
    pub fn new() -> HostState {
        HostState {
            dir: tempfile::Builder::new()
                .prefix("hyperos-run-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("HYPEROS_STATE_DIR", self.dir.path())
            .env("HYPEROS_KEYSTORE", "file")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hyperos {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn container(&self, name: &str) -> PathBuf {
        self.dir.path().join("containers").join(name)
    }

    pub fn last_run(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.container(name).join("last-run.json")).unwrap())
            .unwrap()
    }

    /// Fails, naming them, if anything is mounted under the state directory.
    pub fn assert_nothing_mounted(&self) {
        let mounts = self.mounts();
        assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    }

    /// Mounts under the state directory (there must be none between runs).
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        // Whatever a failed test left running or mounted.
        let _ = Command::new("pkill")
            .args(["-f", &self.dir.path().to_string_lossy()])
            .status();
        for m in self.mounts().iter().rev() {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

/// A tiny root filesystem: static busybox and its applets, os-release.
pub fn busybox_root(dir: &Path) {
    for d in [
        "bin", "etc", "usr/lib", "tmp", "proc", "sys", "dev", "run", "var",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in text(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(dir.join("usr/lib/os-release"), "ID=hyperos-test\n").unwrap();
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/greeting"), "hello from the image\n").unwrap();
}
