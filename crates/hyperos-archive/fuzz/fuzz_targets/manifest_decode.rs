//! Any bytes: `Manifest::decode` returns, never panics, and whatever it
//! accepts is canonical (re-encodes to the same bytes).
#![no_main]

use hyperos_archive::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::decode(data) {
        let again = manifest.encode().expect("a decoded manifest encodes");
        assert_eq!(again, data, "the manifest encoding is not canonical");
    }
});
