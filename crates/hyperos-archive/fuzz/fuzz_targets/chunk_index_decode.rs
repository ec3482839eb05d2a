//! Any bytes: `ChunkIndex::decode` and `decode_verified` return, never panic,
//! accept only whole 32-byte hashes, and round-trip what they accept.
#![no_main]

use hyperos_archive::{BlobHash, ChunkIndex, Chunking};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = ChunkIndex::decode(data) {
        assert_eq!(index.encode(), data);
        assert_eq!(index.root(), BlobHash::of(data));
        let chunking = Chunking::default();
        let len = index.len() as u64 * u64::from(chunking.chunk_size);
        let layout = chunking.layout(len).expect("within limits");
        let verified = ChunkIndex::decode_verified(data, &layout, &index.root());
        assert_eq!(verified.as_ref(), Ok(&index));
        let wrong = BlobHash::of(b"not the root");
        assert!(ChunkIndex::decode_verified(data, &layout, &wrong).is_err());
    }
});
