//! Choosing the accelerator: the platform's hypervisor when it really runs a
//! guest, else TCG (software emulation) with a warning.
//!
//! On Linux `/dev/kvm` can exist and still not run guests (nested
//! virtualisation turned off, a sandbox that forbids `KVM_RUN`), so KVM is
//! chosen only after [`probe`] has booted a one-sector guest with QEMU
//! itself, with the same CPU model a real boot uses, and seen it run to its
//! exit port. HVF (macOS) and WHPX (Windows) are probed the same way.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Environment variable that forces an accelerator (`kvm`, `hvf`, `whpx`, `tcg`).
pub const ACCEL_ENV: &str = "HYPEROS_ACCEL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Hvf,
    Whpx,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Hvf => "hvf",
            Accel::Whpx => "whpx",
            Accel::Tcg => "tcg",
        }
    }

    /// The `-accel` arguments for QEMU, with TCG as QEMU's own fallback
    /// where the probe can't be sure.
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            Accel::Kvm | Accel::Hvf => vec!["-accel".into(), self.as_str().into()],
            Accel::Whpx => vec![
                "-accel".into(),
                "whpx,kernel-irqchip=off".into(),
                "-accel".into(),
                "tcg".into(),
            ],
            Accel::Tcg => vec!["-accel".into(), "tcg".into()],
        }
    }

    /// The `-cpu` model: the host's own under a hypervisor, else QEMU's
    /// richest emulated CPU.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm | Accel::Hvf => "host",
            Accel::Whpx | Accel::Tcg => "max",
        }
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "hvf" => Ok(Accel::Hvf),
            "whpx" => Ok(Accel::Whpx),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!(
                "unknown accelerator {other:?}: use kvm, hvf, whpx or tcg"
            )),
        }
    }
}

/// The chosen accelerator, and why TCG was chosen if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub accel: Accel,
    /// Set when falling back to TCG: one line for the user.
    pub warning: Option<String>,
}

/// Picks the accelerator for this host, honouring [`ACCEL_ENV`]. `qemu` is
/// the QEMU system emulator that will run the guest.
pub fn detect(qemu: &Path) -> Choice {
    if let Some(forced) = std::env::var(ACCEL_ENV)
        .ok()
        .and_then(|v| v.parse::<Accel>().ok())
    {
        return Choice {
            accel: forced,
            warning: None,
        };
    }
    let result = match hardware_accel() {
        Some(accel) => probe(qemu, accel).map(|()| accel),
        None => Err("no hypervisor for x86_64 guests on this host".to_owned()),
    };
    match result {
        Ok(accel) => Choice {
            accel,
            warning: None,
        },
        Err(why) => Choice {
            accel: Accel::Tcg,
            warning: Some(format!(
                "hardware virtualisation is unavailable ({why}); using software emulation (TCG), which is slower"
            )),
        },
    }
}

/// The platform's hypervisor for an x86_64 guest, if there can be one.
fn hardware_accel() -> Option<Accel> {
    if cfg!(not(target_arch = "x86_64")) {
        // The image is x86_64: only emulation runs it on another architecture.
        None
    } else if cfg!(target_os = "linux") {
        Some(Accel::Kvm)
    } else if cfg!(target_os = "macos") {
        Some(Accel::Hvf)
    } else if cfg!(windows) {
        Some(Accel::Whpx)
    } else {
        None
    }
}

/// A boot sector that writes 0x31 to QEMU's isa-debug-exit port; QEMU then
/// exits with status (0x31 << 1) | 1.
const PROBE_SECTOR_CODE: [u8; 7] = [
    0xb0, 0x31, // mov al, 0x31
    0xe6, 0xf4, // out 0xf4, al
    0xf4, // hlt
    0xeb, 0xfd, // jmp back to hlt
];
const PROBE_EXIT_STATUS: i32 = (0x31 << 1) | 1;

/// Boots a one-sector guest with `accel` and the CPU model a real boot
/// would use, and checks it runs to its exit port. This catches a
/// `/dev/kvm` that opens but cannot run a guest (QEMU aborts setting up
/// the vCPU, or the guest never runs).
pub fn probe(qemu: &Path, accel: Accel) -> Result<(), String> {
    let mut sector = [0u8; 512];
    sector[..PROBE_SECTOR_CODE.len()].copy_from_slice(&PROBE_SECTOR_CODE);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    let dir = std::env::temp_dir().join(format!("hyperos-accel-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("temporary directory: {e}"))?;
    let image = dir.join("probe.img");
    std::fs::write(&image, sector).map_err(|e| format!("writing the probe: {e}"))?;
    let mut child = std::process::Command::new(qemu)
        .args(accel.qemu_args())
        .args(["-cpu", accel.cpu_model(), "-M", "pc", "-m", "16"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", image.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", qemu.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Some(s) if s.code() == Some(PROBE_EXIT_STATUS) => Ok(()),
        Some(s) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            let first = err
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("qemu-system-x86_64: ");
            Err(format!(
                "{} test guest failed: {s}{}{}",
                accel.as_str(),
                if first.is_empty() { "" } else { ": " },
                first
            ))
        }
        None => Err(format!(
            "{} test guest did not finish within 5 s",
            accel.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_and_parsed() {
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!("xen".parse::<Accel>().is_err());
        assert_eq!(Accel::Tcg.qemu_args(), vec!["-accel", "tcg"]);
        assert_eq!(Accel::Kvm.cpu_model(), "host");
    }

    #[test]
    fn tcg_probe_runs_and_detection_is_consistent() {
        let qemu = Path::new("qemu-system-x86_64");
        if std::process::Command::new(qemu)
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("qemu-system-x86_64 is not installed; skipping");
            return;
        }
        probe(qemu, Accel::Tcg).unwrap();
        let choice = detect(qemu);
        if std::env::var(ACCEL_ENV).is_err() && choice.accel == Accel::Tcg {
            assert!(choice.warning.is_some());
        }
        if choice.accel != Accel::Tcg {
            probe(qemu, choice.accel).unwrap();
        }
    }
}
