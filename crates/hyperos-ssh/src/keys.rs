//! The user's SSH key.
//!
//! ```text
//! <keys dir>/id_ed25519.pub   the public key (not secret), always
//! <keys dir>/store            "keychain" or "file": where the private key is
//! <keys dir>/id_ed25519       the private key, 0600, only for the file store
//! ```
//!
//! The keychain entry is service [`KEYCHAIN_SERVICE`], account
//! [`KEYCHAIN_ACCOUNT`], holding the OpenSSH private key text. With a
//! keychain the private key never touches the disk.

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{LineEnding, PrivateKey, private::Ed25519Keypair};

use crate::SshError;

pub const KEYCHAIN_SERVICE: &str = "org.hyperos";
pub const KEYCHAIN_ACCOUNT: &str = "ssh-ed25519";
/// `file` or `keychain`: force where the key is kept.
pub const KEYSTORE_ENV: &str = "HYPEROS_KEYSTORE";

/// Where the private key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStore {
    Keychain,
    File(PathBuf),
}

impl std::fmt::Display for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyStore::Keychain => f.write_str("the OS keychain"),
            KeyStore::File(p) => write!(f, "{} (mode 0600)", p.display()),
        }
    }
}

/// The user's key pair and where it lives.
#[derive(Clone)]
pub struct UserKey {
    pub private: PrivateKey,
    pub store: KeyStore,
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKey")
            .field("public", &self.public_openssh())
            .field("store", &self.store)
            .finish()
    }
}

impl UserKey {
    /// The public key, one OpenSSH line.
    pub fn public_openssh(&self) -> String {
        self.private.public_key().to_openssh().unwrap_or_default()
    }

    /// SHA256 fingerprint, as OpenSSH prints it.
    pub fn fingerprint(&self) -> String {
        self.private
            .public_key()
            .fingerprint(Default::default())
            .to_string()
    }
}

/// The SHA256 fingerprint (as OpenSSH prints it) of a public key line,
/// `None` if it does not parse.
pub fn fingerprint_of(openssh: &str) -> Option<String> {
    russh::keys::PublicKey::from_openssh(openssh.trim())
        .ok()
        .map(|k| k.fingerprint(Default::default()).to_string())
}

/// What `init` did.
#[derive(Debug)]
pub struct InitOutcome {
    pub key: UserKey,
    pub created: bool,
    /// Why the keychain was not used, when it was not.
    pub fallback_reason: Option<String>,
}

/// Creates the user's key unless one exists (or `force`).
pub fn init(keys_dir: &Path, force: bool) -> Result<InitOutcome, SshError> {
    if !force && let Ok(key) = load(keys_dir) {
        return Ok(InitOutcome {
            key,
            created: false,
            fallback_reason: None,
        });
    }
    let seed: [u8; 32] = rand_seed()?;
    let mut private = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    // The comment has spaces on purpose: the legacy `sshkey="…"` form must carry them.
    private.set_comment(format!("HyperOS key of {}", host_name()));
    let pem = private
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::BadKey(e.to_string()))?;

    create_dir(keys_dir)?;
    let (store, fallback_reason) = match choose_store() {
        Choice::File(reason) => (KeyStore::File(keys_dir.join("id_ed25519")), reason),
        Choice::Keychain { required } => match keychain_entry().and_then(|e| {
            e.set_password(&pem).map_err(SshError::Keychain)?;
            // Read back: some stores accept a write and lose it.
            match e.get_password() {
                Ok(back) if back == *pem => Ok(()),
                Ok(_) => Err(SshError::BadKey("the keychain returned another key".into())),
                Err(err) => Err(SshError::Keychain(err)),
            }
        }) {
            Ok(()) => (KeyStore::Keychain, None),
            Err(err) if !required => (
                KeyStore::File(keys_dir.join("id_ed25519")),
                Some(format!("no keychain service answered: {err}")),
            ),
            Err(err) => return Err(err),
        },
    };
    if let KeyStore::File(path) = &store {
        write_private(path, pem.as_bytes())?;
    } else {
        let _ = std::fs::remove_file(keys_dir.join("id_ed25519"));
    }
    let public = private.public_key().to_openssh().unwrap_or_default();
    write_file(
        &keys_dir.join("id_ed25519.pub"),
        format!("{public}\n").as_bytes(),
    )?;
    let marker = match store {
        KeyStore::Keychain => "keychain\n",
        KeyStore::File(_) => "file\n",
    };
    write_file(&keys_dir.join("store"), marker.as_bytes())?;
    Ok(InitOutcome {
        key: UserKey { private, store },
        created: true,
        fallback_reason,
    })
}

