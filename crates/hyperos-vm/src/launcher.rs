//! Starting an instance's supervisor by re-executing the front end's own
//! binary (the `hyperos` CLI or the desktop app) with [`SUPERVISE`]
//! arguments, detached from the front end so that closing it leaves the VM
//! running.
//!
//! ```text
//! <exe> --state-dir DIR -v __supervise --name NAME --qemu PATH --accel ACCEL [--command-ms MS]
//! ```
//!
//! The CLI parses these with clap (it is one of its subcommands); other
//! binaries call [`SuperviseArgs::from_argv`] first thing in `main`.

use std::path::{Path, PathBuf};

use crate::VmError;
use crate::accel::Accel;
use crate::manager::SupervisorLauncher;
use crate::paths::InstanceDir;

/// The hidden subcommand that runs a supervisor.
pub const SUPERVISE: &str = "__supervise";

/// Re-executes `exe` as the supervisor, logging to `supervisor.log`.
#[derive(Debug, Clone)]
pub struct SelfExec {
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    /// When the user asked for the boot, ms since the Unix epoch.
    pub command_ms: u64,
}

impl SelfExec {
    /// This process's own executable.
    pub fn current(state_dir: &Path, command_ms: u64) -> Result<SelfExec, VmError> {
        let exe = std::env::current_exe().map_err(|e| VmError::Io {
            action: "find",
            path: "this program's executable".into(),
            source: e,
        })?;
        Ok(SelfExec {
            exe,
            state_dir: state_dir.to_owned(),
            command_ms,
        })
    }
}

impl SupervisorLauncher for SelfExec {
    fn launch(&self, dir: &InstanceDir, qemu: &Path, accel: Accel) -> Result<(), VmError> {
        let log = std::fs::File::create(dir.supervisor_log())
            .map_err(VmError::io("create", dir.supervisor_log()))?;
        let log2 = log
            .try_clone()
            .map_err(VmError::io("open", dir.supervisor_log()))?;
        let mut command = std::process::Command::new(&self.exe);
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("-v")
            .arg(SUPERVISE)
            .arg("--name")
            .arg(dir.name())
            .arg("--qemu")
            .arg(qemu)
            .arg("--accel")
            .arg(accel.as_str())
            .arg("--command-ms")
            .arg(self.command_ms.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid and close_range are async-signal-safe system
            // calls. setsid detaches the supervisor from the terminal so
            // Ctrl-C or closing it leaves the VM running. close_range marks
            // every descriptor but stdio close-on-exec: the supervisor
            // inherits nothing else from the front end, such as the pipe and
            // directory an AppImage's runtime keeps its mount alive with.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    #[cfg(target_os = "linux")]
                    libc::syscall(
                        libc::SYS_close_range,
                        3,
                        libc::c_uint::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    );
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(VmError::io("start the supervisor for", dir.path()))?;
        // Reap it when it exits, so a long-lived front end keeps no zombie.
        std::thread::spawn(move || child.wait());
        Ok(())
    }
}

/// The supervisor's arguments, as [`SelfExec`] passes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperviseArgs {
    pub state_dir: PathBuf,
    pub name: String,
    pub qemu: PathBuf,
    pub accel: Accel,
    pub command_ms: Option<u64>,
}

impl SuperviseArgs {
    /// `Ok(None)` when `argv` (without the program name) is not a
    /// supervisor invocation; an error when it is one but malformed.
    pub fn from_argv(argv: &[String]) -> Result<Option<SuperviseArgs>, VmError> {
        if !argv.iter().any(|a| a == SUPERVISE) {
            return Ok(None);
        }
        let bad = |what: &str| VmError::Unsupported(format!("{SUPERVISE}: {what}"));
        let (mut state_dir, mut name, mut qemu, mut accel, mut command_ms) =
            (None, None, None, None, None);
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| bad(&format!("{arg} needs a value")))
            };
            match arg.as_str() {
                "--state-dir" => state_dir = Some(PathBuf::from(value()?)),
                "--name" => name = Some(value()?),
                "--qemu" => qemu = Some(PathBuf::from(value()?)),
                "--accel" => accel = Some(value()?.parse::<Accel>().map_err(|e| bad(&e))?),
                "--command-ms" => {
                    command_ms = Some(
                        value()?
                            .parse::<u64>()
                            .map_err(|_| bad("bad --command-ms"))?,
                    )
                }
                "-v" | SUPERVISE => {}
                other => return Err(bad(&format!("unexpected argument {other:?}"))),
            }
        }
        Ok(Some(SuperviseArgs {
            state_dir: state_dir.ok_or_else(|| bad("--state-dir is missing"))?,
            name: name.ok_or_else(|| bad("--name is missing"))?,
            qemu: qemu.ok_or_else(|| bad("--qemu is missing"))?,
            accel: accel.ok_or_else(|| bad("--accel is missing"))?,
            command_ms,
        }))
    }

    /// Runs the supervisor until QEMU exits (blocking; builds its own runtime).
    #[cfg(unix)]
    pub fn run(self) -> Result<(), VmError> {
        let dir = crate::paths::StateDir::at(&self.state_dir).instance(&self.name);
        if !dir.exists() {
            return Err(VmError::UnknownInstance(self.name));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(VmError::io("start the runtime for", dir.path()))?;
        runtime.block_on(crate::supervisor::run(crate::supervisor::Options {
            dir,
            qemu: self.qemu,
            accel: self.accel,
            command_ms: self.command_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_what_self_exec_passes() {
        let args = SuperviseArgs::from_argv(&argv(
            "--state-dir /s -v __supervise --name web --qemu /usr/bin/qemu --accel tcg --command-ms 5",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(args.state_dir, PathBuf::from("/s"));
        assert_eq!(args.name, "web");
        assert_eq!(args.accel, Accel::Tcg);
        assert_eq!(args.command_ms, Some(5));
        assert_eq!(
            SuperviseArgs::from_argv(&argv("--autostart")).unwrap(),
            None
        );
        for bad in [
            "__supervise --name web --qemu q --accel tcg",
            "--state-dir /s __supervise --name web --qemu q --accel warp",
            "--state-dir /s __supervise --name",
            "--state-dir /s __supervise --name a --qemu q --accel tcg --extra",
        ] {
            assert!(SuperviseArgs::from_argv(&argv(bad)).is_err(), "{bad}");
        }
    }
}
