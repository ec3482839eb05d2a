//! The guest configuration handed to PID 1 at boot.

use serde::{Deserialize, Serialize};

/// Largest configuration the guest accepts, in bytes.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// Configuration of one guest boot.
///
/// The host writes it as JSON into the fw_cfg entry
/// [`FW_CFG_NAME`](crate::FW_CFG_NAME), so nothing in it appears on the
/// guest's `/proc/cmdline` or the host's process list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// Format version; see [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    #[serde(default = "default_version")]
    pub version: u32,
    /// The guest's hostname. Also sent as the DHCP hostname option, which is
    /// how a bridged host finds the guest's lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// OpenSSH public keys allowed to log in as root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            version: crate::PROTOCOL_VERSION,
            hostname: None,
            authorized_keys: Vec::new(),
        }
    }
}

fn default_version() -> u32 {
    crate::PROTOCOL_VERSION
}

/// A configuration that can't be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the guest configuration is {0} bytes, more than the {MAX_CONFIG_LEN} allowed")]
    TooLarge(usize),
    #[error("the guest configuration is not valid JSON")]
    Json(#[from] serde_json::Error),
    #[error("the guest configuration has version {0}, this guest understands {PROTOCOL_VERSION}", PROTOCOL_VERSION = crate::PROTOCOL_VERSION)]
    Version(u32),
    #[error(
        "invalid hostname {0:?}: use 1-63 letters, digits and '-', not starting or ending with '-'"
    )]
    Hostname(String),
    #[error("invalid SSH public key {0:?}: expected one line like 'ssh-ed25519 AAAA… comment'")]
    Key(String),
}

impl GuestConfig {
    /// Parses and validates a configuration received from the host.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        let config: GuestConfig = serde_json::from_slice(bytes)?;
        config.validate()?;
        Ok(config)
    }

    /// Serialises the configuration for fw_cfg.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks every field; the guest refuses a configuration that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != crate::PROTOCOL_VERSION {
            return Err(ConfigError::Version(self.version));
        }
        if let Some(name) = &self.hostname {
            validate_hostname(name)?;
        }
        for key in &self.authorized_keys {
            validate_public_key(key)?;
        }
        Ok(())
    }

    /// Fills fields missing here from `other` (used to merge the kernel
    /// command line under fw_cfg, which wins).
    pub fn or(mut self, other: GuestConfig) -> GuestConfig {
        if self.hostname.is_none() {
            self.hostname = other.hostname;
        }
        if self.authorized_keys.is_empty() {
            self.authorized_keys = other.authorized_keys;
        }
        self
    }
}

/// Checks a hostname label as RFC 1123 allows it.
pub fn validate_hostname(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Hostname(name.to_owned()))
    }
}

/// Checks that a string looks like one OpenSSH public key line:
/// `<type> <base64> [comment]`, with no newline.
///
/// The guest only copies keys into `authorized_keys`; this check keeps a
/// malformed or multi-line value from adding lines the user did not mean.
pub fn validate_public_key(key: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Key(key.to_owned());
    if key.contains(['\n', '\r', '\0']) || key.len() > 16 * 1024 {
        return Err(bad());
    }
    let mut parts = key.split_ascii_whitespace();
    let kind = parts.next().ok_or_else(bad)?;
    let blob = parts.next().ok_or_else(bad)?;
    let known = kind.starts_with("ssh-")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-")
        || kind.starts_with("sk-ecdsa-");
    let base64 = blob.len() >= 16
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    if known && base64 { Ok(()) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb7bnFz0lqCSsT6r6uMTAj9Njhq8zW0Vv1t5uyyEm8n alice@laptop";

    #[test]
    fn round_trip() {
        let config = GuestConfig {
            version: 1,
            hostname: Some("tabby-tom".into()),
            authorized_keys: vec![KEY.into()],
        };
        let back = GuestConfig::from_json(&config.to_json()).unwrap();
        assert_eq!(config, back);
    }

    #[test]
    fn version_defaults_and_unknown_fields_are_refused() {
        let config = GuestConfig::from_json(br#"{"hostname":"a"}"#).unwrap();
        assert_eq!(config.version, 1);
        assert!(matches!(
            GuestConfig::from_json(br#"{"hostname":"a","extra":1}"#),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            GuestConfig::from_json(br#"{"version":9}"#),
            Err(ConfigError::Version(9))
        ));
    }

    #[test]
    fn bad_values_are_refused() {
        for name in ["", "-a", "a-", "a.b", "a b", &"x".repeat(64)] {
            assert!(validate_hostname(name).is_err(), "{name:?}");
        }
        for key in [
            "",
            "ssh-ed25519",
            "hello world",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\nssh-rsa AAAAB3NzaC1yc2EAAAADAQAB",
            "ssh-ed25519 not*base64*at*all*!!",
        ] {
            assert!(validate_public_key(key).is_err(), "{key:?}");
        }
        validate_public_key(KEY).unwrap();
        let big = vec![b' '; MAX_CONFIG_LEN + 1];
        assert!(matches!(
            GuestConfig::from_json(&big),
            Err(ConfigError::TooLarge(_))
        ));
    }

    #[test]
    fn fw_cfg_wins_over_cmdline() {
        let fw = GuestConfig {
            hostname: Some("fw".into()),
            ..GuestConfig::default()
        };
        let cmd = GuestConfig {
            hostname: Some("cmd".into()),
            authorized_keys: vec![KEY.into()],
            ..GuestConfig::default()
        };
        let merged = fw.or(cmd);
        assert_eq!(merged.hostname.as_deref(), Some("fw"));
        assert_eq!(merged.authorized_keys, vec![KEY.to_owned()]);
    }
}
