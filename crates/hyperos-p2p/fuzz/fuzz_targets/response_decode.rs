//! Any bytes: `ManifestResponse::decode` returns, never panics, and what it
//! accepts re-encodes to the same bytes (the signed manifest inside is
//! decoded, not trusted: verification is the reader's next step).
#![no_main]

use hyperos_p2p::wire::ManifestResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = ManifestResponse::decode(data) {
        assert_eq!(response.encode(), data, "the response encoding is not canonical");
    }
});
