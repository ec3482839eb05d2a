//! Booting a `dat://` link in the VM: the Boot button's one function.
//!
//! The link is checked with `hyperos_archive::ArchiveLink` first (a bad link
//! is an inline error before anything starts); the command line that boots
//! it in the guest, and the peers the guest fetches from (the host's own
//! running shares of that archive, reachable from the guest), come from
//! `hyperos-run`, exactly as `hyperos run --vm LINK` builds them. A new
//! terminal tab runs that command over SSH, so the container's console is
//! the tab.

use std::path::Path;

use hyperos_archive::ArchiveLink;

/// The shell command a terminal tab runs in the guest to boot `text`, or
/// why `text` can't be booted.
pub fn guest_boot_command(state_root: &Path, text: &str) -> Result<String, String> {
    let link = ArchiveLink::parse(text.trim()).map_err(|e| capitalize(&e.to_string()))?;
    let args = vec![link.to_string()];
    let request = match hyperos_run::parse(&args).map_err(|e| capitalize(&e.to_string()))? {
        hyperos_run::Parsed::Container(request) => request,
        other => return Err(format!("{link} is not something to boot ({other:?})")),
    };
    let peers = hyperos_run::guest::guest_peers(state_root, &request)
        .map_err(|e| capitalize(&e.to_string()))?;
    let line = hyperos_run::guest::guest_command(&request, &peers);
    Ok(hyperos_ssh::client::shell_join(&line))
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
        let state = tempfile::tempdir().unwrap();
        // The ed25519 base point: a valid public key.
        let key = format!("58{}", "66".repeat(31));
        let command =
            guest_boot_command(state.path(), &format!(" dat://{}+3/ ", key.to_uppercase()))
                .unwrap();
        assert!(command.starts_with("hyperos run "), "{command}");
        assert!(command.ends_with(&format!(" dat://{key}+3")), "{command}");
        let bad = |text: &str| guest_boot_command(state.path(), text).unwrap_err();
        assert!(bad("http://example.com").starts_with("A link starts with \"dat://\""));
        assert!(bad(&key).contains("bare key"));
        assert!(bad("dat://1234").contains("key"));
        assert!(bad("").contains("empty"));
    }
}
