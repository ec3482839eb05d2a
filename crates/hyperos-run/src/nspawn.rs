//! The systemd-nspawn command line of a container.
//!
//! Least privilege by default for a command (not `--boot`): CAP_SYS_ADMIN is
//! dropped from the bounding set, nspawn's stub init runs as PID 1 (`--as-pid2`)
//! so the command's children are reaped and signals reach it, and nspawn's own
//! seccomp filter, private pid/mount/uts/ipc namespaces and masked /proc
//! entries (/proc/kcore, /proc/sys read-only) apply. `--boot` keeps what an
//! init system needs (nspawn's default capability set). It works where
//! systemd is not PID 1: nothing is registered with machined and no scope
//! unit is made (`--register=no --keep-unit`).

use std::ffi::OsString;
use std::path::Path;

use hyperos_archive::OciConfig;

/// What the container runs.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub root: &'a Path,
    pub name: &'a str,
    pub boot: bool,
    pub binds: &'a [String],
    /// Passed through as given (from `--sn-X[=V]`), after HyperOS's own.
    pub options: &'a [String],
    pub command: &'a [String],
    pub oci: Option<&'a OciConfig>,
    /// Whether stdin and stdout are a terminal.
    pub tty: bool,
}

/// The command a container runs: the given one, else the image's
/// entrypoint and command, else a shell.
pub fn command_of(command: &[String], oci: Option<&OciConfig>) -> Vec<String> {
    if !command.is_empty() {
        return command.to_vec();
    }
    if let Some(oci) = oci {
        let line: Vec<String> = oci
            .entrypoint
            .iter()
            .chain(oci.cmd.iter())
            .cloned()
            .collect();
        if !line.is_empty() {
            return line;
        }
    }
    vec!["/bin/sh".to_owned()]
}

/// systemd-nspawn's arguments (without the program name).
pub fn args(plan: &Plan) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--register=no".into(),
        "--keep-unit".into(),
        "--quiet".into(),
        format!("--machine={}", plan.name).into(),
    ];
    let mut directory = OsString::from("--directory=");
    directory.push(plan.root);
    args.push(directory);
    // Interactive needs a terminal on both ends; otherwise stdio is piped
    // straight through, so `hyperos run … -- CMD | grep` works.
    args.push(if plan.tty {
        "--console=interactive".into()
    } else {
        "--console=pipe".into()
    });
    if !plan.boot {
        args.push("--as-pid2".into());
        args.push("--drop-capability=CAP_SYS_ADMIN".into());
    }
    for bind in plan.binds {
        args.push(format!("--bind={bind}").into());
    }
    if let Some(oci) = plan.oci.filter(|_| !plan.boot) {
        for env in &oci.env {
            args.push(format!("--setenv={env}").into());
        }
        if !oci.working_dir.is_empty() {
            args.push(format!("--chdir={}", oci.working_dir).into());
        }
        if !oci.user.is_empty() && oci.user != "root" && oci.user != "0" {
            args.push(format!("--user={}", oci.user).into());
        }
    }
    args.extend(plan.options.iter().map(OsString::from));
    if plan.boot {
        args.push("--boot".into());
    } else {
        args.push("--".into());
        args.extend(
            command_of(plan.command, plan.oci)
                .into_iter()
                .map(OsString::from),
        );
    }
    args
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    fn plan<'a>(command: &'a [String], oci: Option<&'a OciConfig>) -> Plan<'a> {
        Plan {
            root: Path::new("/r"),
            name: "web",
            boot: false,
            binds: &[],
            options: &[],
            command,
            oci,
            tty: false,
        }
    }

    #[test]
    fn a_command_runs_with_least_privilege() {
        let command = vec!["cat".to_owned(), "/etc/os-release".to_owned()];
        let args = strings(args(&plan(&command, None)));
        for needed in [
            "--register=no",
            "--keep-unit",
            "--machine=web",
            "--directory=/r",
            "--console=pipe",
            "--as-pid2",
            "--drop-capability=CAP_SYS_ADMIN",
        ] {
            assert!(args.iter().any(|a| a == needed), "{needed} in {args:?}");
        }
        assert_eq!(&args[args.len() - 3..], ["--", "cat", "/etc/os-release"]);
    }

    #[test]
    fn boot_keeps_what_init_needs() {
        let mut p = plan(&[], None);
        p.boot = true;
        p.tty = true;
        let args = strings(args(&p));
        assert!(args.contains(&"--boot".to_owned()));
        assert!(args.contains(&"--console=interactive".to_owned()));
        assert!(
            !args
                .iter()
                .any(|a| a.contains("CAP_SYS_ADMIN") || a == "--as-pid2")
        );
        assert!(!args.contains(&"--".to_owned()));
    }

    #[test]
    fn the_image_config_fills_in_the_command() {
        let oci = OciConfig {
            entrypoint: vec!["/app".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/bin".into(), "A=b c".into()],
            working_dir: "/srv".into(),
            user: "app".into(),
        };
        let args = strings(args(&plan(&[], Some(&oci))));
        for needed in [
            "--setenv=PATH=/bin",
            "--setenv=A=b c",
            "--chdir=/srv",
            "--user=app",
        ] {
            assert!(args.iter().any(|a| a == needed), "{needed} in {args:?}");
        }
        assert_eq!(&args[args.len() - 3..], ["--", "/app", "--serve"]);
        // A given command wins; no config at all gives a shell.
        assert_eq!(command_of(&["id".into()], Some(&oci)), ["id"]);
        assert_eq!(command_of(&[], None), ["/bin/sh"]);
    }

    #[test]
    fn user_options_and_binds_pass_through_after_ours() {
        let binds = vec!["/srv:/data".to_owned()];
        let options = vec!["--private-network".to_owned()];
        let mut p = plan(&[], None);
        p.binds = &binds;
        p.options = &options;
        let args = strings(args(&p));
        let bind = args.iter().position(|a| a == "--bind=/srv:/data").unwrap();
        let own = args.iter().position(|a| a == "--private-network").unwrap();
        let drop = args.iter().position(|a| a.starts_with("--drop")).unwrap();
        assert!(drop < own && bind < own);
    }
}
