//! `hyperos run` on this host: containers from a directory, an image file,
//! an OCI archive and a `dat://` archive shared by another node, under real
//! systemd-nspawn, with real overlay, loop and FUSE mounts. Checks the
//! writable layer (kept, `--volatile`), exit codes and stdio, isolation from
//! inside the container, a hostile image, `stop`, SIGTERM, a `kill -9` of
//! `hyperos` and the cleanup after it, and `ps` / `rm`.
//!
//! Needs root and systemd-nspawn; skipped otherwise.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{HostState as State, Running, busybox_root, is_root, text};

fn skip(test: &str) -> bool {
    let root = is_root();
    let nspawn = Path::new("/usr/bin/systemd-nspawn").exists();
    if !(root && nspawn) {
        eprintln!("skipping {test}: needs root and systemd-nspawn");
    }
    !(root && nspawn)
}

#[test]
fn a_directory_runs_with_a_kept_layer_exit_codes_and_stdio() {
    if skip("a_directory_runs_with_a_kept_layer_exit_codes_and_stdio") {
        return;
    }
    let state = State::new();
    let image = tempfile::tempdir().unwrap();
    busybox_root(image.path());
    let img = image.path().to_str().unwrap();

    // One command, stdio attached, its output and exit code.
    let out = state.ok(&["run", "--name", "box", img, "--", "cat", "/etc/greeting"]);
    assert_eq!(out, "hello from the image\n");
    let out = state.run(&[
        "run",
        "--name",
        "box",
        img,
        "--",
        "sh",
        "-c",
        "echo to-err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("to-err"));
    let mut child = state
        .cmd(&["run", "--name", "box", img, "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "PIPED IN\n");

    // The writable layer survives the run, and reruns see it; the image
    // itself is never written.
    state.ok(&[
        "run",
        "--name",
        "box",
        img,
        "--",
        "sh",
        "-c",
        "echo kept > /etc/greeting; echo new > /root-file; sync",
    ]);
    assert_eq!(
        state.ok(&[
            "run",
            "--name",
            "box",
            img,
            "--",
            "cat",
            "/etc/greeting",
            "/root-file"
        ]),
        "kept\nnew\n"
    );
    assert_eq!(
        std::fs::read_to_string(image.path().join("etc/greeting")).unwrap(),
        "hello from the image\n"
    );
    assert!(!image.path().join("root-file").exists());
    // --volatile: a fresh layer, thrown away.
    let out = state.ok(&[
        "run",
        "--name",
        "box",
        "--volatile",
        img,
        "--",
        "sh",
        "-c",
        "cat /etc/greeting; echo gone > /v",
    ]);
    assert_eq!(
        out, "hello from the image\n",
        "a volatile run starts from the image"
    );
    let out = state.run(&["run", "--name", "box", img, "--", "cat", "/v"]);
    assert!(!out.status.success(), "the volatile write was kept");
    state.assert_nothing_mounted();

    // --bind and --sn-X reach nspawn.
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("in"), "from the host\n").unwrap();
    let bind = format!("{}:/mnt", shared.path().display());
    let out = state.ok(&[
        "run",
        "--name",
        "box",
        "--bind",
        &bind,
        "--sn-setenv=COLOR=blue",
        img,
        "--",
        "sh",
        "-c",
        "cat /mnt/in; echo $COLOR; hostname",
    ]);
    assert_eq!(out, "from the host\nblue\nbox\n");

    // ps lists it; rm asks for --force without a terminal, then removes.
    let ps: serde_json::Value = serde_json::from_str(&state.ok(&["ps", "--json"])).unwrap();
    let row = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "box")
        .unwrap();
    assert_eq!(row["kind"], "container");
    assert_eq!(row["state"], "stopped");
    assert_eq!(row["last_run"]["exit_code"], 0);
    let out = state.run(&["rm", "box"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        state.container("box").join("upper/root-file").exists(),
        "rm without --force deleted data"
    );
    state.ok(&["rm", "box", "--force"]);
    assert!(!state.container("box").exists());
}

#[test]
fn bad_input_gets_one_clear_line() {
    if skip("bad_input_gets_one_clear_line") {
        return;
    }
    let state = State::new();
    let image = tempfile::tempdir().unwrap();
    busybox_root(image.path());
    let img = image.path().to_str().unwrap();
    let not_image = image.path().join("etc/greeting");
    for (args, needle) in [
        (
            vec!["run", "/nonexistent/image", "--", "true"],
            "does not exist",
        ),
        (
            vec!["run", not_image.to_str().unwrap(), "--", "true"],
            "not",
        ),
        (
            vec!["run", "--name", "Bad_Name", img, "--", "true"],
            "is not a container name",
        ),
        (vec!["run", "dat://zz", "--", "true"], "dat://"),
        (vec!["run", img, "extra"], "put the command after --"),
        (vec!["run", "--bogus", img], "unknown option --bogus"),
        (
            vec!["run", "-b", img, "--", "sh"],
            "--boot runs the image's init",
        ),
        (vec!["stop", "nothing"], "is not running"),
        (vec!["rm", "nothing", "--force"], "nothing"),
    ] {
        let out = state.run(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = text(&out.stderr);
        assert!(
            err.starts_with("hyperos: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// A field of /proc/self/status inside the container.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_owned()
}

#[test]
fn the_container_is_isolated() {
    if skip("the_container_is_isolated") {
        return;
    }
    let state = State::new();
    let image = tempfile::tempdir().unwrap();
    busybox_root(image.path());
    let img = image.path().to_str().unwrap();
    let status = state.ok(&["run", "--volatile", img, "--", "cat", "/proc/self/status"]);
    assert_eq!(status_field(&status, "Seccomp:"), "2");
    let cap_eff = u64::from_str_radix(&status_field(&status, "CapEff:"), 16).unwrap();
    const CAP_SYS_ADMIN: u64 = 21;
    assert_eq!(
        cap_eff & (1 << CAP_SYS_ADMIN),
        0,
        "CAP_SYS_ADMIN in {cap_eff:x}"
    );
    let out = state.run(&[
        "run",
        "--volatile",
        img,
        "--",
        "head",
        "-c",
        "16",
        "/proc/kcore",
    ]);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "/proc/kcore readable"
    );
    // Its own pid, mount, uts and ipc namespaces.
    let inside = state.ok(&[
        "run",
        "--volatile",
        img,
        "--",
        "sh",
        "-c",
        "for n in pid mnt uts ipc; do readlink /proc/self/ns/$n; done; echo $$",
    ]);
    let mut lines: Vec<&str> = inside.lines().collect();
    let pid = lines.pop().unwrap();
    for (n, line) in ["pid", "mnt", "uts", "ipc"].iter().zip(&lines) {
        let host = std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        assert_ne!(
            host.to_string_lossy(),
            *line,
            "{n} namespace shared with the host"
        );
    }
    assert!(
        pid.parse::<u32>().unwrap() < 10,
        "the command is not in its own pid namespace: pid {pid}"
    );
}

#[test]
fn a_hostile_image_cannot_touch_the_host() {
    if skip("a_hostile_image_cannot_touch_the_host") {
        return;
    }
    let state = State::new();
    let image = tempfile::tempdir().unwrap();
    let root = image.path();
    busybox_root(root);
    // Host files the image points at.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let target_dir = host.path().join("dir");
    std::fs::create_dir(&target_dir).unwrap();
    let host_str = host.path().to_str().unwrap();
    // resolv.conf and /etc/hostname as absolute and relative links out; a
    // link to the host's secret; device nodes; a setuid shell.
    std::os::unix::fs::symlink(&secret, root.join("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../../../../../..{host_str}/dir/hostname"),
        root.join("etc/hostname"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, root.join("secret-link")).unwrap();
    std::os::unix::fs::symlink(&target_dir, root.join("outside")).unwrap();
    let mknod = |path: &Path, major: u32, minor: u32| {
        let status = Command::new("mknod")
            .arg(path)
            .args(["c", &major.to_string(), &minor.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    mknod(&root.join("mem"), 1, 1);
    mknod(&root.join("disk"), 8, 0);
    std::fs::copy(root.join("bin/busybox"), root.join("suid-busybox")).unwrap();
    std::fs::set_permissions(
        root.join("suid-busybox"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();

    let script = "cat /secret-link; cat /etc/resolv.conf; echo pwned > /secret-link; echo pwned > /outside/x; \
                  echo pwned > /etc/hostname; head -c 1 /mem && echo READ-MEM; head -c 1 /disk && echo READ-DISK; \
                  /suid-busybox sh -c 'echo pwned > /outside/suid'; true";
    let img = root.to_str().unwrap();
    let out = state.run(&["run", "--name", "hostile", img, "--", "sh", "-c", script]);
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("host secret"),
        "read a host file: {stdout}"
    );
    assert!(!stdout.contains("READ-"), "a device node worked: {stdout}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret\n");
    let left: Vec<_> = std::fs::read_dir(&target_dir).unwrap().collect();
    assert!(left.is_empty(), "wrote into a host directory: {left:?}");
    // The image's own tree is untouched; writes went to the layer.
    assert!(root.join("etc/resolv.conf").is_symlink());
    assert!(!root.join("outside/x").exists());
    state.assert_nothing_mounted();
}

/// Waits until `f` holds.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn container_state(state: &State, name: &str) -> String {
    let ps: serde_json::Value = serde_json::from_str(&state.ok(&["ps", "--json"])).unwrap();
    ps.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn stop_sigterm_and_kill_9_leave_nothing_behind_and_keep_synced_data() {
    if skip("stop_sigterm_and_kill_9_leave_nothing_behind_and_keep_synced_data") {
        return;
    }
    let state = State::new();
    let image = tempfile::tempdir().unwrap();
    busybox_root(image.path());
    // An image file this time, through a loop device.
    let erofs = image.path().with_extension("erofs");
    let out = Command::new("mkfs.erofs")
        .arg(&erofs)
        .arg(image.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let img = erofs.to_str().unwrap();
    let long = "echo data > /synced; sync /synced; echo up; exec sleep 600";

    // hyperos stop
    let running =
        Running::start(state.cmd(&["run", "--name", "long", img, "--", "sh", "-c", long]));
    assert_eq!(running.first_line, "up");
    assert_eq!(container_state(&state, "long"), "running");
    assert!(!state.mounts().is_empty());
    state.ok(&["stop", "long"]);
    assert_eq!(container_state(&state, "long"), "stopped");
    state.assert_nothing_mounted();
    drop(running);

    // SIGTERM to hyperos run
    let running =
        Running::start(state.cmd(&["run", "--name", "long", img, "--", "sh", "-c", long]));
    running.stop();
    state.assert_nothing_mounted();
    assert_eq!(
        state.ok(&["run", "--name", "long", img, "--", "cat", "/synced"]),
        "data\n"
    );

    // Ctrl-C (SIGINT) to hyperos run
    let mut running =
        Running::start(state.cmd(&["run", "--name", "long", img, "--", "sh", "-c", long]));
    let status = Command::new("kill")
        .args(["-INT", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(
        "hyperos run to stop on SIGINT",
        Duration::from_secs(20),
        || running.child.try_wait().unwrap().is_some(),
    );
    state.assert_nothing_mounted();
    assert_eq!(container_state(&state, "long"), "stopped");

    // kill -9: nspawn goes with it; the next run cleans the mounts up.
    let mut running = Running::start(state.cmd(&[
        "run",
        "--name",
        "long",
        img,
        "--",
        "sh",
        "-c",
        "echo more > /synced2; sync /synced2; echo up; exec sleep 600",
    ]));
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    let root = state.container("long").join("mnt/root");
    wait_for("nspawn to stop", Duration::from_secs(20), || {
        let out = Command::new("pgrep")
            .args(["-f", &format!("directory={}", root.display())])
            .output()
            .unwrap();
        out.stdout.is_empty()
    });
    assert!(
        !state.mounts().is_empty(),
        "expected a killed run to leave its mounts"
    );
    let out = state.run(&[
        "run", "--name", "long", img, "--", "cat", "/synced", "/synced2",
    ]);
    assert_eq!(text(&out.stdout), "data\nmore\n", "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cleaned up"),
        "{}",
        text(&out.stderr)
    );
    state.assert_nothing_mounted();
    assert!(!state.container("long").join("run.json").exists());
}

/// A `docker save` archive of the busybox root with an entrypoint, env and
/// working directory.
fn docker_archive(root: &Path, out: &Path) {
    let work = tempfile::tempdir().unwrap();
    let layer = work.path().join("layer.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo entry $GREETING in $(pwd)"],
            "Env": ["GREETING=hi-oci", "PATH=/bin"],
            "WorkingDir": "/srv"
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    std::fs::write(work.path().join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["t:1"], "Layers": ["layer.tar"]}]);
    std::fs::write(work.path().join("manifest.json"), manifest.to_string()).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(work.path())
        .arg("-cf")
        .arg(out)
        .args(["manifest.json", "config.json", "layer.tar"])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn an_oci_archive_runs_its_entrypoint_locally_and_lazily_over_the_network() {
    if skip("an_oci_archive_runs_its_entrypoint_locally_and_lazily_over_the_network") {
        return;
    }
    let image = tempfile::tempdir().unwrap();
    busybox_root(image.path());
    std::fs::create_dir(image.path().join("srv")).unwrap();
    let tar = image.path().with_extension("tar");
    docker_archive(image.path(), &tar);

    // From the archive file itself.
    let state = State::new();
    let out = state.ok(&["run", "--volatile", tar.to_str().unwrap()]);
    assert_eq!(out, "entry hi-oci in /srv\n");

    // Shared by another node, run lazily by its link: the config travels
    // in the signed manifest.
    let publisher = State::new();
    let share = Running::start(publisher.cmd(&[
        "share",
        tar.to_str().unwrap(),
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--no-dht",
        "--no-lan",
    ]));
    let shared: serde_json::Value = serde_json::from_str(&share.first_line).unwrap();
    let link = shared["link"].as_str().unwrap();
    let ticket = shared["ticket"].as_str().unwrap();
    let out = state.ok(&[
        "run", "--name", "oci", "--no-dht", "--no-lan", "--peer", ticket, link,
    ]);
    assert_eq!(out, "entry hi-oci in /srv\n");
    let last = state.last_run("oci");
    let (fetched, len) = (
        last["bytes_fetched"].as_u64().unwrap(),
        last["image_len"].as_u64().unwrap(),
    );
    assert!(fetched > 0 && len > 0, "fetched {fetched} of {len}");
    assert_eq!(state.last_run("oci")["source"], link);
    // A command given wins over the entrypoint; the cache serves a rerun.
    let out = state.ok(&[
        "run",
        "--name",
        "oci",
        "--no-dht",
        "--no-lan",
        "--peer",
        ticket,
        link,
        "--",
        "cat",
        "/etc/greeting",
    ]);
    assert_eq!(out, "hello from the image\n");
    // While it runs, ps shows what it fetched.
    let running = Running::start(state.cmd(&[
        "run",
        "--name",
        "oci2",
        "--no-dht",
        "--no-lan",
        "--peer",
        ticket,
        link,
        "--",
        "sh",
        "-c",
        "cat /etc/greeting; exec sleep 600",
    ]));
    assert_eq!(running.first_line, "hello from the image");
    let mut progress = serde_json::Value::Null;
    wait_for("progress in ps", Duration::from_secs(10), || {
        let ps: serde_json::Value = serde_json::from_str(&state.ok(&["ps", "--json"])).unwrap();
        progress = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "oci2")
            .map(|r| r["progress"].clone())
            .unwrap_or_default();
        progress["image_len"].as_u64().is_some_and(|l| l == len)
    });
    assert!(
        progress["bytes_fetched"].as_u64().unwrap()
            + progress["bytes_from_cache"].as_u64().unwrap()
            > 0,
        "{progress}"
    );
    assert_eq!(progress["peers_known"], 1, "{progress}");
    state.ok(&["stop", "oci2"]);
    drop(running);
    state.assert_nothing_mounted();
    share.stop();
}
