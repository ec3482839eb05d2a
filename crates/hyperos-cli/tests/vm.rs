//! End to end: build the real image, boot it under QEMU (TCG where KVM
//! can't run guests), log in over real SSH with the generated key.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Env, pid_alive, text};

#[test]
fn boot_login_run_and_halt() {
    let env = Env::new();
    let booted = env.boot("main", &["--hostname", "tabby-tom"]);
    assert_eq!(booted["hostname"], "tabby-tom");
    assert_eq!(booted["ip"], "10.0.2.15", "user networking's guest address");
    let pid = booted["pid"].as_u64().unwrap();
    assert!(pid_alive(pid));

    // The pinned host key's fingerprint is OpenSSH's.
    let keygen = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(env.instance_dir("main").join("known_hosts"))
        .output()
        .unwrap();
    let fingerprint = booted["host_key_fingerprint"].as_str().unwrap();
    assert!(
        text(&keygen.stdout).contains(fingerprint),
        "{} vs {fingerprint}",
        text(&keygen.stdout)
    );

    // Real SSH with the user's key and the pinned host key.
    assert_eq!(
        env.ok(&["run", "--name", "main", "hostname"]).trim(),
        "tabby-tom"
    );
    assert_eq!(
        env.ok(&["ssh", "main", "--", "echo", "a b", "it's"]).trim(),
        "a b it's"
    );
    let out = env.run(&["run", "--name", "main", "sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "exit status is propagated");
    assert_eq!(text(&out.stderr).trim(), "oops");

    // The key travelled by fw_cfg, not on the kernel command line; it is 0600.
    let cmdline = env.ok(&["run", "--name", "main", "cat", "/proc/cmdline"]);
    assert!(!cmdline.contains("sshkey"), "{cmdline}");
    assert_eq!(
        env.ok(&[
            "run",
            "--name",
            "main",
            "stat",
            "-c",
            "%a %U",
            "/root/.ssh/authorized_keys"
        ])
        .trim(),
        "600 root"
    );
    let pubkey = std::fs::read_to_string(env.state.path().join("keys/id_ed25519.pub")).unwrap();
    let authorized = env.ok(&["run", "--name", "main", "cat", "/root/.ssh/authorized_keys"]);
    assert_eq!(authorized.trim(), pubkey.trim());

    // Status, ip, pid, ps and logs while running.
    let status = env.status("main");
    assert_eq!(status["state"], "running");
    assert_eq!(status["pid"], pid);
    assert_eq!(env.ok(&["ip", "main"]).trim(), "10.0.2.15");
    assert_eq!(env.ok(&["pid", "main"]).trim(), pid.to_string());
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["name"], "main");
    assert_eq!(ps[0]["state"], "running");
    let console = env.ok(&["logs", "main"]);
    assert!(console.contains("hyperos-init"), "console log: {console}");

    // What the image promises: the modules are loaded, the container
    // runtime and FUSE run, SFTP is served, and PID 1 reaps orphans.
    let modules = env.ok(&["run", "--name", "main", "cat", "/proc/modules"]);
    for module in [
        "virtio_net",
        "virtio_console",
        "fuse",
        "overlay",
        "loop",
        "erofs",
        "squashfs",
        "nf_tables",
        "veth",
        "bridge",
        "qemu_fw_cfg",
    ] {
        assert!(
            modules
                .lines()
                .any(|l| l.starts_with(&format!("{module} "))),
            "{module} not loaded:\n{modules}"
        );
    }
    assert!(
        env.ok(&["run", "--name", "main", "systemd-nspawn", "--version"])
            .starts_with("systemd 252")
    );
    assert!(
        env.ok(&["run", "--name", "main", "fusermount3", "--version"])
            .contains("fusermount3 version")
    );
    let zombies = env.ok(&[
        "run",
        "--name",
        "main",
        "sh",
        "-c",
        "(sh -c 'sleep 0.2' &); sleep 1.5; grep -l '^State:.Z' /proc/[0-9]*/status | wc -l",
    ]);
    assert_eq!(zombies.trim(), "0", "PID 1 reaps orphaned children");

    // An interactive session gets a PTY (run under script(1), which gives
    // this side a terminal).
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} ssh -t main -- tty", common::BIN),
            "/dev/null",
        ])
        .env("HYPEROS_STATE_DIR", env.state.path())
        .env("HYPEROS_KEYSTORE", "file")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "{}",
        text(&out.stdout)
    );

    // Booting it again is refused.
    let err = env.fails(&["boot", "--name", "main"]);
    assert!(err.contains("already running"), "{err}");

    // Graceful halt over ACPI: the guest reports stopping, QEMU exits 0.
    let halted = env.ok(&["halt", "main"]);
    assert!(halted.contains("stopped"), "{halted}");
    assert!(!pid_alive(pid), "QEMU is gone");
    let status = env.status("main");
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["pid"], serde_json::Value::Null);
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "stopped");
    let supervisor_log =
        std::fs::read_to_string(env.instance_dir("main").join("supervisor.log")).unwrap();
    assert!(
        supervisor_log.contains("guest is stopping"),
        "{supervisor_log}"
    );
    let console = env.ok(&["logs", "main"]);
    assert!(
        console.contains("reboot: Power down"),
        "clean power-off: {console}"
    );
    let err = env.fails(&["ip", "main"]);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn legacy_kernel_command_line_and_openssh() {
    let env = Env::new();
    env.boot(
        "legacy",
        &["--legacy-cmdline", "--hostname", "fluffy-kitty"],
    );
    // host= and sshkey="…" (the key's comment has spaces) on the command line.
    let cmdline = env.ok(&["run", "--name", "legacy", "cat", "/proc/cmdline"]);
    assert!(cmdline.contains("host=fluffy-kitty"), "{cmdline}");
    assert!(cmdline.contains("sshkey=\"ssh-ed25519 "), "{cmdline}");
    assert_eq!(
        env.ok(&["run", "--name", "legacy", "hostname"]).trim(),
        "fluffy-kitty"
    );

    // Stock OpenSSH with the snippet: strict host key checking against the pinned key.
    let config = env.ok(&["ssh-config", "legacy"]);
    let config_path = env.state.path().join("ssh_config");
    std::fs::write(&config_path, &config).unwrap();
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&config_path)
        .args([
            "-o",
            "BatchMode=yes",
            "hyperos-legacy",
            "cat",
            "/etc/hostname",
        ])
        .output()
        .expect("run ssh");
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "fluffy-kitty");

    // Stock scp (SFTP protocol, and the legacy protocol with -O) and sftp.
    let payload = env.state.path().join("payload");
    std::fs::write(&payload, "hello from the host\n").unwrap();
    for (flags, remote) in [
        (vec![], "hyperos-legacy:/tmp/sftp-copy"),
        (vec!["-O"], "hyperos-legacy:/tmp/scp-copy"),
    ] {
        let out = std::process::Command::new("scp")
            .arg("-F")
            .arg(&config_path)
            .args(["-o", "BatchMode=yes"])
            .args(&flags)
            .arg(&payload)
            .arg(remote)
            .output()
            .unwrap();
        assert!(out.status.success(), "scp {flags:?}: {}", text(&out.stderr));
    }
    let copies = env.ok(&[
        "run",
        "--name",
        "legacy",
        "cat",
        "/tmp/sftp-copy",
        "/tmp/scp-copy",
    ]);
    assert_eq!(copies, "hello from the host\nhello from the host\n");
    let batch = env.state.path().join("sftp-batch");
    let fetched = env.state.path().join("fetched-hostname");
    std::fs::write(&batch, format!("get /etc/hostname {}\n", fetched.display())).unwrap();
    let out = std::process::Command::new("sftp")
        .arg("-F")
        .arg(&config_path)
        .args(["-o", "BatchMode=yes", "-b"])
        .arg(&batch)
        .arg("hyperos-legacy")
        .output()
        .unwrap();
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&fetched).unwrap().trim(),
        "fluffy-kitty"
    );

    // A wrong pinned key is refused by OpenSSH too.
    let known = env.instance_dir("legacy").join("known_hosts");
    std::fs::write(&known, "hyperos-legacy ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb7bnFz0lqCSsT6r6uMTAj9Njhq8zW0Vv1t5uyyEm8n\n").unwrap();
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&config_path)
        .args(["-o", "BatchMode=yes", "hyperos-legacy", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        text(&out.stderr)
    );
    env.ok(&["halt", "legacy"]);
}

