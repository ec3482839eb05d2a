//! Booting a `dat://` link in the VM: the Boot button's one function.
//!
//! The link is checked with `hyperos_archive::ArchiveLink` first (a bad link
//! is an inline error before anything starts); the command line that boots
//! it in the guest, and the peers the guest fetches from (the host's own
//! running shares of that archive, reachable from the guest), come from
//! `hyperos-run`, exactly as `hyperos run --vm LINK` builds them. A new
//! terminal tab runs that command over SSH, so the container's console is
//! the tab.
//!
//! The container gets an explicit name, so the app can read its progress
//! (`progress.json`, which the guest's `hyperos run` writes while it runs
//! from an archive) over SSH while the tab runs; when the guest's
//! `hyperos run` fails, its last `hyperos: …` line is the window's inline
//! error.

use std::path::Path;
use std::time::Duration;

use hyperos_archive::ArchiveLink;
use hyperos_run::store::RunProgress;
use serde::Serialize;

/// Where the guest keeps its containers (its state disk).
const GUEST_CONTAINERS: &str = "/var/lib/hyperos/containers";

/// What the Boot button starts: the guest command and the container's name.
#[derive(Debug, Clone, Serialize)]
pub struct Boot {
    pub command: String,
    pub name: String,
}

/// The shell command a terminal tab runs in the guest to boot `text` as the
/// container `name`, or why `text` can't be booted. `deadline` overrides
/// how long the guest's reads wait for peers.
pub fn guest_boot_command(
    state_root: &Path,
    text: &str,
    name: &str,
    deadline: Option<Duration>,
) -> Result<Boot, String> {
    let link = ArchiveLink::parse(text.trim()).map_err(|e| capitalize(&e.to_string()))?;
    let args = vec!["--name".to_owned(), name.to_owned(), link.to_string()];
    let mut request = match hyperos_run::parse(&args).map_err(|e| capitalize(&e.to_string()))? {
        hyperos_run::Parsed::Container(request) => request,
        other => return Err(format!("{link} is not something to boot ({other:?})")),
    };
    if let Some(deadline) = deadline {
        request.deadline = deadline;
    }
    let peers = hyperos_run::guest::guest_peers(state_root, &request)
        .map_err(|e| capitalize(&e.to_string()))?;
    let line = hyperos_run::guest::guest_command(&request, &peers);
    Ok(Boot {
        command: hyperos_ssh::client::shell_join(&line),
        name: name.to_owned(),
    })
}

/// A container name for booting `text` at `now_ms`: `dat-` and the key's
/// first 8 hex digits, then the time (unique per boot).
pub fn container_name(text: &str, now_ms: u64) -> String {
    let key: String = text
        .trim()
        .trim_start_matches("dat://")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect::<String>()
        .to_lowercase();
    format!("dat-{key}-{now_ms}")
}

/// The guest command that prints container `name`'s progress (nothing
/// when it has none yet, or no longer).
pub fn progress_command(name: &str) -> String {
    let path = format!("{GUEST_CONTAINERS}/{name}/progress.json");
    format!(
        "cat {} 2>/dev/null; true",
        hyperos_ssh::client::shell_join(&[path])
    )
}

/// The progress `progress_command` printed, if any.
pub fn parse_progress(stdout: &[u8]) -> Option<RunProgress> {
    serde_json::from_slice(stdout).ok()
}

/// The guest's `hyperos run` failure, from the end of a boot tab's output:
/// its last line, when that is a `hyperos: …` line.
pub fn failure_line(tail: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(tail);
    let last = text
        .split(['\r', '\n'])
        .map(strip_escapes)
        .map(|l| l.trim().to_owned())
        .rfind(|l| !l.is_empty())?;
    last.starts_with("hyperos: ").then_some(last)
}

/// `line` without terminal escape sequences (CSI `ESC [ … final`).
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

pub(crate) fn capitalize(s: &str) -> String {
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
        let text = format!(" dat://{}+3/ ", key.to_uppercase());
        let name = container_name(&text, 1234);
        assert_eq!(name, "dat-58666666-1234");
        let boot = guest_boot_command(state.path(), &text, &name, None).unwrap();
        let command = boot.command;
        assert!(
            command.starts_with("hyperos run --name dat-58666666-1234 "),
            "{command}"
        );
        assert!(command.contains(" --deadline 30 "), "{command}");
        assert!(command.ends_with(&format!(" dat://{key}+3")), "{command}");
        let short = guest_boot_command(state.path(), &text, &name, Some(Duration::from_secs(5)));
        assert!(short.unwrap().command.contains(" --deadline 5 "));
        let bad = |text: &str| guest_boot_command(state.path(), text, "x", None).unwrap_err();
        assert!(bad("http://example.com").starts_with("A link starts with \"dat://\""));
        assert!(bad(&key).contains("bare key"));
        assert!(bad("dat://1234").contains("key"));
        assert!(bad("").contains("empty"));
    }

    #[test]
    fn progress_and_failures() {
        assert_eq!(
            progress_command("dat-1-2"),
            "cat /var/lib/hyperos/containers/dat-1-2/progress.json 2>/dev/null; true"
        );
        let p = parse_progress(br#"{"bytes_fetched":5,"bytes_from_cache":0,"image_len":9,"requests":1,"failed_requests":0,"peers_known":2,"peers_connected":1}"#).unwrap();
        assert_eq!((p.bytes_fetched, p.image_len, p.peers_connected), (5, 9, 1));
        assert!(parse_progress(b"").is_none());
        let out = b"fetching\r\n\x1b[31mhyperos: no peer has dat://58 (waited 5 s)\x1b[0m\r\n\r\n";
        assert_eq!(
            failure_line(out).unwrap(),
            "hyperos: no peer has dat://58 (waited 5 s)"
        );
        assert!(failure_line(b"hyperos: old\r\nroot@c:~# exit\r\n").is_none());
        assert!(failure_line(b"").is_none());
    }
}
