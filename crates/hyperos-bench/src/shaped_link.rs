//! A shaped link for benchmarks: 100 Mbit/s and a 20 ms round trip between
//! two network namespaces, made of three:
//!
//! ```text
//!  sharer ── veth ── router ── veth ── reader
//!  10.88.N.2         tbf 100 Mbit/s    10.88.N+1.2
//!                    on both veths;
//!                    UDP to the sharer's port is redirected (nft) to a
//!                    relay that holds each datagram 10 ms each way
//! ```
//!
//! This kernel has no `netem`, so the delay is archive_bench's userspace
//! `relay` helper, started in the router. Processes enter a namespace with
//! `nsenter --net` only: mounts they make stay visible to the host.
//! Everything is torn down when the link is dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// A command run in network namespace `netns`, or on the host for `None`.
pub fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
    }
}

pub struct ShapedLink {
    pub sharer: String,
    pub reader: String,
    router: String,
    /// Where the sharer listens (UDP): the address its ticket names.
    pub sharer_addr: SocketAddr,
    relay: Option<Child>,
}

impl ShapedLink {
    /// Makes the namespaces `<tag>-s`, `<tag>-r`, `<tag>-c` on subnets
    /// 10.88.`net`.0/24 (sharer side) and 10.88.`net+1`.0/24 (reader side),
    /// shaping UDP to the sharer's `port`; `relay` is the archive_bench
    /// binary.
    pub fn up(tag: &str, net: u8, port: u16, relay: &Path) -> anyhow::Result<ShapedLink> {
        let mut link = ShapedLink {
            sharer: format!("{tag}-s"),
            router: format!("{tag}-r"),
            reader: format!("{tag}-c"),
            sharer_addr: format!("10.88.{net}.2:{port}").parse()?,
            relay: None,
        };
        let (s, r, c) = (&link.sharer, &link.router, &link.reader);
        let far = net + 1;
        let relay_port = port + 100;
        sh(&format!(
            "for ns in {s} {r} {c}; do ip netns add $ns; ip -n $ns link set lo up; done
             ip link add sh0 netns {s} type veth peer name rs0 netns {r}
             ip link add rc0 netns {r} type veth peer name cr0 netns {c}
             ip -n {s} addr add 10.88.{net}.2/24 dev sh0
             ip -n {r} addr add 10.88.{net}.1/24 dev rs0
             ip -n {r} addr add 10.88.{far}.1/24 dev rc0
             ip -n {c} addr add 10.88.{far}.2/24 dev cr0
             ip -n {s} link set sh0 up; ip -n {r} link set rs0 up
             ip -n {r} link set rc0 up; ip -n {c} link set cr0 up
             ip -n {s} route add default via 10.88.{net}.1
             ip -n {c} route add default via 10.88.{far}.1
             ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1
             for dev in rs0 rc0; do
               ip netns exec {r} tc qdisc add dev $dev root tbf rate 100mbit burst 64kb limit 4mb
             done
             ip netns exec {r} nft add table ip delay
             ip netns exec {r} nft add chain ip delay pre '{{ type nat hook prerouting priority -100; }}'
             ip netns exec {r} nft add rule ip delay pre iifname rc0 ip daddr 10.88.{net}.2 udp dport {port} redirect to :{relay_port}"
        ))?;
        let mut child = in_netns(Some(&link.router), relay)
            .args(["relay", "--delay-ms", "10"])
            .arg(format!("--listen=0.0.0.0:{relay_port}"))
            .arg(format!("--upstream={}", link.sharer_addr))
            .arg(format!("--from=10.88.{net}.1:0"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} relay", relay.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        link.relay = Some(child);
        if line.trim() != "relaying" {
            bail!("the delay relay did not start (it said {line:?})");
        }
        Ok(link)
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            let _ = relay.kill();
            let _ = relay.wait();
        }
        for ns in [&self.sharer, &self.router, &self.reader] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn sh(script: &str) -> anyhow::Result<()> {
    let out = Command::new("sh").args(["-ec", script]).output()?;
    if !out.status.success() {
        bail!(
            "setting up the shaped link failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
