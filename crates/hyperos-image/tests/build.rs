//! Full image builds from the real Debian packages of the host's apt.
//!
//! Packages are cached in the repository's `image/cache`, so only the first
//! run downloads. The tests skip (with a message) on hosts without apt.

#![cfg(target_os = "linux")]
// The whole file is test code; the helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hyperos_image::cpio::{CpioEntry, read_archive};
use hyperos_image::{BuildOptions, BuildReport, build};

/// Builds share the package cache; one at a time.
static CACHE: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn have_apt() -> bool {
    std::process::Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok()
}

fn build_into(out: &Path, init: &Path) -> BuildReport {
    let _guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let mut opts = BuildOptions::for_repo(&repo(), init.to_owned());
    opts.out_dir = out.to_owned();
    let guest_cli = init.with_file_name("fake-hyperos");
    if guest_cli.exists() {
        opts.guest_cli = Some(guest_cli);
    }
    build(&opts).unwrap_or_else(|e| panic!("build failed: {e}"))
}

fn initrd_entries(path: &Path) -> Vec<CpioEntry> {
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut cpio)
        .unwrap();
    read_archive(&cpio).unwrap()
}

#[test]
fn full_build_is_complete_and_reproducible() {
    if !have_apt() {
        eprintln!("no apt on this host; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("fake-init");
    std::fs::write(&init, b"a stand-in for hyperos-init\n").unwrap();
    std::fs::write(dir.path().join("fake-hyperos"), b"a stand-in for hyperos\n").unwrap();

    let first = build_into(&dir.path().join("out1"), &init);
    println!("{first}");
    let second = build_into(&dir.path().join("out2"), &init);

    // Byte-identical outputs.
    assert_eq!(first.kernel.sha256, second.kernel.sha256);
    assert_eq!(first.initrd.sha256, second.initrd.sha256);
    assert_eq!(
        std::fs::read(&first.initrd.path).unwrap(),
        std::fs::read(&second.initrd.path).unwrap()
    );
    assert!(dir.path().join("out1/manifest.json").is_file());
    let kernel = std::fs::read(&first.kernel.path).unwrap();
    assert_eq!(&kernel[0x202..0x206], b"HdrS");

    let entries = initrd_entries(&first.initrd.path);
    let find = |path: &str| entries.iter().find(|e| e.path == path);
    let has = |path: &str| find(path).is_some();

    // Reproducible archive: sorted, owned by root, mtime 0, no hard links.
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(paths, sorted);
    assert!(
        entries
            .iter()
            .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 0)
    );
    assert!(entries.iter().all(|e| e.is_dir() || e.nlink == 1));

    // PID 1 and its links.
    let init_entry = find("init").unwrap();
    assert_eq!(init_entry.mode & 0o777, 0o755);
    assert_eq!(init_entry.data, b"a stand-in for hyperos-init\n");
    assert_eq!(find("usr/sbin/init").unwrap().link_target(), Some("/init"));
    assert_eq!(
        find("usr/libexec/hyperos/dhcp-hook").unwrap().link_target(),
        Some("/init")
    );

    // The guest's own hyperos, with a line of its own in the report.
    let cli = find("usr/bin/hyperos").unwrap();
    assert_eq!(cli.mode & 0o777, 0o755);
    assert_eq!(cli.data, b"a stand-in for hyperos\n");
    assert!(first.parts.iter().any(|p| p.name == "hyperos"));

    // Merged /usr.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        assert_eq!(find(link).unwrap().link_target(), Some(target));
    }

    // Programs and their libraries.
    for path in [
        "usr/bin/busybox",
        "usr/sbin/dropbear",
        "usr/bin/dropbearkey",
        "usr/lib/openssh/sftp-server",
        "usr/bin/scp",
        "usr/bin/fusermount3",
        "usr/bin/systemd-nspawn",
        "usr/sbin/mke2fs",
        "usr/sbin/mkfs.ext4",
        "usr/sbin/e2fsck",
        "usr/lib64/ld-linux-x86-64.so.2",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so",
        "usr/lib/x86_64-linux-gnu/libseccomp.so.2",
        "usr/lib/x86_64-linux-gnu/libacl.so.1",
    ] {
        assert!(has(path), "{path} missing from the initrd");
    }
    // Dropbear's compiled-in sftp-server path leads to OpenSSH's.
    assert_eq!(
        find("usr/lib/sftp-server").and_then(|e| e.link_target()),
        Some("/usr/lib/openssh/sftp-server")
    );
    // Busybox applets, without replacing real programs.
    for applet in [
        "sh", "ip", "udhcpc", "mount", "umount", "poweroff", "reboot", "halt", "ps", "cat",
        "hostname",
    ] {
        let entry =
            find(&format!("usr/bin/{applet}")).or_else(|| find(&format!("usr/sbin/{applet}")));
        assert_eq!(
            entry.and_then(|e| e.link_target()),
            Some("/usr/bin/busybox"),
            "applet {applet}"
        );
    }
    assert!(find("usr/sbin/mke2fs").unwrap().is_file());

    // Configuration.
    let text = |path: &str| {
        String::from_utf8(find(path).unwrap_or_else(|| panic!("{path}")).data.clone()).unwrap()
    };
    assert!(text("etc/passwd").starts_with("root:x:0:0:root:/root:/bin/sh"));
    assert!(text("etc/shells").contains("/bin/sh"));
    assert!(text("etc/os-release").contains("ID=hyperos"));
    assert!(text("etc/motd").contains("hyperos run dat://"));
    assert_eq!(find("etc/shadow").unwrap().mode & 0o7777, 0o600);
    assert_eq!(find("tmp").unwrap().mode & 0o7777, 0o1777);
    assert_eq!(find("root").unwrap().mode & 0o7777, 0o700);
    for dir in [
        "proc",
        "sys",
        "dev",
        "run",
        "etc/dropbear",
        "var/lib/hyperos",
        "mnt",
        "var/tmp",
    ] {
        assert!(find(dir).unwrap().is_dir(), "{dir}");
    }
    let info: serde_json::Value = serde_json::from_str(&text("etc/hyperos/image")).unwrap();
    assert!(info["packages"]["dropbear-bin"].is_string());

    // Modules: listed dependencies first, each shipped.
    let list = text("etc/hyperos/modules");
    let modules: Vec<&str> = list.lines().collect();
    assert_eq!(modules, first.modules);
    assert!(modules.len() >= 15, "{modules:?}");
    for module in &modules {
        assert!(module.starts_with("/usr/lib/modules/"));
        assert!(has(&module[1..]), "{module} listed but not shipped");
    }
    // Every module comes after the modules it depends on.
    for (i, module) in modules.iter().enumerate() {
        let data = &find(&module[1..]).unwrap().data;
        for dep in hyperos_image::modules::depends_of(data).unwrap() {
            let at = modules
                .iter()
                .position(|m| hyperos_image::modules::name_of(m).as_deref() == Some(dep.as_str()));
            assert!(
                at.is_some_and(|at| at < i),
                "{module} needs {dep} loaded first: {modules:?}"
            );
        }
    }
    for name in [
        "virtio_pci",
        "virtio_net",
        "virtio_blk",
        "virtio_rng",
        "vmw_vsock_virtio_transport",
        "nf_tables",
        "bridge",
        "qemu_fw_cfg",
        "evdev",
    ] {
        assert!(
            modules
                .iter()
                .any(|m| hyperos_image::modules::name_of(m).as_deref() == Some(name)),
            "{name}"
        );
    }
    assert!(first.builtin_modules.contains(&"ext4".to_owned()));

    // Size budget: the 2016 image was 50 MB.
    assert!(
        first.total() < 30_000_000,
        "image is {} bytes",
        first.total()
    );
    assert!(first.packages.iter().any(|p| p.name == "libc6"));
}

