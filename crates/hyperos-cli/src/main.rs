//! `hyperos`: build the HyperOS image, boot and manage VMs, log in.
//!
//! `main` only parses and dispatches; the work is in the library crates.

mod archive;
mod container;
mod image;
mod output;
mod vm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// HyperOS: a minimal Linux host that live-boots containers over a secure
/// peer-to-peer network.
#[derive(Debug, Parser)]
#[command(name = "hyperos", version, propagate_version = true)]
pub struct Cli {
    /// Where HyperOS keeps keys and instances (default: the per-user state directory).
    #[arg(long, global = true, env = "HYPEROS_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// More logging (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create your SSH key (in the OS keychain, else a 0600 file).
    Init(vm::InitArgs),
    /// Build the HyperOS kernel and initrd.gz.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Boot a HyperOS VM in the background and wait until SSH is ready.
    Boot(vm::BootArgs),
    /// Show an instance's state (and follow it with --watch).
    Status(vm::StatusArgs),
    /// Print an instance's IP address.
    Ip(vm::NameArg),
    /// Print the pid of an instance's QEMU process.
    Pid(vm::NameArg),
    /// Log in to an instance, or run a command there with `-- CMD…`.
    Ssh(vm::SshArgs),
    /// Run a container from a `dat://` link or an image (or a command in the VM).
    Run(container::RunArgs),
    /// Stop a running container.
    Stop(container::StopArgs),
    /// Power an instance off gracefully (ACPI), killing it after a timeout.
    Halt(vm::HaltArgs),
    /// Kill an instance's VM at once.
    Kill(vm::NameArg),
    /// List all instances.
    Ps(vm::PsArgs),
    /// Print an instance's console log (or QEMU's or the supervisor's).
    Logs(vm::LogsArgs),
    /// Delete a container's writable layer, or a stopped instance and its data disk.
    Rm(vm::RmArgs),
    /// Print an OpenSSH config snippet for an instance.
    SshConfig(vm::SshConfigArgs),
    /// Publish an image, directory or OCI archive under a key and serve it.
    Share(archive::ShareArgs),
    /// List the archives this machine shares or seeds, and their tickets.
    Shares(archive::SharesArgs),
    /// Stop sharing or seeding an archive.
    Unshare(archive::UnshareArgs),
    /// Fetch a whole `dat://` archive from peers and serve it to others.
    Seed(archive::SeedArgs),
    /// Mount a `dat://` archive lazily: only what is read is fetched.
    Mount(archive::MountArgs),
    /// List mounts, whether their process runs, and what they fetched.
    Mounts(archive::MountsArgs),
    /// Unmount what `hyperos mount` mounted.
    Unmount(archive::UnmountArgs),
    /// Run an instance's supervisor (started by `boot`).
    #[command(name = "__supervise", hide = true)]
    Supervise(vm::SuperviseArgs),
}

fn main() {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Init(args) => vm::init(cli.state_dir, args),
        Command::Image(cmd) => image::run(cmd),
        Command::Boot(args) => vm::boot(cli.state_dir, args),
        Command::Status(args) => vm::status(cli.state_dir, args),
        Command::Ip(args) => vm::ip(cli.state_dir, args),
        Command::Pid(args) => vm::pid(cli.state_dir, args),
        Command::Ssh(args) => vm::ssh(cli.state_dir, args),
        Command::Run(args) => container::run(cli.state_dir, args),
        Command::Stop(args) => container::stop(cli.state_dir, args),
        Command::Halt(args) => vm::halt(cli.state_dir, args),
        Command::Kill(args) => vm::kill(cli.state_dir, args),
        Command::Ps(args) => vm::ps(cli.state_dir, args),
        Command::Logs(args) => vm::logs(cli.state_dir, args),
        Command::Rm(args) => vm::rm(cli.state_dir, args),
        Command::SshConfig(args) => vm::ssh_config(cli.state_dir, args),
        Command::Share(args) => archive::share(cli.state_dir, args),
        Command::Shares(args) => archive::shares(cli.state_dir, args),
        Command::Unshare(args) => archive::unshare(cli.state_dir, args),
        Command::Seed(args) => archive::seed(cli.state_dir, args),
        Command::Mount(args) => archive::mount(cli.state_dir, args),
        Command::Mounts(args) => archive::mounts(cli.state_dir, args),
        Command::Unmount(args) => archive::unmount(cli.state_dir, args),
        Command::Supervise(args) => vm::supervise(cli.state_dir, args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("hyperos: {}", output::one_line(&err));
            std::process::exit(1);
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
