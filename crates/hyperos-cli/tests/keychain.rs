//! The user's key in a real Secret Service (gnome-keyring in a private
//! D-Bus session), and the 0600 file fallback where none runs.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{BIN, text};

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn key_lives_in_the_secret_service_when_one_runs() {
    for program in ["dbus-run-session", "gnome-keyring-daemon", "secret-tool"] {
        assert!(
            have(program),
            "{program} is missing: `./x setup` installs it"
        );
    }
    let state = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let tree = home.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("hello"), "hello\n").unwrap();
    // A fresh login keyring, created and unlocked with a throwaway password, in a private session bus.
    let script = format!(
        "set -e
         printf 'hyperos-test' | gnome-keyring-daemon --unlock --components=secrets >/dev/null
         {BIN} init
         {BIN} init
         timeout 10 {BIN} share {tree} --json --bind 127.0.0.1:0 2>&1 | head -1 || true
         secret-tool search --all service org.hyperos 2>&1",
        tree = tree.display()
    );
    let out = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", &script])
        .env("HYPEROS_STATE_DIR", state.path())
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_RUNTIME_DIR", home.path())
        .env_remove("HYPEROS_KEYSTORE")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("Created an ed25519 SSH key, kept in the OS keychain."),
        "{stdout}"
    );
    assert!(
        stdout.contains("already exists, kept in the OS keychain"),
        "loaded back: {stdout}"
    );
    assert!(stdout.contains("ssh-ed25519"), "{stdout}");
    // The secret is in the keyring, and the private key never touched the disk.
    assert!(
        stdout.contains("BEGIN OPENSSH PRIVATE KEY"),
        "secret-tool found it: {stdout}"
    );
    let keys = state.path().join("keys");
    assert!(!keys.join("id_ed25519").exists());
    assert_eq!(
        std::fs::read_to_string(keys.join("store")).unwrap().trim(),
        "keychain"
    );
    assert!(keys.join("id_ed25519.pub").exists());
    // An archive's signing key goes to the keychain too.
    assert!(
        stdout.contains("The archive's secret key is kept in the OS keychain."),
        "{stdout}"
    );
    let archives: Vec<_> = std::fs::read_dir(state.path().join("archives"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        archives
            .iter()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".secret")),
        "no secret on disk"
    );
}

#[test]
fn headless_falls_back_to_a_0600_file_and_says_so() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("init")
        .env("HYPEROS_STATE_DIR", state.path())
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("HYPEROS_KEYSTORE")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("(mode 0600)"), "{stdout}");
    assert!(stdout.contains("no D-Bus session"), "says why: {stdout}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.path().join("keys/id_ed25519"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
