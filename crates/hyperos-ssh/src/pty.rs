//! A PTY session for front ends that draw their own terminal (the desktop
//! app's xterm.js tabs): the remote side's output arrives on a channel, and
//! keystrokes and size changes go in through another.
//!
//! ```text
//!  front end ── PtyInput::{Data, Resize, Close} ──▶ task owning the Session ──▶ SSH channel
//!  front end ◀── PtyOutput::{Data, Exit}  ─────────┘
//! ```
//!
//! The task owns the whole SSH session, so one [`Pty`] is one connection;
//! it ends (and disconnects) when the remote side closes the channel, when
//! [`PtyInput::Close`] arrives, or when the [`Pty`] is dropped.

use russh::ChannelMsg;
use tokio::sync::mpsc;

use crate::{Session, SshError};

/// What the front end sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyInput {
    /// Bytes typed or pasted.
    Data(Vec<u8>),
    /// The terminal's new size, in columns and rows.
    Resize { cols: u32, rows: u32 },
    /// Hang up.
    Close,
}

/// What the remote side sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyOutput {
    /// Output of the remote program (stdout and stderr, as a terminal shows them).
    Data(Vec<u8>),
    /// The session ended; the remote exit status, 255 when none was sent.
    Exit(u32),
}

/// A running PTY session.
#[derive(Debug)]
pub struct Pty {
    pub input: mpsc::Sender<PtyInput>,
    pub output: mpsc::Receiver<PtyOutput>,
}

impl Session {
    /// Starts `command` (a login shell when `None`) on a PTY of
    /// `cols`×`rows` and hands the session to a task that shuttles bytes
    /// between it and the returned channels. Call from a Tokio runtime.
    pub async fn into_pty(
        self,
        command: Option<&str>,
        cols: u32,
        rows: u32,
    ) -> Result<Pty, SshError> {
        let mut channel = self.handle.channel_open_session().await?;
        channel
            .request_pty(false, "xterm-256color", cols, rows, 0, 0, &[])
            .await?;
        match command {
            Some(cmd) => channel.exec(true, cmd).await?,
            None => channel.request_shell(true).await?,
        }
        let (input_tx, mut input_rx) = mpsc::channel::<PtyInput>(64);
        let (output_tx, output_rx) = mpsc::channel::<PtyOutput>(256);
        tokio::spawn(async move {
            let mut status = 255;
            loop {
                tokio::select! {
                    input = input_rx.recv() => match input {
                        Some(PtyInput::Data(bytes)) => {
                            if channel.data_bytes(bytes).await.is_err() {
                                break;
                            }
                        }
                        Some(PtyInput::Resize { cols, rows }) => {
                            let _ = channel.window_change(cols, rows, 0, 0).await;
                        }
                        Some(PtyInput::Close) | None => {
                            let _ = channel.close().await;
                            break;
                        }
                    },
                    msg = channel.wait() => match msg {
                        Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                            if output_tx.send(PtyOutput::Data(data.to_vec())).await.is_err() {
                                break;
                            }
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => status = exit_status,
                        Some(ChannelMsg::Close) | None => break,
                        Some(_) => {}
                    },
                }
            }
            let _ = output_tx.send(PtyOutput::Exit(status)).await;
            self.close().await;
        });
        Ok(Pty {
            input: input_tx,
            output: output_rx,
        })
    }
}
