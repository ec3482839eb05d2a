use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("no SSH key yet: run `hyperos init`")]
    NoKey,
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the OS keychain failed ({0}); set HYPEROS_KEYSTORE=file to keep the key in a 0600 file instead"
    )]
    Keychain(#[source] keyring::Error),
    #[error(
        "the stored SSH key is not a valid OpenSSH private key ({0}); run `hyperos init --force` to make a new one"
    )]
    BadKey(String),
    #[error("invalid SSH public key {0:?}")]
    BadPublicKey(String),
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out connecting to {0}")]
    Timeout(String),
    #[error(
        "the server's host key does not match the one the guest reported (expected {expected}, got {got}); refusing to connect"
    )]
    HostKeyMismatch { expected: String, got: String },
    #[error(
        "the guest refused the key for {user}; was the VM booted with this key? `hyperos halt` and `hyperos boot` again"
    )]
    AuthRejected { user: String },
    #[error("SSH failed: {0}")]
    Protocol(#[from] russh::Error),
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
}

impl SshError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> SshError {
        let path = path.into();
        move |source| SshError::Io {
            action,
            path,
            source,
        }
    }
}