#[test]
fn two_instances_at_once_then_poweroff_from_inside() {
    let env = Env::new();
    // The second boots while the first runs. (Booting both at the same
    // instant under emulation on 2 cores, beside other tests, starves the
    // guests' timers; on KVM it makes no difference.)
    let a = env.boot("one", &[]);
    let b = env.boot("two", &[]);
    assert_ne!(a["ssh_port"], b["ssh_port"]);
    assert_ne!(a["hostname"], b["hostname"], "random hostnames differ");
    for (name, booted) in [("one", &a), ("two", &b)] {
        let hostname = env.ok(&["run", "--name", name, "hostname"]);
        assert_eq!(hostname.trim(), booted["hostname"].as_str().unwrap());
    }
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps.as_array().unwrap().len(), 2);
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "running")
    );

    // `poweroff` inside the guest (busybox signals PID 1) stops it cleanly.
    let _ = env.run(&["run", "--name", "one", "poweroff"]);
    env.wait_state("one", "stopped", Duration::from_secs(60));
    assert_eq!(
        env.status("two")["state"],
        "running",
        "the other one is untouched"
    );
    env.ok(&["halt", "two"]);
}

#[test]
fn stale_pids_after_kill_9_read_as_stopped() {
    let env = Env::new();
    let booted = env.boot("victim", &[]);
    let qemu = booted["pid"].as_u64().unwrap();

    // kill -9 of QEMU: the supervisor records the instance as stopped.
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &qemu.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = env.wait_state("victim", "stopped", Duration::from_secs(20));
    assert_eq!(status["pid"], serde_json::Value::Null);

    // It boots again, keeping its hostname; then kill -9 of the supervisor:
    // QEMU dies with it and the stale record reads as stopped, not an error.
    let again = env.boot("victim", &[]);
    assert_eq!(again["hostname"], booted["hostname"]);
    let qemu = again["pid"].as_u64().unwrap();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.instance_dir("victim").join("state.json")).unwrap(),
    )
    .unwrap();
    let supervisor = state["supervisor_pid"].as_u64().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &supervisor.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = env.wait_state("victim", "stopped", Duration::from_secs(20));
    assert_eq!(status["stale"], true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pid_alive(qemu) {
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("stopped"), "{ps}");
    // And a stale instance can be booted again.
    env.boot("victim", &[]);
    env.ok(&["kill", "victim"]);
    assert_eq!(env.status("victim")["state"], "stopped");
}

