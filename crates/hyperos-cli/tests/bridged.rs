//! `--net bridged`: the guest on a bridge in a network namespace made by the
//! test, with its own dnsmasq; the IP comes from dnsmasq's lease file,
//! matched by the hostname the guest sent.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, Env, text};

struct Netns {
    name: String,
    dnsmasq: Option<std::process::Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
}

/// Runs hyperos inside the namespace, in a private mount namespace where
/// /etc/qemu/bridge.conf allows the test's bridge.
fn in_ns(env: &Env, ns: &str, qemu_conf: &Path, args: &[&str]) -> std::process::Output {
    let script = format!(
        "mkdir -p /etc/qemu && mount --bind {} /etc/qemu && exec \"$0\" \"$@\"",
        qemu_conf.display()
    );
    let mut c = Command::new("ip");
    c.args([
        "netns", "exec", ns, "unshare", "-m", "sh", "-c", &script, BIN,
    ]);
    c.args(args)
        .env("HYPEROS_STATE_DIR", env.state.path())
        .env("HYPEROS_IMAGE_DIR", &env.image)
        .env("HYPEROS_KEYSTORE", "file")
        .stdin(std::process::Stdio::null());
    c.output().unwrap()
}

#[test]
fn bridged_guest_ip_comes_from_the_dhcp_lease_file() {
    if unsafe_not_root() {
        eprintln!("needs root for network namespaces; skipped");
        return;
    }
    let env = Env::new();
    let ns = format!("hyperos-br-{}", std::process::id());
    let mut netns = Netns {
        name: ns.clone(),
        dnsmasq: None,
    };
    sh(&format!(
        "ip netns add {ns}
         ip -n {ns} link set lo up
         ip -n {ns} link add br0 type bridge
         ip -n {ns} addr add 10.77.0.1/24 dev br0
         ip -n {ns} link set br0 up"
    ));
    let work = tempfile::tempdir().unwrap();
    let qemu_conf = work.path().join("qemu");
    std::fs::create_dir(&qemu_conf).unwrap();
    std::fs::write(qemu_conf.join("bridge.conf"), "allow br0\n").unwrap();
    let leases = work.path().join("dnsmasq.leases");
    netns.dnsmasq = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "dnsmasq",
                "--keep-in-foreground",
                "--port=0",
                "--bind-interfaces",
            ])
            .args([
                "--interface=br0",
                "--dhcp-range=10.77.0.50,10.77.0.99,12h",
                "--dhcp-authoritative",
            ])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!(
                "--pid-file={}",
                work.path().join("dnsmasq.pid").display()
            ))
            .spawn()
            .expect("dnsmasq"),
    );

    let out = in_ns(
        &env,
        &ns,
        &qemu_conf,
        &[
            "boot",
            "--name",
            "br",
            "--net",
            "bridged",
            "--bridge",
            "br0",
            "--hostname",
            "bridge-cat",
            "--lease-file",
            leases.to_str().unwrap(),
            "--memory",
            "384M",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "boot: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let booted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ip = booted["ip"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.77.0."), "{booted}");

    // The address is the one dnsmasq leased to the hostname.
    let lease_text = std::fs::read_to_string(&leases).unwrap();
    let line = lease_text
        .lines()
        .find(|l| l.contains(" bridge-cat "))
        .unwrap_or_else(|| panic!("{lease_text}"));
    assert_eq!(line.split_whitespace().nth(2), Some(ip.as_str()));
    let lease: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.instance_dir("br").join("lease.json")).unwrap())
            .unwrap();
    assert_eq!(lease["source"], "lease_file");

    // SSH straight to the guest's address on the bridge.
    let out = in_ns(&env, &ns, &qemu_conf, &["run", "--name", "br", "hostname"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "bridge-cat");
    let out = in_ns(&env, &ns, &qemu_conf, &["halt", "br"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(netns);
}

fn unsafe_not_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(true)
}
