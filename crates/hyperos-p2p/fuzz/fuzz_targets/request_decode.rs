//! Any bytes: `ManifestRequest::decode` returns, never panics, and what it
//! accepts re-encodes to the same bytes.
#![no_main]

use hyperos_p2p::wire::ManifestRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ManifestRequest::decode(data) {
        assert_eq!(&request.encode()[..], data, "the request encoding is not canonical");
    }
});
