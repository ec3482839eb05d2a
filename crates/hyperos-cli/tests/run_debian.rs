//! `hyperos run` of real Debian images on this host: a bookworm minbase
//! shared by another node runs `cat /etc/debian_version` while fetching a
//! small part of the image, and a bookworm with systemd boots (`--boot`) to
//! `systemctl is-system-running` = running or degraded.
//!
//! Needs root, systemd-nspawn and debootstrap (the root filesystems are made
//! once and cached under target/bench-cache/); skipped otherwise.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{HostState, Running, debian_rootfs, is_root};

fn skip(test: &str) -> bool {
    let root = is_root();
    let tools = ["/usr/bin/systemd-nspawn", "/usr/sbin/debootstrap"]
        .iter()
        .all(|p| Path::new(p).exists());
    if !(root && tools) {
        eprintln!("skipping {test}: needs root, systemd-nspawn and debootstrap");
    }
    !(root && tools)
}

#[test]
fn a_shared_debian_image_runs_a_command_fetching_a_small_part() {
    if skip("a_shared_debian_image_runs_a_command_fetching_a_small_part") {
        return;
    }
    let rootfs = debian_rootfs("bookworm-minbase", &[]);
    let version = std::fs::read_to_string(rootfs.join("etc/debian_version")).unwrap();
    let publisher = HostState::new();
    let reader = HostState::new();
    let share = Running::start(publisher.cmd(&[
        "share",
        rootfs.to_str().unwrap(),
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--no-dht",
        "--no-lan",
    ]));
    let shared: serde_json::Value = serde_json::from_str(&share.first_line).unwrap();
    let (link, ticket) = (
        shared["link"].as_str().unwrap(),
        shared["ticket"].as_str().unwrap(),
    );
    let started = Instant::now();
    let out = reader.ok(&[
        "run",
        "--name",
        "deb",
        "--no-dht",
        "--no-lan",
        "--peer",
        ticket,
        link,
        "--",
        "cat",
        "/etc/debian_version",
    ]);
    let cold = started.elapsed();
    assert_eq!(out, version);
    let last = reader.last_run("deb");
    let fetched = last["bytes_fetched"].as_u64().unwrap();
    let len = last["image_len"].as_u64().unwrap();
    eprintln!(
        "cold run: {:.2} s, fetched {fetched} of {len} bytes",
        cold.as_secs_f64()
    );
    assert!(
        fetched > 0 && fetched * 20 < len,
        "fetched {fetched} of {len} bytes: more than 5%"
    );
    // Warm: the same command reads from the cache, with the sharer gone.
    share.stop();
    let out = reader.ok(&[
        "run",
        "--name",
        "deb",
        "--no-dht",
        "--no-lan",
        "--deadline",
        "5",
        link,
        "--",
        "cat",
        "/etc/debian_version",
    ]);
    assert_eq!(out, version);
}

#[test]
fn debian_with_systemd_boots_to_running() {
    if skip("debian_with_systemd_boots_to_running") {
        return;
    }
    let rootfs = debian_rootfs("bookworm-systemd", &["systemd-sysv"]);
    let state = HostState::new();
    let out_dir = tempfile::tempdir().unwrap();
    let image = rootfs.to_str().unwrap();
    // A unit that reports the system's state and powers it off, put into
    // the container's writable layer by a first run; the image stays as
    // it is.
    let unit = "[Unit]\nAfter=multi-user.target\n[Service]\nType=simple\n\
                ExecStart=/bin/sh -c 'systemctl is-system-running --wait > /out/state; systemctl poweroff'\n\
                [Install]\nWantedBy=multi-user.target\n";
    std::fs::write(out_dir.path().join("report.service"), unit).unwrap();
    let bind = format!("{}:/out", out_dir.path().display());
    state.ok(&[
        "run",
        "--name",
        "sd",
        "--bind",
        &bind,
        image,
        "--",
        "sh",
        "-c",
        "cp /out/report.service /etc/systemd/system/ && systemctl enable report.service",
    ]);
    assert!(!rootfs.join("etc/systemd/system/report.service").exists());
    let started = Instant::now();
    let mut child = state
        .cmd(&["run", "--name", "sd", "--boot", "--bind", &bind, image])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the booted container did not power off within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("boot to poweroff: {:.2} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "{status}");
    let state_line = std::fs::read_to_string(out_dir.path().join("state")).unwrap();
    assert!(
        matches!(state_line.trim(), "running" | "degraded"),
        "systemctl is-system-running said {state_line:?}"
    );
}
