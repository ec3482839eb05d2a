//! Terminal tabs: each tab is one SSH session with a PTY
//! (`hyperos_ssh::Session::into_pty`), its output streamed to the window's
//! xterm.js over a Tauri channel, its input and size changes sent back by
//! commands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicU32, Ordering};

use hyperos_ssh::{PtyInput, PtyOutput, Session};
use serde::Serialize;
use tauri::ipc::Channel;
use tokio::sync::mpsc;

use crate::vm::Vm;

/// What a tab's xterm.js receives.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TermEvent {
    Data { data: Vec<u8> },
    Exit { status: u32 },
}

#[derive(Default)]
pub struct Terminals {
    next: AtomicU32,
    inputs: Mutex<HashMap<u32, mpsc::Sender<PtyInput>>>,
}

impl Terminals {
    /// Logs in and starts `command` (a shell when `None`) on a PTY; returns
    /// the tab's id.
    pub async fn open(
        self: Arc<Self>,
        vm: Arc<Vm>,
        events: Channel<TermEvent>,
        cols: u32,
        rows: u32,
        command: Option<String>,
    ) -> Result<u32, String> {
        // Loading the key may block on the keychain (a Secret Service client
        // that runs its own runtime): not on an async worker.
        let login = vm.clone();
        let (endpoint, key) = tauri::async_runtime::spawn_blocking(move || login.login())
            .await
            .map_err(|e| e.to_string())??;
        let session = Session::connect(&endpoint, &key, vm.ssh_timeout())
            .await
            .map_err(|e| format!("Could not log in to the VM: {e}"))?;
        let pty = session
            .into_pty(command.as_deref(), cols.max(1), rows.max(1))
            .await
            .map_err(|e| format!("Could not start a terminal in the VM: {e}"))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, pty.input);
        let mut output = pty.output;
        tauri::async_runtime::spawn(async move {
            while let Some(out) = output.recv().await {
                let event = match out {
                    PtyOutput::Data(data) => TermEvent::Data { data },
                    PtyOutput::Exit(status) => TermEvent::Exit { status },
                };
                if events.send(event).is_err() {
                    break;
                }
            }
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
