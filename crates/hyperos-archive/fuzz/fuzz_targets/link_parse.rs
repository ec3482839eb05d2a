//! Any text: `ArchiveLink::parse` returns, never panics, and what it accepts
//! prints back canonically and parses to the same link.
#![no_main]

use hyperos_archive::ArchiveLink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(link) = ArchiveLink::parse(text) {
        let canonical = link.to_string();
        assert_eq!(ArchiveLink::parse(&canonical), Ok(link));
        assert_eq!(text.to_ascii_lowercase().trim_end_matches('/'), canonical);
    }
});
