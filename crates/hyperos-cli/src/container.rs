//! The container commands: `run` (also a command in the VM), `stop`, and
//! the container half of `rm`. The work is in hyperos-run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use hyperos_run::{Containers, Parsed};
use hyperos_vm::StateDir;
use hyperos_vm::instance::DEFAULT_NAME;

/// `hyperos run`'s arguments, parsed by hyperos-run (every `--sn-X` goes
/// to systemd-nspawn, which a declarative parser can't express).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// `[OPTIONS] dat://KEY | PATH [-- CMD…]`, or `CMD…` for the VM; see `hyperos run --help`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The container (as `hyperos ps` lists it).
    name: String,
    /// Seconds to wait for it to stop.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

pub fn run(state_dir: Option<PathBuf>, args: RunArgs) -> anyhow::Result<i32> {
    let request = match hyperos_run::parse(&args.args)? {
        Parsed::Help => {
            println!("{}", hyperos_run::USAGE);
            return Ok(0);
        }
        Parsed::VmCommand { instance, command } => {
            let instance = instance
                .or_else(|| std::env::var("HYPEROS_INSTANCE").ok())
                .unwrap_or_else(|| DEFAULT_NAME.to_owned());
            return crate::vm::run_command(state_dir, &instance, &command, false);
        }
        Parsed::Container(request) => request,
    };
    let state = StateDir::resolve(state_dir.clone())?;
    let vm = request
        .vm
        .clone()
        .or_else(|| hyperos_run::VM_BY_DEFAULT.then(|| DEFAULT_NAME.to_owned()));
    match vm {
        None => hyperos_run::run_on_host(state.root(), &request),
        Some(instance) => {
            let peers = hyperos_run::guest::guest_peers(state.root(), &request)?;
            let line = hyperos_run::guest::guest_command(&request, &peers);
            let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
            crate::vm::run_command(state_dir, &instance, &line, tty)
        }
    }
}

pub fn stop(state_dir: Option<PathBuf>, args: StopArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(state_dir)?;
    hyperos_run::host_stop(state.root(), &args.name, Duration::from_secs(args.timeout))?;
    println!("Stopped {}.", args.name);
    Ok(0)
}

/// Deletes a container's writable layer, asking first unless `force`.
pub fn rm(containers: &Containers, name: &str, force: bool) -> anyhow::Result<i32> {
    let dir = containers.dir(name);
    if !force && dir.has_layer() {
        if !std::io::stdin().is_terminal() {
            bail!("removing {name} deletes what it changed: confirm with --force");
        }
        eprint!("Delete container {name} and everything it changed? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Kept {name}.");
            return Ok(1);
        }
    }
    containers.remove(name)?;
    println!("Removed {name}.");
    Ok(0)
}