/// Loads the user's key from wherever `init` put it.
pub fn load(keys_dir: &Path) -> Result<UserKey, SshError> {
    let marker = match std::fs::read_to_string(keys_dir.join("store")) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SshError::NoKey),
        Err(e) => return Err(SshError::io("read", keys_dir.join("store"))(e)),
    };
    let (pem, store) = match marker.trim() {
        "keychain" => {
            let pem = keychain_entry()?.get_password().map_err(|e| match e {
                keyring::Error::NoEntry => SshError::NoKey,
                other => SshError::Keychain(other),
            })?;
            (pem, KeyStore::Keychain)
        }
        _ => {
            let path = keys_dir.join("id_ed25519");
            let pem = match std::fs::read_to_string(&path) {
                Ok(p) => p,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SshError::NoKey),
                Err(e) => return Err(SshError::io("read", &path)(e)),
            };
            (pem, KeyStore::File(path))
        }
    };
    let private =
        PrivateKey::from_openssh(pem.trim()).map_err(|e| SshError::BadKey(e.to_string()))?;
    Ok(UserKey { private, store })
}

/// The public key line, without touching the keychain.
pub fn public_key(keys_dir: &Path) -> Result<String, SshError> {
    match std::fs::read_to_string(keys_dir.join("id_ed25519.pub")) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SshError::NoKey),
        Err(e) => Err(SshError::io("read", keys_dir.join("id_ed25519.pub"))(e)),
    }
}

/// Writes the private key to a 0600 file (for stock OpenSSH), wherever it
/// is kept.
pub fn export_private(key: &UserKey, path: &Path) -> Result<(), SshError> {
    let pem = key
        .private
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::BadKey(e.to_string()))?;
    write_private(path, pem.as_bytes())
}

pub(crate) enum Choice {
    Keychain { required: bool },
    File(Option<String>),
}

pub(crate) fn choose_store() -> Choice {
    match std::env::var(KEYSTORE_ENV).as_deref() {
        Ok("file") => return Choice::File(Some(format!("{KEYSTORE_ENV}=file"))),
        Ok("keychain") => return Choice::Keychain { required: true },
        _ => {}
    }
    if cfg!(all(unix, not(target_os = "macos")))
        && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
    {
        return Choice::File(Some(
            "no D-Bus session, so no Secret Service keychain (headless)".into(),
        ));
    }
    Choice::Keychain { required: false }
}

fn keychain_entry() -> Result<keyring::Entry, SshError> {
    keyring::Entry::new(KEYCHAIN_SERVICE, KEYCHAIN_ACCOUNT).map_err(SshError::Keychain)
}

fn rand_seed() -> Result<[u8; 32], SshError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SshError::BadKey(format!("no randomness: {e}")))?;
    Ok(seed)
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), SshError> {
    std::fs::create_dir_all(dir).map_err(SshError::io("create", dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(SshError::io("set permissions of", dir))?;
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SshError> {
    std::fs::write(path, bytes).map_err(SshError::io("write", path))
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SshError> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(SshError::io("create", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(SshError::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip_with_0600() {
        let tmp = tempfile::tempdir().unwrap();
        // SAFETY: tests in this crate do not read the environment concurrently.
        unsafe { std::env::set_var(KEYSTORE_ENV, "file") };
        assert!(matches!(load(tmp.path()), Err(SshError::NoKey)));
        let out = init(tmp.path(), false).unwrap();
        assert!(out.created);
        assert!(matches!(out.key.store, KeyStore::File(_)));
        assert!(out.fallback_reason.is_some());
        let loaded = load(tmp.path()).unwrap();
        assert_eq!(loaded.public_openssh(), out.key.public_openssh());
        assert!(loaded.public_openssh().starts_with("ssh-ed25519 "));
        hyperos_proto_check(&loaded.public_openssh());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tmp.path().join("id_ed25519"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second init keeps the key; --force replaces it.
        let again = init(tmp.path(), false).unwrap();
        assert!(!again.created);
        assert_eq!(again.key.public_openssh(), out.key.public_openssh());
        let forced = init(tmp.path(), true).unwrap();
        assert_ne!(forced.key.public_openssh(), out.key.public_openssh());
        assert_eq!(public_key(tmp.path()).unwrap(), forced.key.public_openssh());
    }

    #[test]
    fn fingerprints_like_openssh() {
        // The end-to-end tests compare with `ssh-keygen -lf` on a real guest key.
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb7bnFz0lqCSsT6r6uMTAj9Njhq8zW0Vv1t5uyyEm8n";
        let fp = fingerprint_of(key).unwrap();
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(fingerprint_of("garbage"), None);
    }

    #[test]
    fn corrupt_key_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("store"), "file\n").unwrap();
        std::fs::write(tmp.path().join("id_ed25519"), "not a key").unwrap();
        let err = load(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("hyperos init --force"), "{err}");
    }

    fn hyperos_proto_check(line: &str) {
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("ssh-ed25519"));
        assert!(parts.next().unwrap().len() > 60);
    }
}
