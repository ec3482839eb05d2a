//! A russh client that trusts exactly one host key.

use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{SshError, UserKey};

/// Where to log in, and the host key to expect there.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The guest's host key in OpenSSH form (`ssh-ed25519 AAAA…`).
    pub host_key: String,
}

/// A command's captured result.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The remote exit status; 255 when the server sent none (killed by a signal).
    pub status: u32,
}

pub(crate) struct Pinned {
    expected: PublicKey,
    mismatch: Option<String>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                self.mismatch = Some("a certificate".into());
                return Ok(false);
            }
        };
        if key.key_data() == self.expected.key_data() {
            Ok(true)
        } else {
            self.mismatch = Some(key.to_openssh().unwrap_or_default());
            Ok(false)
        }
    }
}

/// A logged-in SSH session.
pub struct Session {
    pub(crate) handle: Handle<Pinned>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Connects, checks the host key against the pinned one, and
    /// authenticates with the user's key.
    #[tracing::instrument(skip_all, fields(host = %endpoint.host, port = endpoint.port))]
    pub async fn connect(
        endpoint: &Endpoint,
        key: &UserKey,
        timeout: Duration,
    ) -> Result<Session, SshError> {
        let expected = PublicKey::from_openssh(endpoint.host_key.trim())
            .map_err(|_| SshError::BadPublicKey(endpoint.host_key.clone()))?;
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| SshError::Timeout(addr.clone()))?
            .map_err(|source| SshError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let handler = Pinned {
            expected: expected.clone(),
            mismatch: None,
        };
        let connecting = client::connect_stream(config, stream, handler);
        let mut handle = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => return Err(SshError::Timeout(addr)),
            Ok(Ok(h)) => h,
            Ok(Err(russh::Error::UnknownKey)) => {
                return Err(SshError::HostKeyMismatch {
                    expected: endpoint.host_key.clone(),
                    got: "another key".into(),
                });
            }
            Ok(Err(e)) => return Err(e.into()),
        };
        let hash = handle.best_supported_rsa_hash().await?.flatten();
        let auth = handle
            .authenticate_publickey(
                endpoint.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key.private.clone()), hash),
            )
            .await?;
        if !auth.success() {
            return Err(SshError::AuthRejected {
                user: endpoint.user.clone(),
            });
        }
        Ok(Session { handle })
    }

    /// Runs `command` and collects its output.
    pub async fn exec_capture(&self, command: &str) -> Result<Output, SshError> {
        let mut channel = self.handle.channel_open_session().await?;
        channel.exec(true, command).await?;
        channel.eof().await?;
        let mut out = Output {
            status: 255,
            ..Default::default()
        };
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = exit_status,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Runs `command` (or a login shell when `None`) with this process's
    /// stdin, stdout and stderr attached. With `tty`, the remote side gets a
    /// PTY sized like the local terminal, the local terminal is put in raw
    /// mode, and size changes are forwarded. Returns the remote exit status.
    pub async fn attach(&self, command: Option<&str>, tty: bool) -> Result<u32, SshError> {
        let mut channel = self.handle.channel_open_session().await?;
        let _raw = if tty {
            let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
            let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
            channel
                .request_pty(false, &term, u32::from(cols), u32::from(rows), 0, 0, &[])
                .await?;
            Some(RawMode::enable()?)
        } else {
            None
        };
        match command {
            Some(cmd) => channel.exec(true, cmd).await?,
            None => channel.request_shell(true).await?,
        }

        let mut stdin = tokio::io::stdin();
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        let mut buf = vec![0u8; 16 * 1024];
        let mut stdin_open = true;
        let mut status = 255;
        #[cfg(unix)]
        let mut winch =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .map_err(SshError::Terminal)?;
        loop {
            #[cfg(unix)]
            let resized = winch.recv();
            #[cfg(not(unix))]
            let resized = std::future::pending::<Option<()>>();
            tokio::select! {
                read = stdin.read(&mut buf), if stdin_open => match read {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        channel.eof().await?;
                    }
                    Ok(n) => channel.data(&buf[..n]).await?,
                },
                Some(_) = resized, if tty => {
                    if let Ok((cols, rows)) = crossterm::terminal::size() {
                        channel.window_change(u32::from(cols), u32::from(rows), 0, 0).await?;
                    }
                }
                msg = channel.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        stdout.write_all(&data).await.map_err(SshError::Terminal)?;
                        stdout.flush().await.map_err(SshError::Terminal)?;
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        stderr.write_all(&data).await.map_err(SshError::Terminal)?;
                        stderr.flush().await.map_err(SshError::Terminal)?;
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = exit_status,
                    // The server closed the channel: nothing more will come,
                    // even if our stdin (a terminal) is still open.
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
            }
        }
        Ok(status)
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Puts the local terminal in raw mode until dropped.
struct RawMode;

impl RawMode {
    fn enable() -> Result<RawMode, SshError> {
        crossterm::terminal::enable_raw_mode().map_err(SshError::Terminal)?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Quotes words for a POSIX shell, so `hyperos run ls "a b"` runs what
/// the user typed.
pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| {
            let w = w.as_ref();
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                w.to_owned()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_join(&["ls", "-l", "/tmp"]), "ls -l /tmp");
        assert_eq!(shell_join(&["echo", "a b"]), "echo 'a b'");
        assert_eq!(shell_join(&["echo", "it's"]), r"echo 'it'\''s'");
        assert_eq!(shell_join(&["echo", ""]), "echo ''");
        assert_eq!(
            shell_join(&["sh", "-c", "echo $HOME; exit 3"]),
            "sh -c 'echo $HOME; exit 3'"
        );
    }
}