#[test]
fn a_corrupt_kernel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    std::fs::write(&init, b"init").unwrap();
    let fake = dir.path().join("bzImage");
    std::fs::write(&fake, vec![0u8; 4096]).unwrap();
    let mut opts = BuildOptions::for_repo(&repo(), init);
    opts.out_dir = dir.path().join("out");
    opts.cache_dir = dir.path().join("cache");
    opts.kernel = Some(fake);
    // Refused before anything is downloaded or written.
    let err = build(&opts).unwrap_err();
    assert!(!dir.path().join("cache").exists());
    assert!(err.to_string().contains("not an x86 bzImage"), "{err}");
    assert!(!dir.path().join("out/initrd.gz").exists());
}

#[test]
fn a_missing_or_dynamic_guest_hyperos_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    std::fs::write(&init, b"init").unwrap();
    let mut opts = BuildOptions::for_repo(&repo(), init);
    opts.out_dir = dir.path().join("out");
    opts.cache_dir = dir.path().join("cache");

    opts.guest_cli = Some(dir.path().join("missing"));
    let err = build(&opts).unwrap_err().to_string();
    assert!(
        err.contains("cannot read the guest's hyperos binary") && err.contains("--hyperos"),
        "{err}"
    );
    // A glibc program would not run in the guest: refused, naming the fix.
    opts.guest_cli = Some("/usr/bin/ls".into());
    let err = build(&opts).unwrap_err().to_string();
    assert!(
        err.contains("dynamically linked") && err.contains("x86_64-unknown-linux-musl"),
        "{err}"
    );
    // Refused before anything is downloaded or written.
    assert!(!dir.path().join("cache").exists());
    assert!(!dir.path().join("out").exists());
}

/// Boots the built kernel and initrd under QEMU (TCG) with a shell script as
/// /init that loads every listed module with busybox insmod and powers off.
#[test]
fn boots_under_qemu() {
    let qemu = "qemu-system-x86_64";
    if !have_apt()
        || std::process::Command::new(qemu)
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("no apt or no {qemu}; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.sh");
    std::fs::write(
        &init,
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         n=0\n\
         for m in $(cat /etc/hyperos/modules); do insmod $m || echo MODULE-FAILED $m; n=$((n+1)); done\n\
         echo HYPEROS-MODULES-LOADED $n\n\
         /usr/sbin/dropbear -V 2>&1 | head -1\n\
         /usr/bin/systemd-nspawn --version | head -1\n\
         echo HYPEROS-BOOT-OK\n\
         poweroff -f\n",
    )
    .unwrap();
    let report = build_into(&dir.path().join("out"), &init);
    let output = std::process::Command::new("timeout")
        .args([
            "240",
            qemu,
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&report.kernel.path)
        .arg("-initrd")
        .arg(&report.initrd.path)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&output.stdout);
    println!("{console}");
    assert!(
        console.contains("HYPEROS-BOOT-OK"),
        "guest did not finish:\n{console}"
    );
    assert!(
        !console.contains("MODULE-FAILED"),
        "a module failed to load:\n{console}"
    );
    assert!(console.contains(&format!("HYPEROS-MODULES-LOADED {}", report.modules.len())));
    assert!(
        console.contains("systemd 252"),
        "nspawn did not run:\n{console}"
    );
}
