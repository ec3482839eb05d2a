//! Any text: parsing a peer ticket returns, never panics, and what it
//! accepts prints back as exactly the same text (one ticket, one spelling).
#![no_main]

use hyperos_p2p::PeerTicket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ticket) = text.parse::<PeerTicket>() {
        assert_eq!(ticket.to_string(), text, "the ticket text is not canonical");
        assert!(!ticket.addrs.is_empty());
    }
});