#[test]
fn boot_timeout_stops_the_vm_and_shows_the_console() {
    let env = Env::new();
    let err = env.fails(&["boot", "--name", "slow", "--timeout", "1"]);
    assert!(err.contains("did not become ready within 1 s"), "{err}");
    assert!(err.contains("console"), "{err}");
    let status = env.status("slow");
    assert!(
        status["state"] == "failed" || status["state"] == "stopped",
        "{status}"
    );
    assert_eq!(status["pid"], serde_json::Value::Null);
}

#[test]
fn bad_input_gets_one_clear_line() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();

    let err = env.fails(&["status", "nope"]);
    assert!(err.contains("no instance named \"nope\""), "{err}");
    let err = env.fails(&["boot", "--name", "../evil"]);
    assert!(err.contains("invalid instance name"), "{err}");
    let err = env.fails(&["boot", "--memory", "lots"]);
    assert!(err.contains("invalid memory size"), "{err}");

    // QEMU missing: the package is named.
    let out = env
        .cmd(&["boot", "--name", "q"])
        .env("HYPEROS_QEMU", "/nonexistent/qemu")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("apt-get install qemu-system-x86"),
        "{}",
        text(&out.stderr)
    );

    // No image: the command to build it is named.
    let out = env
        .cmd(&["boot", "--name", "i"])
        .env("HYPEROS_IMAGE_DIR", tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("hyperos image build"),
        "{}",
        text(&out.stderr)
    );

    // Corrupt kernel and initrd.
    let bad = tmp.path().join("bad");
    std::fs::write(&bad, vec![0x42; 4096]).unwrap();
    let initrd = env.image.join("initrd.gz");
    let kernel = env.image.join("kernel");
    let err = env.fails(&[
        "boot",
        "--name",
        "k",
        "--kernel",
        bad.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
    ]);
    assert!(err.contains("is not a Linux kernel"), "{err}");
    let err = env.fails(&[
        "boot",
        "--name",
        "k",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("is not an initrd"), "{err}");

    // Port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = env.fails(&["boot", "--name", "p", "--ssh-port", &port]);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("in use"),
        "{err}"
    );

    // An invalid SSH key.
    let keys = env.state.path().join("keys");
    std::fs::write(
        keys.join("id_ed25519.pub"),
        "ssh-ed25519 !!!not-base64!!!\n",
    )
    .unwrap();
    let err = env.fails(&["boot", "--name", "s"]);
    assert!(err.contains("invalid SSH public key"), "{err}");

    for err in [
        env.fails(&["halt", "nope"]),
        env.fails(&["kill", "nope"]),
        env.fails(&["rm", "nope"]),
    ] {
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn status_watch_follows_every_phase() {
    let env = Env::new();
    // The instance must exist before it can be watched: boot and halt it
    // once, leaving a file on its data disk and noting its host key.
    env.boot("watched", &[]);
    env.ok(&[
        "run",
        "--name",
        "watched",
        "sh",
        "-c",
        "echo kept > /var/lib/hyperos/marker",
    ]);
    let host_key = |env: &Env| -> String {
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(env.instance_dir("watched").join("state.json")).unwrap(),
        )
        .unwrap();
        state["host_key"].as_str().unwrap().to_owned()
    };
    let first_key = host_key(&env);
    env.ok(&["halt", "watched"]);

    let mut watch = env
        .cmd(&["status", "watched", "--watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(watch_out)
            .lines()
            .map_while(Result::ok)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                v["state"].as_str().unwrap().to_owned()
            })
            .collect::<Vec<_>>()
    });
    env.boot("watched", &[]);
    // The data disk was unmounted cleanly and kept; the host key came back.
    assert_eq!(
        env.ok(&["run", "--name", "watched", "cat", "/var/lib/hyperos/marker"])
            .trim(),
        "kept"
    );
    assert_eq!(host_key(&env), first_key);
    env.ok(&["halt", "watched"]);
    std::thread::sleep(Duration::from_millis(500));
    watch.kill().unwrap();
    watch.wait().unwrap();

    // Every phase of the second boot was seen, in order, as it happened.
    let seen = lines.join().unwrap();
    let mut expected = ["stopped", "booting", "running", "stopping", "stopped"]
        .into_iter()
        .peekable();
    for state in &seen {
        if expected.peek() == Some(&state.as_str()) {
            expected.next();
        }
    }
    assert_eq!(expected.next(), None, "watch saw {seen:?}");
}
