//! The `hyperos run` command line.
//!
//! `run` has two forms, told apart by the first argument that is not an
//! option: a `dat://` link or a path (a file or directory that exists, or
//! anything with a `/`) runs a container; anything else is a command for the
//! VM, as the predecessor's `linux run CMD` was:
//!
//! ```text
//! hyperos run [OPTIONS] dat://KEY[+N] | PATH [-- CMD …]     a container
//! hyperos run [-n INSTANCE] CMD …                           a command in the VM
//! ```
//!
//! Every `--sn-X[=V]` goes to systemd-nspawn as `--X[=V]`, so it can't be
//! parsed by a declarative parser; this one is small and total.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyperos_archive::ArchiveLink;
use hyperos_p2p::DiscoveryConfig;

/// What to run a container from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An archive, fetched lazily from peers.
    Link(ArchiveLink),
    /// A local filesystem image, directory, or OCI/Docker archive.
    Path(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Link(link) => write!(f, "{link}"),
            Source::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A `hyperos run` of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub source: Source,
    /// The container's name: its writable layer is kept under it.
    pub name: Option<String>,
    /// Boot the image's init (`systemd-nspawn -b`).
    pub boot: bool,
    /// `SRC:DST` bind mounts (`systemd-nspawn --bind`).
    pub binds: Vec<String>,
    /// Options for systemd-nspawn, from `--sn-X[=V]`, as `--X[=V]`.
    pub nspawn_options: Vec<String>,
    /// Discard the writable layer on exit.
    pub volatile: bool,
    /// Peers to fetch from (tickets as `hyperos share` prints them).
    pub peers: Vec<String>,
    /// Keep nothing of the image on disk.
    pub ram: bool,
    /// How long a read may wait for peers before it fails with EIO.
    pub deadline: Duration,
    /// Run inside this HyperOS VM instead of on this host.
    pub vm: Option<String>,
    /// Where to find peers besides the tickets.
    pub discovery: DiscoveryConfig,
    /// The command; empty means the image's entrypoint, else a shell.
    pub command: Vec<String>,
}

/// What a `hyperos run` command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Container(Box<RunRequest>),
    /// A command for a VM instance (`None`: the default instance).
    VmCommand {
        instance: Option<String>,
        command: Vec<String>,
    },
    Help,
}

/// A command line `run` can't make sense of; the message names the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UsageError(String);

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

pub const USAGE: &str = "\
Run a container from a dat:// archive or a local image, or a command in the VM.

Usage: hyperos run [OPTIONS] dat://KEY[+VERSION] | PATH [-- CMD…]
       hyperos run [-n INSTANCE] CMD…        (a command in the VM)

PATH is a filesystem image (ext4, EROFS, squashfs), a directory, or an OCI or
Docker image archive.

Options:
  -b, --boot             Boot the image's init (systemd-nspawn -b)
      --name NAME        The container's name; its writable layer is kept under it
      --bind SRC:DST     Bind-mount a host path into the container (repeatable)
      --sn-X[=V]         Pass --X[=V] to systemd-nspawn (repeatable)
      --volatile         Discard the writable layer on exit
      --peer TICKET      A peer to fetch from (repeatable)
      --ram              Keep nothing of the image on disk
      --deadline SECS    How long a read waits for peers before EIO [default: 30]
      --vm [INSTANCE]    Run inside a booted HyperOS VM [default instance: default]
      --dht-bootstrap H:P  A Mainline DHT node to bootstrap from (repeatable;
                         env HYPEROS_DHT_BOOTSTRAP; default: the public ones)
      --no-dht           Don't look up peers on the Mainline DHT
      --no-lan           Don't look up peers on the local network (mDNS)
  -h, --help             Print this help

Without CMD the image's configured entrypoint runs, else a shell.";

/// Whether `arg` names a container source rather than a command.
fn is_source(arg: &str) -> bool {
    arg.starts_with("dat://") || arg.contains('/') || Path::new(arg).exists()
}

