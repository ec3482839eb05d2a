//! Terminal tabs: each tab is one SSH session with a PTY
//! (`hyperos_ssh::Session::into_pty`), its output streamed to the window's
//! xterm.js over a Tauri channel, its input and size changes sent back by
//! commands. A tab that boots a link also has its container's progress
//! polled over a second SSH session while it runs, and reports the guest's
//! `hyperos: …` failure line when it ends in failure (see `link.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use hyperos_run::store::RunProgress;
use hyperos_ssh::{Endpoint, PtyInput, PtyOutput, Session, UserKey};
use serde::Serialize;
use tauri::ipc::Channel;
use tokio::sync::mpsc;

use crate::link;
use crate::vm::Vm;

/// How often a booting container's progress is read.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How much of a boot tab's output is kept for its failure line.
const TAIL: usize = 4096;

/// What a tab's xterm.js receives.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TermEvent {
    Data {
        data: Vec<u8>,
    },
    /// The container's progress, when it changed.
    Progress(RunProgress),
    /// The session ended; `error` is the guest's `hyperos: …` line when a
    /// boot failed.
    Exit {
        status: u32,
        error: Option<String>,
    },
}

#[derive(Default)]
pub struct Terminals {
    next: AtomicU32,
    inputs: Mutex<HashMap<u32, mpsc::Sender<PtyInput>>>,
}

impl Terminals {
    /// Logs in and starts `command` (a shell when `None`) on a PTY; returns
    /// the tab's id. With `container`, the command boots that container:
    /// its progress is sent while the tab runs.
    pub async fn open(
        self: Arc<Self>,
        vm: Arc<Vm>,
        events: Channel<TermEvent>,
        cols: u32,
        rows: u32,
        command: Option<String>,
        container: Option<String>,
    ) -> Result<u32, String> {
        // Loading the key may block on the keychain (a Secret Service client
        // that runs its own runtime): not on an async worker.
        let login = vm.clone();
        let (endpoint, key) = tauri::async_runtime::spawn_blocking(move || login.login())
            .await
            .map_err(|e| e.to_string())??;
        let timeout = vm.ssh_timeout();
        let session = Session::connect(&endpoint, &key, timeout)
            .await
            .map_err(|e| format!("Could not log in to the VM: {e}"))?;
        let pty = session
            .into_pty(command.as_deref(), cols.max(1), rows.max(1))
            .await
            .map_err(|e| format!("Could not start a terminal in the VM: {e}"))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, pty.input);
        let mut output = pty.output;
        let ended = Arc::new(AtomicBool::new(false));
        if let Some(name) = &container {
            tauri::async_runtime::spawn(poll_progress(
                endpoint,
                key,
                timeout,
                link::progress_command(name),
                events.clone(),
                ended.clone(),
            ));
        }
        tauri::async_runtime::spawn(async move {
            let mut tail = Vec::new();
            while let Some(out) = output.recv().await {
                let event = match out {
                    PtyOutput::Data(data) => {
                        tail.extend_from_slice(&data);
                        let excess = tail.len().saturating_sub(TAIL);
                        tail.drain(..excess);
                        TermEvent::Data { data }
                    }
                    PtyOutput::Exit(status) => TermEvent::Exit {
                        status,
                        error: (container.is_some() && status != 0)
                            .then(|| link::failure_line(&tail))
                            .flatten(),
                    },
                };
                if events.send(event).is_err() {
                    break;
                }
            }
            ended.store(true, Ordering::Relaxed);
            self.lock().remove(&id);
        });
        Ok(id)
    }

    pub async fn send(&self, id: u32, input: PtyInput) -> Result<(), String> {
        let tx = self
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("Terminal {id} has ended."))?;
        tx.send(input)
            .await
            .map_err(|_| format!("Terminal {id} has ended."))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<PtyInput>>> {
        self.inputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads a booting container's progress over its own SSH session every
/// [`PROGRESS_EVERY`] until its tab ends, sending it when it changed.
async fn poll_progress(
    endpoint: Endpoint,
    key: UserKey,
    timeout: Duration,
    command: String,
    events: Channel<TermEvent>,
    ended: Arc<AtomicBool>,
) {
    let session = match Session::connect(&endpoint, &key, timeout).await {
        Ok(session) => session,
        Err(err) => {
            tracing::warn!("no progress for this boot: could not log in: {err}");
            return;
        }
    };
    let mut last = None;
    while !ended.load(Ordering::Relaxed) {
        match session.exec_capture(&command).await {
            Ok(out) => {
                let now = link::parse_progress(&out.stdout);
                if now.is_some()
                    && now != last
                    && !ended.load(Ordering::Relaxed)
                    && let Some(progress) = now.clone()
                {
                    if events.send(TermEvent::Progress(progress)).is_err() {
                        break;
                    }
                    last = now;
                }
            }
            Err(err) => {
                tracing::warn!("stopped reading progress: {err}");
                break;
            }
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
    session.close().await;
}
