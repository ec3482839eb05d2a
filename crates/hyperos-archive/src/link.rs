//! `dat://` links: how people write an archive's address.
//!
//! ```text
//! dat://<64 hex digits>          the archive, latest version
//! dat://<64 hex digits>+<N>      version N of the archive (decimal u64)
//! ```
//!
//! The form is the 2016 Dat network's, so links users already paste keep
//! their shape; the protocol behind them is HyperOS's own over iroh. Parsing
//! accepts upper-case hex and one trailing `/` (what browsers and chat
//! clients add) and refuses everything else: other schemes, paths, queries,
//! whitespace, signs or leading zeros in the version. [`fmt::Display`] writes
//! the canonical form (lowercase, no slash), which parses back to the same
//! link.

use std::fmt;
use std::str::FromStr;

use crate::key::{ArchiveKey, KeyError};

/// The scheme every link starts with.
pub const SCHEME: &str = "dat://";

/// What a link looks like, quoted in every parse error.
const LINK_FORM: &str = "dat://<64 hex digits> or dat://<64 hex digits>+<version>";

/// Errors parsing a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The text is empty.
    #[error("the link is empty; a link looks like {LINK_FORM}")]
    Empty,
    /// The text is a bare key: the scheme is missing.
    #[error("this is a bare key, not a link; write it as dat://{0}")]
    BareKey(String),
    /// The text does not start with `dat://`.
    #[error("a link starts with \"dat://\", not {found:?}; a link looks like {LINK_FORM}")]
    Scheme { found: String },
    /// The key part is wrong.
    #[error("the key in this link is wrong: {0} (a link looks like {LINK_FORM})")]
    Key(#[source] KeyError),
    /// Something follows the key that is neither `+<version>` nor a final `/`.
    #[error(
        "the link has {found:?} after the key, but only \"+<version>\" or a final \"/\" may follow it; a link looks like {LINK_FORM}"
    )]
    Trailing { found: String },
    /// The version after `+` is not a plain decimal number that fits 64 bits.
    #[error(
        "the version {found:?} is not a plain decimal number (0 to 18446744073709551615, no sign, no leading zeros); a link looks like {LINK_FORM}"
    )]
    Version { found: String },
}

/// A parsed link: an archive key and, optionally, a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArchiveLink {
    /// The archive.
    pub key: ArchiveKey,
    /// The version asked for; `None` means the latest one that verifies.
    pub version: Option<u64>,
}

impl ArchiveLink {
    /// A link to the latest version of `key`.
    pub fn latest(key: ArchiveKey) -> Self {
        Self { key, version: None }
    }

    /// A link to version `version` of `key`.
    pub fn at_version(key: ArchiveKey, version: u64) -> Self {
        Self {
            key,
            version: Some(version),
        }
    }

    /// Parses a link (see the module documentation for the accepted forms).
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        if text.is_empty() {
            return Err(LinkError::Empty);
        }
        let Some(rest) = text.strip_prefix(SCHEME) else {
            if ArchiveKey::from_hex(text).is_ok() {
                return Err(LinkError::BareKey(text.to_ascii_lowercase()));
            }
            let found: String = text.chars().take(SCHEME.len()).collect();
            return Err(LinkError::Scheme { found });
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // The key is the first 64 characters if they are all ASCII; anything
        // else reaches the key parser whole, whose error says what is wrong.
        let (key_text, after) = match rest.find(['+', '/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let key = ArchiveKey::from_hex(key_text).map_err(LinkError::Key)?;
        if after.is_empty() {
            return Ok(Self::latest(key));
        }
        let Some(version_text) = after.strip_prefix('+') else {
            return Err(LinkError::Trailing {
                found: after.to_owned(),
            });
        };
        let version = parse_version(version_text).ok_or_else(|| LinkError::Version {
            found: version_text.to_owned(),
        })?;
        Ok(Self::at_version(key, version))
    }
}

/// A canonical decimal u64: digits only, no leading zero unless it is "0".
fn parse_version(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

impl fmt::Display for ArchiveLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.key)?;
        if let Some(version) = self.version {
            write!(f, "+{version}")?;
        }
        Ok(())
    }
}

