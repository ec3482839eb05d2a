//! The error type of the guest's boot steps.
//!
//! Each step says what it was doing; the OS error, when there is one, is
//! kept as the source. [`Error::report`] joins both for the console and for
//! the host's `GuestEvent::Error`.

use std::io;

/// A step of the boot or shutdown that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Error {
    what: String,
    #[source]
    source: Option<io::Error>,
}

impl Error {
    /// An error without an OS cause.
    pub fn msg(what: impl Into<String>) -> Self {
        Error {
            what: what.into(),
            source: None,
        }
    }

    /// The whole story in one line: what failed, and why.
    pub fn report(&self) -> String {
        match &self.source {
            Some(source) => format!("{}: {source}", self.what),
            None => self.what.clone(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an OS error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error {
            what: what(),
            source: Some(source),
        })
    }
}

#[cfg(target_os = "linux")]
impl<T> Context<T> for nix::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| Error {
            what: what(),
            source: Some(io::Error::from(errno)),
        })
    }
}
