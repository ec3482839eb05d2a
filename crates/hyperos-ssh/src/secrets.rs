//! Other secrets of the user (archive signing keys), kept like the SSH key:
//! in the OS keychain when one answers, else in a 0600 file.
//!
//! ```text
//! <dir>/<name>.store    "keychain" or "file": where the secret is
//! <dir>/<name>.secret   the secret, 0600, only for the file store
//! ```
//!
//! The keychain entry is service [`KEYCHAIN_SERVICE`](crate::keys::KEYCHAIN_SERVICE),
//! account `<name>`.

use std::path::Path;

use crate::SshError;
use crate::keys::{
    Choice, KEYCHAIN_SERVICE, KeyStore, choose_store, create_dir, write_file, write_private,
};

/// Stores `secret` under `name`; returns where, and why not in the keychain
/// when it is not.
pub fn store(dir: &Path, name: &str, secret: &str) -> Result<(KeyStore, Option<String>), SshError> {
    create_dir(dir)?;
    let file = dir.join(format!("{name}.secret"));
    let (store, reason) = match choose_store() {
        Choice::File(reason) => (KeyStore::File(file.clone()), reason),
        Choice::Keychain { required } => {
            let saved = entry(name).and_then(|e| {
                e.set_password(secret).map_err(SshError::Keychain)?;
                match e.get_password() {
                    Ok(back) if back == secret => Ok(()),
                    Ok(_) => Err(SshError::BadKey(
                        "the keychain returned another secret".into(),
                    )),
                    Err(err) => Err(SshError::Keychain(err)),
                }
            });
            match saved {
                Ok(()) => (KeyStore::Keychain, None),
                Err(err) if !required => (
                    KeyStore::File(file.clone()),
                    Some(format!("no keychain service answered: {err}")),
                ),
                Err(err) => return Err(err),
            }
        }
    };
    if let KeyStore::File(path) = &store {
        write_private(path, secret.as_bytes())?;
    }
    let marker = match store {
        KeyStore::Keychain => "keychain\n",
        KeyStore::File(_) => "file\n",
    };
    write_file(&dir.join(format!("{name}.store")), marker.as_bytes())?;
    Ok((store, reason))
}

/// Loads the secret stored under `name`; `None` if there is none.
pub fn load(dir: &Path, name: &str) -> Result<Option<String>, SshError> {
    let marker = match std::fs::read_to_string(dir.join(format!("{name}.store"))) {
        Ok(m) => m,
        // Secrets written before the marker existed are files.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "file".to_owned(),
        Err(e) => return Err(SshError::io("read", dir.join(format!("{name}.store")))(e)),
    };
    if marker.trim() == "keychain" {
        return match entry(name)?.get_password() {
            Ok(secret) => Ok(Some(secret)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(err) => Err(SshError::Keychain(err)),
        };
    }
    let path = dir.join(format!("{name}.secret"));
    match std::fs::read_to_string(&path) {
        Ok(secret) => Ok(Some(secret.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SshError::io("read", &path)(e)),
    }
}

fn entry(name: &str) -> Result<keyring::Entry, SshError> {
    keyring::Entry::new(KEYCHAIN_SERVICE, name).map_err(SshError::Keychain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        // SAFETY: tests in this crate do not read the environment concurrently.
        unsafe { std::env::set_var(crate::keys::KEYSTORE_ENV, "file") };
        assert_eq!(load(tmp.path(), "archive-x").unwrap(), None);
        let (store, _) = store(tmp.path(), "archive-x", "s3cret").unwrap();
        assert!(matches!(store, KeyStore::File(_)));
        assert_eq!(
            load(tmp.path(), "archive-x").unwrap().as_deref(),
            Some("s3cret")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tmp.path().join("archive-x.secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
