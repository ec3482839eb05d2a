//! Any bytes through the whole path a peer's manifest takes: decode the
//! envelope, verify against a fixed key. Starts from a valid signed manifest
//! (the seed corpus is written by the first run, see the README) so the
//! fuzzer explores past the envelope; nothing but that manifest may verify.
#![no_main]

use hyperos_archive::{ArchiveSecret, LastSeen, SignedManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ArchiveSecret::from_bytes(&[7; 32]).public();
    let Ok(signed) = SignedManifest::decode(data) else {
        return;
    };
    assert_eq!(signed.encode(), data, "the envelope encoding is not canonical");
    for last_seen in [None, Some(LastSeen { version: 3, digest: signed.digest() })] {
        if let Ok(manifest) = signed.verify(&key, 1_750_000_000, last_seen) {
            // Only the publisher's secret could have made this: it must be a
            // manifest that secret signed, i.e. re-signing gives these bytes.
            let resigned = manifest
                .sign(&ArchiveSecret::from_bytes(&[7; 32]))
                .expect("a verified manifest signs");
            assert_eq!(resigned.encode(), data, "a manifest verified that was not signed");
        }
    }
});
