//! The app's own settings, in `<state dir>/desktop.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Boot the VM when the app starts at login.
    pub boot_at_login: bool,
    /// How long a booted link's reads wait for peers in the guest
    /// (`hyperos run --deadline`); the core's default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_deadline_secs: Option<u64>,
}

pub fn path(state_root: &Path) -> PathBuf {
    state_root.join("desktop.json")
}

impl Settings {
    /// The saved settings; defaults when there are none or they don't parse
    /// (a warning is logged: settings are not worth refusing to start over).
    pub fn load(state_root: &Path) -> Settings {
        let path = path(state_root);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), "ignoring unreadable settings: {err}");
                Settings::default()
            }),
            Err(_) => Settings::default(),
        }
    }

    pub fn save(&self, state_root: &Path) -> Result<(), String> {
        let path = path(state_root);
        std::fs::create_dir_all(state_root)
            .and_then(|()| {
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
                std::fs::rename(&tmp, &path)
            })
            .map_err(|e| format!("Could not save {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(tmp.path()), Settings::default());
        let s = Settings {
            boot_at_login: true,
            run_deadline_secs: Some(5),
        };
        s.save(tmp.path()).unwrap();
        assert_eq!(Settings::load(tmp.path()), s);
        std::fs::write(path(tmp.path()), "{nope").unwrap();
        assert_eq!(Settings::load(tmp.path()), Settings::default());
    }
}