impl FromStr for ArchiveLink {
    type Err = LinkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ArchiveSecret;

    fn key() -> ArchiveKey {
        ArchiveSecret::from_bytes(&[9; 32]).public()
    }

    #[test]
    fn accepted_forms() {
        let k = key();
        let hex = k.to_hex();
        for (text, version) in [
            (format!("dat://{hex}"), None),
            (format!("dat://{hex}/"), None),
            (format!("dat://{}", hex.to_uppercase()), None),
            (format!("dat://{hex}+0"), Some(0)),
            (format!("dat://{hex}+42"), Some(42)),
            (format!("dat://{hex}+42/"), Some(42)),
            (format!("dat://{hex}+{}", u64::MAX), Some(u64::MAX)),
        ] {
            let link = ArchiveLink::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(link, ArchiveLink { key: k, version }, "{text}");
        }
        assert_eq!(
            ArchiveLink::at_version(k, 7).to_string(),
            format!("dat://{hex}+7")
        );
    }

    #[test]
    fn refused_forms_say_why() {
        let hex = key().to_hex();
        type Check = fn(&LinkError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (String::new(), |e| matches!(e, LinkError::Empty)),
            (hex.clone(), |e| matches!(e, LinkError::BareKey(_))),
            (format!("hyper://{hex}"), |e| {
                matches!(e, LinkError::Scheme { .. })
            }),
            (format!("DAT://{hex}"), |e| {
                matches!(e, LinkError::Scheme { .. })
            }),
            (format!(" dat://{hex}"), |e| {
                matches!(e, LinkError::Scheme { .. })
            }),
            (format!("dat://{hex} "), |e| {
                matches!(e, LinkError::Key(KeyError::HexLength { found: 65 }))
            }),
            (format!("dat://{}", &hex[..63]), |e| {
                matches!(e, LinkError::Key(KeyError::HexLength { found: 63 }))
            }),
            (format!("dat://{}x", &hex[..63]), |e| {
                matches!(
                    e,
                    LinkError::Key(KeyError::NotHex {
                        position: 64,
                        found: 'x'
                    })
                )
            }),
            (format!("dat://{hex}//"), |e| {
                matches!(e, LinkError::Trailing { .. })
            }),
            (format!("dat://{hex}/path"), |e| {
                matches!(e, LinkError::Trailing { .. })
            }),
            (format!("dat://{hex}?v=1"), |e| {
                matches!(e, LinkError::Trailing { .. })
            }),
            (format!("dat://{hex}+"), |e| {
                matches!(e, LinkError::Version { .. })
            }),
            (format!("dat://{hex}+01"), |e| {
                matches!(e, LinkError::Version { .. })
            }),
            (format!("dat://{hex}+-1"), |e| {
                matches!(e, LinkError::Version { .. })
            }),
            (format!("dat://{hex}++1"), |e| {
                matches!(e, LinkError::Version { .. })
            }),
            (format!("dat://{hex}+18446744073709551616"), |e| {
                matches!(e, LinkError::Version { .. })
            }),
            (format!("dat://{hex}+1/x"), |e| {
                matches!(e, LinkError::Version { .. })
            }),
        ];
        for (text, expected) in cases {
            let err = ArchiveLink::parse(&text).expect_err(&text);
            assert!(expected(&err), "{text:?} gave {err:?}");
            let message = err.to_string();
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn messages_show_the_form() {
        let err = ArchiveLink::parse("http://example.com").unwrap_err();
        assert!(err.to_string().contains("dat://<64 hex digits>"), "{err}");
        let err = ArchiveLink::parse(&key().to_hex()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "this is a bare key, not a link; write it as dat://{}",
                key()
            )
        );
    }
}