/// Parses the arguments after `run`.
pub fn parse(args: &[String]) -> Result<Parsed, UsageError> {
    let mut request = RunRequest {
        source: Source::Path(PathBuf::new()),
        name: None,
        boot: false,
        binds: Vec::new(),
        nspawn_options: Vec::new(),
        volatile: false,
        peers: Vec::new(),
        ram: false,
        deadline: Duration::from_secs(30),
        vm: None,
        discovery: DiscoveryConfig {
            dht: Some(Vec::new()),
            lan: true,
        },
        command: Vec::new(),
    };
    let mut bootstrap: Vec<String> = Vec::new();
    let mut source: Option<Source> = None;
    let mut container_only = false;
    let mut i = 0;
    let value = |i: &mut usize, option: &str| -> Result<String, UsageError> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| usage(format!("{option} needs a value: {option} VALUE")))
    };
    while i < args.len() {
        let arg = args[i].as_str();
        let (option, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_owned())),
            _ => (arg, None),
        };
        let take = |i: &mut usize| match &inline {
            Some(v) => Ok(v.clone()),
            None => value(i, option),
        };
        match option {
            "--" => {
                request.command = args[i + 1..].to_vec();
                break;
            }
            "-h" | "--help" => return Ok(Parsed::Help),
            "-b" | "--boot" => {
                request.boot = true;
                container_only = true;
            }
            "--volatile" => {
                request.volatile = true;
                container_only = true;
            }
            "--ram" => {
                request.ram = true;
                container_only = true;
            }
            "-n" | "--name" => request.name = Some(take(&mut i)?),
            "--bind" => {
                let bind = take(&mut i)?;
                if !bind.contains(':') || bind.starts_with(':') || bind.ends_with(':') {
                    return Err(usage(format!(
                        "--bind {bind:?} is not SRC:DST: give both paths, e.g. --bind /srv/data:/data"
                    )));
                }
                request.binds.push(bind);
                container_only = true;
            }
            "--dht-bootstrap" => {
                let node = take(&mut i)?;
                if node
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
                {
                    return Err(usage(format!(
                        "--dht-bootstrap {node:?} is not HOST:PORT (e.g. 192.0.2.1:6881)"
                    )));
                }
                bootstrap.push(node);
                container_only = true;
            }
            "--no-dht" => {
                request.discovery.dht = None;
                container_only = true;
            }
            "--no-lan" => {
                request.discovery.lan = false;
                container_only = true;
            }
            "--peer" => {
                request.peers.push(take(&mut i)?);
                container_only = true;
            }
            "--deadline" => {
                let secs = take(&mut i)?;
                let secs: u64 = secs.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    usage(format!(
                        "--deadline {secs:?} is not a number of seconds: e.g. --deadline 30"
                    ))
                })?;
                request.deadline = Duration::from_secs(secs);
                container_only = true;
            }
            "--vm" => {
                container_only = true;
                request.vm = Some(match inline {
                    Some(v) => v,
                    // `--vm INSTANCE SOURCE`: a name, then the source.
                    None => match args.get(i + 1) {
                        Some(next)
                            if source.is_none() && !next.starts_with('-') && !is_source(next) =>
                        {
                            i += 1;
                            next.clone()
                        }
                        _ => hyperos_vm::instance::DEFAULT_NAME.to_owned(),
                    },
                });
            }
            _ if option.starts_with("--sn-") => {
                let name = &option["--sn-".len()..];
                if name.is_empty() {
                    return Err(usage(
                        "--sn- needs an nspawn option name: e.g. --sn-private-network",
                    ));
                }
                request.nspawn_options.push(match &inline {
                    Some(v) => format!("--{name}={v}"),
                    None => format!("--{name}"),
                });
                container_only = true;
            }
            _ if arg.starts_with('-') && arg.len() > 1 => {
                return Err(usage(format!(
                    "unknown option {arg}: see `hyperos run --help`; options for systemd-nspawn go as --sn-OPTION"
                )));
            }
            _ => {
                if source.is_some() {
                    return Err(usage(format!(
                        "unexpected {arg:?} after the image: put the command after --, e.g. hyperos run dat://KEY -- {arg}"
                    )));
                }
                if !is_source(arg) {
                    if container_only {
                        return Err(usage(format!(
                            "{arg:?} is neither a dat:// link nor an existing image, directory or OCI archive"
                        )));
                    }
                    // A command for the VM: everything from here on.
                    return Ok(Parsed::VmCommand {
                        instance: request.name,
                        command: args[i..].to_vec(),
                    });
                }
                source = Some(if arg.starts_with("dat://") {
                    Source::Link(arg.parse().map_err(|e| usage(format!("{e}")))?)
                } else {
                    Source::Path(PathBuf::from(arg))
                });
            }
        }
        i += 1;
    }
    let Some(source) = source else {
        if let Some(name) = request.name.filter(|_| !container_only) {
            return Err(usage(format!(
                "nothing to run: `hyperos run dat://KEY` runs a container, `hyperos run -n {name} CMD` a command in the VM"
            )));
        }
        return Err(usage(
            "nothing to run: give a dat:// link or an image path (`hyperos run dat://KEY -- CMD`), or a command for the VM",
        ));
    };
    if request.boot && !request.command.is_empty() {
        return Err(usage(
            "--boot runs the image's init, not a command: drop either --boot or the command after --",
        ));
    }
    if let Some(dht) = &mut request.discovery.dht {
        if bootstrap.is_empty()
            && let Ok(env) = std::env::var("HYPEROS_DHT_BOOTSTRAP")
        {
            bootstrap = env
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        *dht = bootstrap;
    }
    request.source = source;
    Ok(Parsed::Container(Box::new(request)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY: &str = "dat://0101010101010101010101010101010101010101010101010101010101010101";

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn container(s: &[&str]) -> RunRequest {
        match parse(&args(s)).unwrap() {
            Parsed::Container(r) => *r,
            other => panic!("not a container: {other:?}"),
        }
    }

    #[test]
    fn a_link_with_a_command() {
        let r = container(&[KEY, "--", "cat", "/etc/debian_version"]);
        assert!(matches!(r.source, Source::Link(_)));
        assert_eq!(r.command, args(&["cat", "/etc/debian_version"]));
        assert!(!r.boot && !r.volatile && r.vm.is_none());
    }

    #[test]
    fn options_before_and_after_the_source() {
        let r = container(&[
            "--name",
            "web",
            "--sn-private-network",
            KEY,
            "--sn-setenv=A=1",
            "--bind=/srv:/data",
            "--peer",
            "T1",
            "--volatile",
            "--deadline",
            "5",
            "--",
            "-x",
        ]);
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(
            r.nspawn_options,
            args(&["--private-network", "--setenv=A=1"])
        );
        assert_eq!(r.binds, args(&["/srv:/data"]));
        assert_eq!(r.peers, args(&["T1"]));
        assert!(r.volatile);
        assert_eq!(r.deadline, Duration::from_secs(5));
        assert_eq!(r.command, args(&["-x"]));
    }

    #[test]
    fn boot_and_vm_forms() {
        let r = container(&["-b", KEY]);
        assert!(r.boot && r.command.is_empty());
        let r = container(&["--vm", KEY, "--", "true"]);
        assert_eq!(r.vm.as_deref(), Some("default"));
        let r = container(&["--vm", "work", KEY, "--", "true"]);
        assert_eq!(r.vm.as_deref(), Some("work"));
        let r = container(&["--vm", "work", "--name", "x", KEY]);
        assert_eq!(r.vm.as_deref(), Some("work"));
        let r = container(&["--vm=work", KEY]);
        assert_eq!(r.vm.as_deref(), Some("work"));
    }

    #[test]
    fn paths_are_sources() {
        let r = container(&["./image.erofs", "--", "ls"]);
        assert_eq!(r.source, Source::Path("./image.erofs".into()));
    }

    #[test]
    fn anything_else_is_a_command_for_the_vm() {
        assert_eq!(
            parse(&args(&["uname", "-a"])).unwrap(),
            Parsed::VmCommand {
                instance: None,
                command: args(&["uname", "-a"])
            }
        );
        assert_eq!(
            parse(&args(&["-n", "work", "free", "-m"])).unwrap(),
            Parsed::VmCommand {
                instance: Some("work".into()),
                command: args(&["free", "-m"])
            }
        );
    }

    #[test]
    fn bad_command_lines_name_the_fix() {
        for (line, needle) in [
            (vec![], "nothing to run"),
            (vec!["--volatile", "uname"], "neither a dat:// link"),
            (vec![KEY, "ls"], "put the command after --"),
            (vec!["--bogus", KEY], "unknown option --bogus"),
            (vec!["--bind", "/x", KEY], "is not SRC:DST"),
            (vec!["-b", KEY, "--", "sh"], "--boot runs the image's init"),
            (vec!["--deadline", "soon", KEY], "not a number of seconds"),
            (vec!["dat://nothex"], "dat://"),
            (vec!["--sn-", KEY], "needs an nspawn option name"),
            (vec!["--name"], "--name needs a value"),
        ] {
            let err = parse(&args(&line)).unwrap_err().to_string();
            assert!(err.contains(needle), "{line:?}: {err}");
            assert!(!err.contains('\n'), "{line:?}: not one line: {err}");
        }
    }
}
