//! The app: plugins, the window, the tray, and the commands the window
//! calls. Every state change goes through [`publish`], which rebuilds the
//! [`AppView`], updates the tray and sends the view to the window.

use std::sync::{Arc, Mutex, OnceLock};

use hyperos_ssh::PtyInput;
use hyperos_vm::StateDir;
use tauri::ipc::Channel;
use tauri::{AppHandle, Emitter, Manager, RunEvent, WindowEvent};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_dialog::{DialogExt as _, MessageDialogButtons, MessageDialogResult};

use crate::settings::Settings;
use crate::share::{SharedView, Shares};
use crate::terminal::{TermEvent, Terminals};
use crate::tray::{self, MenuEntry, TrayMenu};
use crate::view::AppView;
use crate::vm::Vm;

/// The argument the login item starts the app with: tray only.
pub const AUTOSTART_ARG: &str = "--autostart";

pub struct AppState {
    vm: Arc<Vm>,
    terminals: Arc<Terminals>,
    shares: Arc<Shares>,
    settings: Mutex<Settings>,
    key_store: (String, String),
    tray: OnceLock<TrayMenu>,
    last: Mutex<Option<AppView>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AppState {
    fn view(&self, app: &AppHandle) -> AppView {
        AppView {
            instance: self.vm.name().to_owned(),
            vm: self.vm.view(),
            busy: self.vm.busy().map(str::to_owned),
            action_error: self.vm.action_error(),
            key_store: self.key_store.0.clone(),
            key_store_detail: self.key_store.1.clone(),
            autostart: app.autolaunch().is_enabled().unwrap_or(false),
            boot_at_login: lock(&self.settings).boot_at_login,
        }
    }
}

/// Rebuilds the view; if it changed, updates the tray and tells the window.
/// Returns whether the VM is live.
pub fn publish(app: &AppHandle) -> bool {
    let state = app.state::<AppState>();
    let view = state.view(app);
    let live = matches!(view.vm.state.as_str(), "booting" | "running" | "stopping");
    {
        let mut last = lock(&state.last);
        if last.as_ref() == Some(&view) {
            return live;
        }
        *last = Some(view.clone());
    }
    let _ = app.emit("view", &view);
    // The tray lives on the main thread: hand it the view there instead of
    // waiting for the main thread from here (the watch thread must never
    // block on it).
    let handle = app.clone();
    let _ = app.run_on_main_thread(move || {
        if let Some(tray) = handle.state::<AppState>().tray.get()
            && let Err(err) = tray.update(&handle, &view)
        {
            tracing::warn!("could not update the tray: {err}");
        }
    });
    live
}

pub fn run(argv: &[String]) {
    let autostarted = argv.iter().any(|a| a == AUTOSTART_ARG);
    let link_arg = argv.iter().find(|a| a.starts_with("dat://")).cloned();
    let result = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, argv, _cwd| {
            // A second launch (or the OS opening a dat:// link) lands here.
            show_window(app);
            if let Some(link) = argv.iter().find(|a| a.starts_with("dat://")) {
                let _ = app.emit("open-link", link);
            }
        }))
        .plugin(
            tauri_plugin_autostart::Builder::new()
                .app_name("HyperOS")
                .arg(AUTOSTART_ARG)
                .build(),
        )
        .plugin(tauri_plugin_clipboard_manager::init())
        .plugin(tauri_plugin_dialog::init())
        .setup(move |app| {
            let handle = app.handle().clone();
            let state_dir = StateDir::resolve(None)?;
            let image_dir = crate::vm::image_dir(app.path().resource_dir().ok());
            let vm = Arc::new(Vm::new(state_dir.clone(), image_dir));
            let key_store = ensure_key(&state_dir);
            app.manage(AppState {
                vm: vm.clone(),
                terminals: Arc::new(Terminals::default()),
                shares: Arc::new(Shares::new(state_dir.root())),
                settings: Mutex::new(Settings::load(state_dir.root())),
                key_store,
                tray: OnceLock::new(),
                last: Mutex::new(None),
            });
            let view = app.state::<AppState>().view(&handle);
            match tray::build(&handle, &view) {
                Ok(menu) => {
                    let _ = app.state::<AppState>().tray.set(menu);
                }
                // No tray host (a bare X server): the window is the app.
                Err(err) => tracing::warn!("no tray icon: {err}"),
            }
            let watched = handle.clone();
            crate::watch::spawn(&state_dir.instances_dir(), move || publish(&watched))?;
            if !autostarted {
                show_window(&handle);
            }
            if let Some(link) = link_arg.clone() {
                let _ = handle.emit("open-link", link);
            }
            if autostarted && lock(&app.state::<AppState>().settings).boot_at_login {
                spawn_action(&handle, Action::Start);
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window keeps the app in the tray.
            if let WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .invoke_handler(tauri::generate_handler![
            app_view,
            vm_start,
            vm_stop,
            vm_restart,
            tray_model,
            boot_link_command,
            share_path,
            share_stop,
            shared_list,
            term_open,
            term_write,
            term_resize,
            term_close,
            set_autostart,
            set_boot_at_login,
            copy_ip,
        ])
        .build(tauri::generate_context!());
    match result {
        Ok(app) => app.run(|app, event| match event {
            // The tray keeps the app alive with no window open.
            RunEvent::ExitRequested { api, code, .. } if code.is_none() => api.prevent_exit(),
            // Nothing serves the dropped files any more.
            RunEvent::Exit => app.state::<AppState>().shares.forget_all(),
            _ => {}
        }),
        Err(err) => {
            eprintln!("hyperos-desktop: could not start: {err}");
            std::process::exit(1);
        }
    }
}

/// Creates the user's SSH key if there is none (in the OS keychain when a
/// keychain service answers); returns where it is kept.
fn ensure_key(state: &StateDir) -> (String, String) {
    match hyperos_ssh::keys::init(&state.keys_dir(), false) {
        Ok(out) => {
            let kind = match out.key.store {
                hyperos_ssh::KeyStore::Keychain => "keychain",
                hyperos_ssh::KeyStore::File(_) => "file",
            };
            (kind.to_owned(), out.key.store.to_string())
        }
        Err(err) => ("none".to_owned(), format!("no SSH key: {err}")),
    }
}

fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Start,
    Stop,
    Restart,
}

fn do_action(app: &AppHandle, action: Action) -> Result<(), String> {
    let vm = app.state::<AppState>().vm.clone();
    let notify = || {
        publish(app);
    };
    match action {
        Action::Start => vm.act("starting", &notify, Vm::start),
        Action::Stop => vm.act("stopping", &notify, Vm::stop),
        Action::Restart => vm.act("restarting", &notify, |vm| {
            if vm.status().phase.is_live() {
                vm.stop()?;
            }
            vm.start()
        }),
    }
}

fn spawn_action(app: &AppHandle, action: Action) {
    let app = app.clone();
    std::thread::spawn(move || {
        if let Err(err) = do_action(&app, action) {
            tracing::error!("{action:?} failed: {err}");
        }
    });
}

async fn action(app: AppHandle, action: Action) -> Result<(), String> {
    tauri::async_runtime::spawn_blocking(move || do_action(&app, action))
        .await
        .map_err(|e| e.to_string())?
}

/// What the tray menu does.
pub fn on_menu(app: &AppHandle, id: &str) {
    match id {
        "start" => spawn_action(app, Action::Start),
        "stop" => spawn_action(app, Action::Stop),
        "restart" => spawn_action(app, Action::Restart),
        "terminal" => {
            show_window(app);
            let _ = app.emit("open-terminal", ());
        }
        "boot-link" => {
            show_window(app);
            let _ = app.emit("focus-link", ());
        }
        "show" => show_window(app),
        "ip" => {
            let ip = app.state::<AppState>().vm.view().ip;
            if let Some(ip) = ip {
                let _ = app.clipboard().write_text(ip);
            }
        }
        "autostart" => {
            let enabled = app.autolaunch().is_enabled().unwrap_or(false);
            let _ = set_autostart_inner(app, !enabled);
        }
        "quit" => quit(app),
        _ => {}
    }
}

/// Quits, asking first whether to stop a running VM.
fn quit(app: &AppHandle) {
    let live = app.state::<AppState>().vm.status().phase.is_live();
    if !live {
        app.exit(0);
        return;
    }
    let app = app.clone();
    app.dialog()
        .message("The HyperOS VM is running. Stop it before quitting?")
        .title("Quit HyperOS")
        .buttons(MessageDialogButtons::YesNoCancelCustom(
            "Stop VM and Quit".into(),
            "Quit, Keep VM Running".into(),
            "Cancel".into(),
        ))
        .show_with_result(move |answer| {
            let stop = match answer {
                MessageDialogResult::Yes => true,
                MessageDialogResult::No => false,
                MessageDialogResult::Custom(label) if label.starts_with("Stop") => true,
                MessageDialogResult::Custom(label) if label.starts_with("Quit") => false,
                _ => return,
            };
            std::thread::spawn(move || {
                if stop && let Err(err) = do_action(&app, Action::Stop) {
                    tracing::error!("could not stop the VM: {err}");
                }
                app.exit(0);
            });
        });
}

fn set_autostart_inner(app: &AppHandle, enabled: bool) -> Result<(), String> {
    let launcher = app.autolaunch();
    let result = if enabled {
        launcher.enable()
    } else {
        launcher.disable()
    };
    result.map_err(|e| format!("Could not change Start at Login: {e}"))?;
    publish(app);
    Ok(())
}

#[tauri::command]
fn app_view(app: AppHandle) -> AppView {
    app.state::<AppState>().view(&app)
}

#[tauri::command]
async fn vm_start(app: AppHandle) -> Result<(), String> {
    action(app, Action::Start).await
}

#[tauri::command]
async fn vm_stop(app: AppHandle) -> Result<(), String> {
    action(app, Action::Stop).await
}

#[tauri::command]
async fn vm_restart(app: AppHandle) -> Result<(), String> {
    action(app, Action::Restart).await
}

#[tauri::command]
fn tray_model(app: AppHandle) -> Vec<MenuEntry> {
    tray::model(&app.state::<AppState>().view(&app))
}

/// The Boot button: checks the link and returns the guest command that
/// boots it, and its container's name (see `link.rs`).
#[tauri::command]
async fn boot_link_command(app: AppHandle, link: String) -> Result<crate::link::Boot, String> {
    let state = app.state::<AppState>();
    let root = state.vm.state_dir().root().to_owned();
    let deadline = lock(&state.settings)
        .run_deadline_secs
        .map(std::time::Duration::from_secs);
    let name = crate::link::container_name(&link, hyperos_vm::state::now_ms());
    crate::link::guest_boot_command(&root, &link, &name, deadline)
}

/// A file or folder dropped on the window: shares it (see `share.rs`) and
/// returns its link.
#[tauri::command]
async fn share_path(app: AppHandle, path: String) -> Result<SharedView, String> {
    let shares = app.state::<AppState>().shares.clone();
    shares.share(std::path::PathBuf::from(path)).await
}

/// The "stop" button of a shared file or folder.
#[tauri::command]
async fn share_stop(app: AppHandle, key: String) -> Result<(), String> {
    let shares = app.state::<AppState>().shares.clone();
    shares.stop(&key).await
}

#[tauri::command]
fn shared_list(app: AppHandle) -> Vec<SharedView> {
    app.state::<AppState>().shares.list()
}

#[tauri::command]
async fn term_open(
    app: AppHandle,
    events: Channel<TermEvent>,
    cols: u32,
    rows: u32,
    command: Option<String>,
    container: Option<String>,
) -> Result<u32, String> {
    let state = app.state::<AppState>();
    let terminals = state.terminals.clone();
    let vm = state.vm.clone();
    terminals
        .open(vm, events, cols, rows, command, container)
        .await
}

#[tauri::command]
async fn term_write(app: AppHandle, id: u32, data: String) -> Result<(), String> {
    let terminals = app.state::<AppState>().terminals.clone();
    terminals.send(id, PtyInput::Data(data.into_bytes())).await
}

#[tauri::command]
async fn term_resize(app: AppHandle, id: u32, cols: u32, rows: u32) -> Result<(), String> {
    let terminals = app.state::<AppState>().terminals.clone();
    terminals.send(id, PtyInput::Resize { cols, rows }).await
}

#[tauri::command]
async fn term_close(app: AppHandle, id: u32) -> Result<(), String> {
    let terminals = app.state::<AppState>().terminals.clone();
    // Already gone is fine: closing is what was asked.
    let _ = terminals.send(id, PtyInput::Close).await;
    Ok(())
}

#[tauri::command]
async fn set_autostart(app: AppHandle, enabled: bool) -> Result<(), String> {
    set_autostart_inner(&app, enabled)
}

#[tauri::command]
async fn set_boot_at_login(app: AppHandle, enabled: bool) -> Result<(), String> {
    let state = app.state::<AppState>();
    let root = state.vm.state_dir().root().to_owned();
    {
        let mut settings = lock(&state.settings);
        settings.boot_at_login = enabled;
        settings.save(&root)?;
    }
    publish(&app);
    Ok(())
}

#[tauri::command]
async fn copy_ip(app: AppHandle) -> Result<String, String> {
    let ip = app
        .state::<AppState>()
        .vm
        .view()
        .ip
        .ok_or("The VM has no IP address yet.")?;
    app.clipboard()
        .write_text(ip.clone())
        .map_err(|e| format!("Could not copy: {e}"))?;
    Ok(ip)
}
