//! The QEMU command line of an instance.
//!
//! The guest is booted directly from the kernel and initrd (no firmware
//! disk), with virtio devices only:
//!
//! | device | why |
//! |---|---|
//! | virtio-net | user-mode (SSH port forwarded to localhost) or a host bridge |
//! | virtio-rng | entropy for SSH host keys at first boot |
//! | virtio-serial port `org.hyperos.agent` | the agent channel ([`hyperos_proto::agent`]) |
//! | virtio-blk, serial `hyperos-data` | the persistent data disk (sparse file) |
//! | fw_cfg `opt/org.hyperos/config` | the guest configuration, off the command line |
//! | 16550 serial | the kernel console, to `console.log` |
//! | QMP socket | ACPI power-off and queries from the host |

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::VmError;
use crate::accel::Accel;
use crate::instance::{InstanceSpec, NetMode};
use crate::paths::InstanceDir;

/// The QEMU system emulator for the HyperOS image's architecture.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";

/// Environment variable naming another QEMU binary.
pub const QEMU_ENV: &str = "HYPEROS_QEMU";

/// Kernel command line given to every boot: `quiet` keeps the serial
/// console (slow under emulation) from slowing the boot down;
/// `no_timer_check` stops the kernel from declaring the IO-APIC timer broken
/// (and panicking) when an emulated or overcommitted vCPU runs it late;
/// `panic=-1` turns a guest panic into a QEMU exit (`-no-reboot`).
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet no_timer_check panic=-1";

/// Finds the QEMU binary: `$HYPEROS_QEMU`, then `PATH`, then the usual
/// install locations of the platform.
pub fn find_qemu() -> Result<PathBuf, VmError> {
    if let Some(explicit) = std::env::var_os(QEMU_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(VmError::QemuMissing {
                program: path.display().to_string(),
            })
        };
    }
    let exe = if cfg!(windows) {
        format!("{QEMU_PROGRAM}.exe")
    } else {
        QEMU_PROGRAM.to_owned()
    };
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/opt/homebrew/bin",
            "/usr/local/bin",
            r"C:\Program Files\qemu",
        ]
        .into_iter()
        .map(PathBuf::from),
    );
    dirs.into_iter()
        .map(|d| d.join(&exe))
        .find(|p| p.is_file())
        .ok_or(VmError::QemuMissing { program: exe })
}

