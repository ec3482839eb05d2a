//! Booting a `dat://` link in the VM.
//!
//! Until the core offers it (`hyperos-run`, issue 4), booting a link is: the
//! link is checked here with `hyperos_archive::ArchiveLink` (so a bad link
//! is an inline error before anything starts), and the guest command that
//! boots it, `hyperos run <link>`, runs in a new terminal tab.

use hyperos_archive::ArchiveLink;

/// The command a terminal tab runs in the guest to boot `text`, or why
/// `text` is not a link.
pub fn guest_boot_command(text: &str) -> Result<String, String> {
    let link = ArchiveLink::parse(text.trim()).map_err(|e| capitalize(&e.to_string()))?;
    Ok(hyperos_ssh::client::shell_join(&[
        "hyperos",
        "run",
        &link.to_string(),
    ]))
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn good_and_bad_links() {
        // The ed25519 base point: a valid public key.
        let key = format!("58{}", "66".repeat(31));
        assert_eq!(
            guest_boot_command(&format!(" dat://{}+3/ ", key.to_uppercase())).unwrap(),
            format!("hyperos run dat://{key}+3")
        );
        let err = guest_boot_command("http://example.com").unwrap_err();
        assert!(err.starts_with("A link starts with \"dat://\""), "{err}");
        assert!(guest_boot_command(&key).unwrap_err().contains("bare key"));
        assert!(guest_boot_command("dat://1234").is_err());
        assert!(guest_boot_command("").unwrap_err().contains("empty"));
    }
}
