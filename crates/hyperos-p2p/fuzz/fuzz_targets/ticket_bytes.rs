//! Any bytes, as the body of a well-formed ticket text (so the fuzzer works
//! on the binary layout rather than on base32): decoding returns, never
//! panics, and what it accepts encodes back to the same text.
#![no_main]

use hyperos_p2p::PeerTicket;
use hyperos_p2p::ticket::TICKET_PREFIX;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = format!(
        "{TICKET_PREFIX}{}",
        data_encoding::BASE32_NOPAD.encode(data).to_lowercase()
    );
    if let Ok(ticket) = text.parse::<PeerTicket>() {
        assert_eq!(ticket.to_string(), text, "the ticket encoding is not canonical");
    }
});
