//! Follows the VM's state: `notify` watches `<state dir>/instances/`
//! (recursively, so an instance created or removed later is seen too), and
//! every change of a `state.json`, `lease.json` or `instance.json` rebuilds
//! the view. Nothing polls the VM: the only timer is the core's slow
//! liveness re-check while the VM is live, for a supervisor that died
//! without writing (`hyperos_vm::watch::LIVENESS_RECHECK`).

use std::path::Path;
use std::sync::mpsc;

use notify::Watcher;

/// Watches in a thread of its own; `changed` is called on every relevant
/// change and returns whether the VM is live.
pub fn spawn(instances: &Path, changed: impl Fn() -> bool + Send + 'static) -> Result<(), String> {
    std::fs::create_dir_all(instances)
        .map_err(|e| format!("Could not create {}: {e}", instances.display()))?;
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = event.is_ok_and(|e| {
            e.paths.iter().any(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| matches!(n, "state.json" | "lease.json" | "instance.json"))
                    || p.extension().is_none()
            })
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("Could not watch {}: {e}", instances.display()))?;
    watcher
        .watch(instances, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("Could not watch {}: {e}", instances.display()))?;
    std::thread::Builder::new()
        .name("vm-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            let mut live = changed();
            loop {
                let event = if live {
                    match rx.recv_timeout(hyperos_vm::watch::LIVENESS_RECHECK) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
                        Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                    }
                } else {
                    rx.recv().map_err(drop)
                };
                if event.is_err() {
                    return;
                }
                while rx.try_recv().is_ok() {}
                live = changed();
            }
        })
        .map_err(|e| format!("Could not start the watch thread: {e}"))?;
    Ok(())
}