/// Checks that `path` looks like an x86 Linux kernel (bzImage): the setup
/// header's "HdrS" magic at 0x202.
pub fn check_kernel(path: &Path) -> Result<(), VmError> {
    let bad = |why: &str| VmError::BadKernel {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let bytes = read_prefix(path, 0x210).map_err(|e| bad(&e.to_string()))?;
    if bytes.len() < 0x206 {
        return Err(bad("it is too short"));
    }
    if &bytes[0x202..0x206] != b"HdrS" {
        return Err(bad("its boot header magic is missing"));
    }
    Ok(())
}

/// Checks that `path` is a gzip-compressed or plain newc cpio archive.
pub fn check_initrd(path: &Path) -> Result<(), VmError> {
    let bytes = read_prefix(path, 6).map_err(|_| VmError::BadInitrd {
        path: path.to_owned(),
    })?;
    if bytes.starts_with(&[0x1f, 0x8b]) || bytes.starts_with(b"070701") {
        Ok(())
    } else {
        Err(VmError::BadInitrd {
            path: path.to_owned(),
        })
    }
}

fn read_prefix(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(len);
    std::fs::File::open(path)?
        .take(len as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Builds QEMU's arguments for `spec`, with files in `dir`.
pub fn args(spec: &InstanceSpec, dir: &InstanceDir, accel: Accel) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push("-name");
    push(&format!(
        "hyperos-{},process=hyperos-{}",
        spec.name, spec.name
    ));
    for arg in accel.qemu_args() {
        push(&arg);
    }
    for arg in [
        "-machine",
        "q35",
        "-cpu",
        accel.cpu_model(),
        "-m",
        &spec.memory_mib.to_string(),
        "-smp",
        &spec.cpus.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-device",
        "virtio-rng-pci",
        "-device",
        "virtio-serial-pci",
        "-chardev",
    ] {
        push(arg);
    }
    push(&format!(
        "socket,id=agent,path={}",
        qemu_path(&dir.agent_socket())
    ));
    push("-device");
    push(&format!(
        "virtserialport,chardev=agent,name={}",
        hyperos_proto::AGENT_PORT_NAME
    ));
    push("-chardev");
    push(&format!(
        "file,id=console,path={}",
        qemu_path(&dir.console_log())
    ));
    push("-serial");
    push("chardev:console");
    push("-qmp");
    push(&format!(
        "unix:{},server=on,wait=off",
        qemu_path(&dir.qmp_socket())
    ));
    match spec.net {
        NetMode::User => {
            let port = spec.ssh_port.unwrap_or(0);
            push("-netdev");
            push(&format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"));
        }
        NetMode::Bridged => {
            let bridge = spec.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE);
            push("-netdev");
            if cfg!(target_os = "macos") {
                push("vmnet-shared,id=net0");
            } else {
                push(&format!("bridge,id=net0,br={bridge}"));
            }
        }
    }
    push("-device");
    push(&format!("virtio-net-pci,netdev=net0,mac={}", spec.mac));
    if spec.disk_bytes > 0 {
        push("-drive");
        push(&format!(
            "file={},if=none,id=data,format=raw,discard=unmap,cache=writeback",
            qemu_path(&dir.disk())
        ));
        push("-device");
        push(&format!(
            "virtio-blk-pci,drive=data,serial={}",
            hyperos_proto::DATA_DISK_SERIAL
        ));
    }
    let mut cmdline = BASE_CMDLINE.to_owned();
    if spec.legacy_cmdline {
        let config = hyperos_proto::GuestConfig {
            hostname: Some(spec.hostname.clone()),
            authorized_keys: spec.authorized_keys.clone(),
            ..Default::default()
        };
        cmdline.push(' ');
        cmdline.push_str(&hyperos_proto::cmdline::render(&config));
    } else {
        push("-fw_cfg");
        push(&format!(
            "name={},file={}",
            hyperos_proto::FW_CFG_NAME,
            qemu_path(&dir.guest_config())
        ));
    }
    a.push("-kernel".into());
    a.push(spec.kernel.clone().into_os_string());
    a.push("-initrd".into());
    a.push(spec.initrd.clone().into_os_string());
    a.push("-append".into());
    a.push(cmdline.into());
    a
}

/// The bridge used by `--net bridged` when none is named.
pub const DEFAULT_BRIDGE: &str = "hyperos0";

/// A path as a QEMU option value: commas are doubled, as QEMU's option
/// parser requires.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::StateDir;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            name: "web".into(),
            hostname: "merry-otter".into(),
            memory_mib: 512,
            cpus: 2,
            kernel: "/img/kernel".into(),
            initrd: "/img/initrd.gz".into(),
            net: NetMode::User,
            ssh_port: Some(2222),
            bridge: None,
            lease_file: None,
            mac: "52:54:00:01:02:03".into(),
            authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA me@x".into()],
            legacy_cmdline: false,
            disk_bytes: 1 << 30,
            boot_timeout_secs: 60,
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn user_networking_with_fw_cfg() {
        let dir = StateDir::at("/s,x").instance("web");
        let line = joined(&args(&spec(), &dir, Accel::Tcg));
        assert!(
            line.contains("-accel tcg -machine q35 -cpu max -m 512 -smp 2"),
            "{line}"
        );
        assert!(line.contains("hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(line.contains("virtio-net-pci,netdev=net0,mac=52:54:00:01:02:03"));
        assert!(
            line.contains("name=opt/org.hyperos/config,file=/s,,x/instances/web/guest-config.json")
        );
        assert!(line.contains("virtio-blk-pci,drive=data,serial=hyperos-data"));
        assert!(line.ends_with(&format!("-append {BASE_CMDLINE}")), "{line}");
        assert!(!line.contains("sshkey"), "keys stay off the command line");
    }

    #[test]
    fn legacy_cmdline_and_bridge() {
        let mut spec = spec();
        spec.legacy_cmdline = true;
        spec.net = NetMode::Bridged;
        spec.bridge = Some("br7".into());
        spec.disk_bytes = 0;
        let a = args(&spec, &StateDir::at("/s").instance("web"), Accel::Kvm);
        let line = joined(&a);
        assert!(line.contains("-accel kvm"));
        assert!(line.contains("-cpu host"));
        assert!(!line.contains("fw_cfg"));
        assert!(!line.contains("virtio-blk"));
        if !cfg!(target_os = "macos") {
            assert!(line.contains("bridge,id=net0,br=br7"));
        }
        let append = a.last().unwrap().to_string_lossy().into_owned();
        let parsed = hyperos_proto::cmdline::parse(&append);
        assert_eq!(parsed.hostname.as_deref(), Some("merry-otter"));
        assert_eq!(parsed.authorized_keys, spec.authorized_keys);
    }

    #[test]
    fn kernel_and_initrd_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let k = tmp.path().join("k");
        let mut bytes = vec![0u8; 0x300];
        std::fs::write(&k, &bytes).unwrap();
        assert!(check_kernel(&k).is_err());
        bytes[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(&k, &bytes).unwrap();
        check_kernel(&k).unwrap();
        assert!(check_kernel(&tmp.path().join("missing")).is_err());
        std::fs::write(&k, b"short").unwrap();
        assert!(check_kernel(&k).is_err());

        let i = tmp.path().join("i");
        std::fs::write(&i, [0x1f, 0x8b, 8, 0]).unwrap();
        check_initrd(&i).unwrap();
        std::fs::write(&i, b"070701000").unwrap();
        check_initrd(&i).unwrap();
        std::fs::write(&i, b"PK\x03\x04").unwrap();
        assert!(check_initrd(&i).is_err());
    }
}
