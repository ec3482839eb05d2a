//! The tray icon and its menu.
//!
//! The menu is built from [`model`], a pure function of the [`AppView`], and
//! every change of the view re-applies the model to the live menu items
//! (text, enabled, checked) and swaps the icon. Tests read the same model
//! through the `tray_model` command.

use serde::Serialize;
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Wry};

use crate::view::{AppView, TrayState};

pub const TRAY_ID: &str = "hyperos";

/// One line of the tray menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MenuEntry {
    /// Menu event id; "-" for a separator.
    pub id: &'static str,
    pub text: String,
    pub enabled: bool,
    /// For check items: whether checked.
    pub checked: Option<bool>,
}

fn item(id: &'static str, text: impl Into<String>, enabled: bool) -> MenuEntry {
    MenuEntry {
        id,
        text: text.into(),
        enabled,
        checked: None,
    }
}

fn separator() -> MenuEntry {
    item("-", "", false)
}

/// The menu for a view.
pub fn model(view: &AppView) -> Vec<MenuEntry> {
    let state = view.vm.phase();
    let idle = view.busy.is_none();
    let running = state == "running";
    let live = matches!(state, "booting" | "running" | "stopping");
    let status = match (&view.busy, state) {
        (Some(busy), _) => format!("HyperOS: {busy}…"),
        (None, "failed") => "HyperOS: failed".to_owned(),
        (None, s) => format!("HyperOS: {s}"),
    };
    let ip = match &view.vm.ip {
        Some(ip) => item("ip", format!("IP: {ip} (click to copy)"), true),
        None => item("ip", "IP: –", false),
    };
    vec![
        item("status", status, false),
        ip,
        separator(),
        item("start", "Start", idle && !live),
        item("stop", "Stop", idle && live && state != "stopping"),
        item("restart", "Restart", idle && running),
        separator(),
        item("terminal", "Open Terminal", running),
        item("boot-link", "Boot dat link…", true),
        item("show", "Show Window", true),
        separator(),
        MenuEntry {
            id: "autostart",
            text: "Start at Login".into(),
            enabled: true,
            checked: Some(view.autostart),
        },
        item("quit", "Quit", true),
    ]
}

fn icon(state: TrayState) -> tauri::Result<Image<'static>> {
    let bytes: &[u8] = match state {
        TrayState::Stopped => include_bytes!("../../icons/tray-stopped.png"),
        TrayState::Booting => include_bytes!("../../icons/tray-booting.png"),
        TrayState::Running => include_bytes!("../../icons/tray-running.png"),
        TrayState::Error => include_bytes!("../../icons/tray-error.png"),
    };
    Image::from_bytes(bytes)
}

/// The live menu items, kept to update them in place.
pub struct TrayMenu {
    items: Vec<(&'static str, MenuItem<Wry>)>,
    autostart: CheckMenuItem<Wry>,
    _tray: TrayIcon<Wry>,
}

pub fn build(app: &AppHandle, view: &AppView) -> tauri::Result<TrayMenu> {
    let menu = Menu::new(app)?;
    let mut items = Vec::new();
    let mut autostart = None;
    for entry in model(view) {
        if entry.id == "-" {
            menu.append(&PredefinedMenuItem::separator(app)?)?;
        } else if let Some(checked) = entry.checked {
            let check = CheckMenuItem::with_id(
                app,
                entry.id,
                &entry.text,
                entry.enabled,
                checked,
                None::<&str>,
            )?;
            menu.append(&check)?;
            autostart = Some(check);
        } else {
            let it = MenuItem::with_id(app, entry.id, &entry.text, entry.enabled, None::<&str>)?;
            menu.append(&it as &dyn IsMenuItem<Wry>)?;
            items.push((entry.id, it));
        }
    }
    let autostart =
        autostart.ok_or_else(|| tauri::Error::AssetNotFound("autostart item".into()))?;
    let tray = TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(view.tray_state())?)
        .tooltip(tooltip(view))
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| crate::app::on_menu(app, event.id().as_ref()))
        .build(app)?;
    Ok(TrayMenu {
        items,
        autostart,
        _tray: tray,
    })
}

fn tooltip(view: &AppView) -> String {
    match &view.vm.ip {
        Some(ip) => format!("HyperOS: {} ({ip})", view.vm.state),
        None => format!("HyperOS: {}", view.vm.state),
    }
}

impl TrayMenu {
    /// Applies a new view to the icon and the menu.
    pub fn update(&self, app: &AppHandle, view: &AppView) -> tauri::Result<()> {
        for entry in model(view) {
            if let Some((_, it)) = self.items.iter().find(|(id, _)| *id == entry.id) {
                it.set_text(&entry.text)?;
                it.set_enabled(entry.enabled)?;
            }
            if entry.id == "autostart" {
                self.autostart.set_checked(entry.checked.unwrap_or(false))?;
            }
        }
        if let Some(tray) = app.tray_by_id(TRAY_ID) {
            tray.set_icon(Some(icon(view.tray_state())?))?;
            tray.set_tooltip(Some(tooltip(view)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::view::VmView;

    fn view(state: &str, ip: Option<&str>, busy: Option<&str>) -> AppView {
        AppView {
            instance: "default".into(),
            vm: VmView {
                state: state.into(),
                hostname: None,
                ip: ip.map(Into::into),
                ssh: None,
                since_ms: None,
                memory_mib: None,
                mem_used_kib: None,
                accel: None,
                error: None,
            },
            busy: busy.map(Into::into),
            action_error: None,
            key_store: "file".into(),
            key_store_detail: String::new(),
            autostart: false,
            boot_at_login: false,
        }
    }

    fn enabled(menu: &[MenuEntry], id: &str) -> bool {
        menu.iter().find(|e| e.id == id).unwrap().enabled
    }

    #[test]
    fn menu_follows_the_state() {
        let stopped = model(&view("stopped", None, None));
        let ids: Vec<_> = stopped.iter().map(|e| e.id).filter(|i| *i != "-").collect();
        assert_eq!(
            ids,
            [
                "status",
                "ip",
                "start",
                "stop",
                "restart",
                "terminal",
                "boot-link",
                "show",
                "autostart",
                "quit"
            ]
        );
        assert!(
            enabled(&stopped, "start")
                && !enabled(&stopped, "stop")
                && !enabled(&stopped, "terminal")
        );
        assert_eq!(stopped[0].text, "HyperOS: stopped");

        let running = model(&view("running", Some("10.0.2.15"), None));
        assert!(
            !enabled(&running, "start")
                && enabled(&running, "stop")
                && enabled(&running, "restart")
        );
        assert!(enabled(&running, "terminal") && enabled(&running, "ip"));
        assert_eq!(running[1].text, "IP: 10.0.2.15 (click to copy)");

        let starting = model(&view("booting", None, Some("starting")));
        assert_eq!(starting[0].text, "HyperOS: starting…");
        assert!(!enabled(&starting, "start") && !enabled(&starting, "stop"));
    }

    #[test]
    fn icon_follows_the_state() {
        assert_eq!(view("stopped", None, None).tray_state(), TrayState::Stopped);
        assert_eq!(view("booting", None, None).tray_state(), TrayState::Booting);
        assert_eq!(view("running", None, None).tray_state(), TrayState::Running);
        assert_eq!(
            view("running", None, Some("stopping")).tray_state(),
            TrayState::Booting
        );
        assert_eq!(view("failed", None, None).tray_state(), TrayState::Error);
        let mut v = view("stopped", None, None);
        v.action_error = Some("no image".into());
        assert_eq!(v.tray_state(), TrayState::Error);
    }
}
