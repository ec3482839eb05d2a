//! The guest configuration: fw_cfg first, the kernel command line under it.
//!
//! A configuration the host got wrong must not cost the user their VM: each
//! field is checked on its own, a bad one is reported and dropped, and the
//! rest is used.

use std::io::Read;

use hyperos_proto::config::{MAX_CONFIG_LEN, validate_hostname, validate_public_key};
use hyperos_proto::{FW_CFG_NAME, GuestConfig, cmdline};
use serde_json::Value;

/// The hostname when neither source gives one.
pub const DEFAULT_HOSTNAME: &str = "hyperos";

/// The configuration PID 1 acts on, after merging and checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub hostname: String,
    pub authorized_keys: Vec<String>,
}

/// Path of the fw_cfg entry in sysfs.
pub fn fw_cfg_path() -> String {
    format!("/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_NAME}/raw")
}

/// Reads both sources and merges them. Problems are returned as messages
/// for the host; they never stop the boot.
pub fn load() -> (Settings, Vec<String>) {
    let mut problems = Vec::new();
    let fw_cfg = match read_fw_cfg() {
        Ok(Some(bytes)) => from_fw_cfg(&bytes, &mut problems),
        Ok(None) => GuestConfig::default(),
        Err(err) => {
            problems.push(format!("could not read the fw_cfg configuration: {err}"));
            GuestConfig::default()
        }
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map(|line| cmdline::parse(&line))
        .unwrap_or_default();
    let cmdline = keep_valid(cmdline, "kernel command line", &mut problems);
    (merge(fw_cfg, cmdline), problems)
}

/// The fw_cfg entry's bytes, `None` when the host gave none.
fn read_fw_cfg() -> std::io::Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(fw_cfg_path()) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut bytes = Vec::new();
    // One byte more than allowed, so `from_json` sees an oversized entry.
    file.take(MAX_CONFIG_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Parses the fw_cfg JSON. When the strict parse fails, takes what it can
/// field by field.
pub fn from_fw_cfg(bytes: &[u8], problems: &mut Vec<String>) -> GuestConfig {
    match GuestConfig::from_json(bytes) {
        Ok(config) => return config,
        Err(err) => problems.push(format!("fw_cfg configuration: {}", chain(&err))),
    }
    if bytes.len() > MAX_CONFIG_LEN {
        return GuestConfig::default();
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(bytes) else {
        return GuestConfig::default();
    };
    let hostname = fields
        .get("hostname")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let authorized_keys = match fields.get("authorized_keys") {
        Some(Value::Array(keys)) => keys
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let lenient = GuestConfig {
        hostname,
        authorized_keys,
        ..GuestConfig::default()
    };
    keep_valid(lenient, "fw_cfg configuration", problems)
}

/// An error and its sources, as one line (serde's detail says which field).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Drops the fields that fail validation, saying which.
pub fn keep_valid(config: GuestConfig, source: &str, problems: &mut Vec<String>) -> GuestConfig {
    let hostname = config
        .hostname
        .filter(|name| match validate_hostname(name) {
            Ok(()) => true,
            Err(err) => {
                problems.push(format!("{source}: {err}; ignored"));
                false
            }
        });
    let authorized_keys = config
        .authorized_keys
        .into_iter()
        .filter(|key| match validate_public_key(key) {
            Ok(()) => true,
            Err(err) => {
                problems.push(format!("{source}: {err}; ignored"));
                false
            }
        })
        .collect();
    GuestConfig {
        hostname,
        authorized_keys,
        ..GuestConfig::default()
    }
}

/// fw_cfg wins field by field; the hostname defaults to [`DEFAULT_HOSTNAME`].
pub fn merge(fw_cfg: GuestConfig, cmdline: GuestConfig) -> Settings {
    let merged = fw_cfg.or(cmdline);
    Settings {
        hostname: merged
            .hostname
            .unwrap_or_else(|| DEFAULT_HOSTNAME.to_owned()),
        authorized_keys: merged.authorized_keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb7bnFz0lqCSsT6r6uMTAj9Njhq8zW0Vv1t5uyyEm8n a b";

    #[test]
    fn valid_fw_cfg_wins_over_cmdline() {
        let mut problems = Vec::new();
        let json = format!(r#"{{"hostname":"fw","authorized_keys":["{KEY}"]}}"#);
        let fw = from_fw_cfg(json.as_bytes(), &mut problems);
        let cmd = cmdline::parse("host=cmd sshkey=\"ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB x\"");
        let settings = merge(fw, keep_valid(cmd, "cmdline", &mut problems));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.hostname, "fw");
        assert_eq!(settings.authorized_keys, [KEY]);
    }

    #[test]
    fn bad_fields_are_dropped_one_by_one() {
        let mut problems = Vec::new();
        let json = format!(r#"{{"hostname":"bad name","authorized_keys":["nope","{KEY}"]}}"#);
        let fw = from_fw_cfg(json.as_bytes(), &mut problems);
        assert_eq!(fw.hostname, None);
        assert_eq!(fw.authorized_keys, [KEY]);
        // The strict error, then one per dropped field.
        assert_eq!(problems.len(), 3, "{problems:?}");
        let settings = merge(fw, cmdline::parse("host=legacy"));
        assert_eq!(settings.hostname, "legacy");
    }

    #[test]
    fn unknown_fields_and_versions_still_yield_the_known_ones() {
        let mut problems = Vec::new();
        let fw = from_fw_cfg(
            br#"{"version":2,"hostname":"h","future":true}"#,
            &mut problems,
        );
        assert_eq!(fw.hostname.as_deref(), Some("h"));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("future"), "{problems:?}");
    }

    #[test]
    fn garbage_gives_defaults() {
        let mut problems = Vec::new();
        for bytes in [
            &b"not json"[..],
            b"[1,2]",
            b"",
            &vec![b' '; MAX_CONFIG_LEN + 1],
        ] {
            assert_eq!(from_fw_cfg(bytes, &mut problems), GuestConfig::default());
        }
        assert_eq!(problems.len(), 4);
        let settings = merge(GuestConfig::default(), GuestConfig::default());
        assert_eq!(settings.hostname, DEFAULT_HOSTNAME);
        assert!(settings.authorized_keys.is_empty());
    }
}
