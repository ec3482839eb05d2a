//! Running a container inside a HyperOS VM: the guest carries `hyperos`
//! itself, so `hyperos run --vm` becomes a `hyperos run` in the guest, over
//! SSH, fetching peer to peer from the host's shares (through QEMU's user
//! networking, where the host is 10.0.2.2) and from any other peer.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use hyperos_p2p::PeerTicket;

use crate::{RunRequest, Source};

/// The host as a guest on QEMU's user-mode network sees it.
pub const USER_NET_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// The peers a guest should fetch `request`'s archive from: the tickets
/// given, and every running share of this archive in the host's state
/// directory. A ticket for this host's loopback also gets the same ports at
/// [`USER_NET_HOST`], where a guest on user networking reaches them; the
/// original addresses stay (a bridged guest reaches those).
pub fn guest_peers(state_root: &Path, request: &RunRequest) -> anyhow::Result<Vec<String>> {
    let Source::Link(link) = &request.source else {
        anyhow::bail!(
            "--vm runs dat:// links: share the image first (`hyperos share PATH --daemon`) and run the link it prints"
        );
    };
    let mut tickets = Vec::new();
    for peer in &request.peers {
        let ticket: PeerTicket = peer.parse()?;
        tickets.push(ticket);
    }
    for share in hyperos_p2p::local_shares(state_root) {
        if share.key != link.key.to_hex() {
            continue;
        }
        if let Ok(ticket) = share.ticket.parse::<PeerTicket>() {
            tickets.push(ticket);
        }
    }
    Ok(tickets.iter().map(|t| via_host(t).to_string()).collect())
}

/// `ticket` with, for each port it listens on over IPv4 on this host's
/// loopback or any address, the same port at [`USER_NET_HOST`] first.
fn via_host(ticket: &PeerTicket) -> PeerTicket {
    let ports: BTreeSet<u16> = ticket
        .addrs
        .iter()
        .filter(|a| a.is_ipv4() && (a.ip().is_loopback() || a.ip().is_unspecified()))
        .map(SocketAddr::port)
        .collect();
    if ports.is_empty() {
        return ticket.clone();
    }
    let mut addrs: Vec<SocketAddr> = ports
        .into_iter()
        .map(|port| SocketAddr::from((USER_NET_HOST, port)))
        .collect();
    addrs.extend(ticket.addrs.iter().copied());
    ticket.with_addrs(addrs)
}

/// The `hyperos run` command line to run in the guest for `request`, with
/// `peers` (see [`guest_peers`]).
pub fn guest_command(request: &RunRequest, peers: &[String]) -> Vec<String> {
    let mut line = vec!["hyperos".to_owned(), "run".to_owned()];
    if let Some(name) = &request.name {
        line.extend(["--name".to_owned(), name.clone()]);
    }
    if request.boot {
        line.push("--boot".to_owned());
    }
    if request.volatile {
        line.push("--volatile".to_owned());
    }
    if request.ram {
        line.push("--ram".to_owned());
    }
    line.extend([
        "--deadline".to_owned(),
        request.deadline.as_secs().to_string(),
    ]);
    for bind in &request.binds {
        line.push(format!("--bind={bind}"));
    }
    for option in &request.nspawn_options {
        line.push(format!("--sn-{}", option.trim_start_matches("--")));
    }
    match &request.discovery.dht {
        None => line.push("--no-dht".to_owned()),
        Some(nodes) => {
            for node in nodes {
                line.push(format!("--dht-bootstrap={node}"));
            }
        }
    }
    if !request.discovery.lan {
        line.push("--no-lan".to_owned());
    }
    for peer in peers {
        line.extend(["--peer".to_owned(), peer.clone()]);
    }
    line.push(request.source.to_string());
    if !request.command.is_empty() {
        line.push("--".to_owned());
        line.extend(request.command.iter().cloned());
    }
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Parsed, parse};

    fn request(args: &[&str]) -> RunRequest {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args).unwrap() {
            Parsed::Container(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    const KEY: &str = "dat://0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn the_guest_command_parses_back_to_the_same_request() {
        let r = request(&[
            "--vm",
            "--name",
            "web",
            "--volatile",
            "--bind",
            "/a:/b",
            "--sn-private-network",
            "--sn-setenv=X=1",
            "--no-lan",
            "--dht-bootstrap",
            "10.0.2.2:6881",
            "--deadline",
            "7",
            KEY,
            "--",
            "cat",
            "/etc/debian_version",
        ]);
        let line = guest_command(&r, &["T".to_owned()]);
        assert_eq!(&line[..2], ["hyperos", "run"]);
        let back = request(&line[2..].iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(back.vm, None, "the guest runs it itself");
        assert_eq!(back.peers, ["T"]);
        let expected = RunRequest {
            vm: None,
            peers: vec!["T".to_owned()],
            ..r
        };
        assert_eq!(back, expected);
    }

    #[test]
    fn loopback_tickets_are_reached_through_the_user_network_host() {
        let ticket: PeerTicket =
            "hyperospeerafhqhyhgv3ydba4hcjhxepmguapawnandnhjmjhknvxkehcg32ohoaiep4aaaaoe3q"
                .parse()
                .unwrap();
        let local = ticket.with_addrs(["127.0.0.1:4000".parse().unwrap()]);
        let via = via_host(&local);
        assert_eq!(via.id, local.id);
        assert_eq!(
            via.addrs,
            [
                "10.0.2.2:4000".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:4000".parse().unwrap()
            ]
        );
        let remote = ticket.with_addrs(["192.0.2.7:4000".parse().unwrap()]);
        assert_eq!(via_host(&remote), remote);
        let dir = tempfile::tempdir().unwrap();
        let r = request(&["--vm", "--peer", &local.to_string(), KEY]);
        assert_eq!(guest_peers(dir.path(), &r).unwrap(), [via.to_string()]);
    }

    #[test]
    fn paths_do_not_go_to_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let r = request(&["--vm", "./image.erofs"]);
        let err = guest_peers(dir.path(), &r).unwrap_err().to_string();
        assert!(err.contains("--vm runs dat:// links"), "{err}");
    }
}
