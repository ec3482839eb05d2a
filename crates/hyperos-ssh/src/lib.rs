//! SSH for HyperOS: the user's key, kept in the OS keychain, and a client
//! (russh) that logs into a guest whose host key the guest reported over
//! the agent channel, so no host key is ever trusted on first use.
//!
//! * [`keys`]: create and load the user's ed25519 key: the OS keychain
//!   (Keychain, Credential Manager, Secret Service) when one answers, else
//!   a 0600 file, and which one is used is recorded beside the public key.
//! * [`client`]: connect with a pinned host key; run a command with its
//!   output captured or attached to the terminal; an interactive shell
//!   with a PTY that follows the terminal's size.
//! * [`pty`]: a PTY session as channels of bytes and resizes, for front
//!   ends that draw the terminal themselves (the desktop app's tabs).

pub mod client;
pub mod error;
pub mod keys;
pub mod pty;
pub mod secrets;

pub use client::{Endpoint, Output, Session};
pub use error::SshError;
pub use keys::{KeyStore, UserKey};
pub use pty::{Pty, PtyInput, PtyOutput};
