//! The chain's last link: a chunk named in the index is a BLAKE3 blob, so a
//! granule inside it can be fetched and verified alone with bao-tree at
//! iroh-blobs' block size, as the iroh protocol will do.

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, encode_ranges_validated};
use bao_tree::io::{BaoContentItem, round_up_to_chunks};
use bao_tree::{BaoTree, BlockSize, ByteRanges};
use hyperos_archive::{ChunkLayout, Chunking, index_bytes};

/// iroh-blobs' `IROH_BLOCK_SIZE`: 16 KiB chunk groups.
const IROH_BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

fn image() -> (Vec<u8>, Chunking) {
    let chunking = Chunking::default();
    // 2.5 chunks of varied bytes, so the last chunk is short.
    let len = chunking.chunk_size as usize * 5 / 2;
    let data = (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    (data, chunking)
}

/// Serves `range_in_chunk` of `chunk` the way an iroh-blobs provider would,
/// and returns the encoded response.
fn serve(chunk: &[u8], range_in_chunk: std::ops::Range<u64>) -> (Vec<u8>, ByteRanges) {
    let outboard = PreOrderMemOutboard::create(chunk, IROH_BLOCK_SIZE);
    let ranges = ByteRanges::from(range_in_chunk);
    let mut response = Vec::new();
    encode_ranges_validated(
        chunk,
        &outboard,
        &round_up_to_chunks(&ranges),
        &mut response,
    )
    .expect("the provider encodes");
    (response, ranges)
}

/// Verifies a response against the chunk hash from the index, returning the
/// verified leaves as (offset in chunk, bytes).
fn verify(
    root: blake3::Hash,
    chunk_len: u64,
    response: &[u8],
    ranges: &ByteRanges,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let tree = BaoTree::new(chunk_len, IROH_BLOCK_SIZE);
    let chunk_ranges = round_up_to_chunks(ranges);
    let mut leaves = Vec::new();
    for item in DecodeResponseIter::new(root, tree, response, &chunk_ranges) {
        match item.map_err(|e| e.to_string())? {
            BaoContentItem::Leaf(leaf) => leaves.push((leaf.offset, leaf.data.to_vec())),
            BaoContentItem::Parent(_) => {}
        }
    }
    Ok(leaves)
}

fn layout(data: &[u8], chunking: Chunking) -> ChunkLayout {
    chunking.layout(data.len() as u64).expect("valid chunking")
}

#[test]
fn chunk_hash_is_the_bao_root() {
    let (data, chunking) = image();
    let index = index_bytes(&data, chunking).unwrap();
    let layout = layout(&data, chunking);
    for chunk in 0..layout.chunk_count() {
        let range = layout.chunk_range(chunk).unwrap();
        let bytes = &data[range.start as usize..range.end as usize];
        let outboard = PreOrderMemOutboard::create(bytes, IROH_BLOCK_SIZE);
        let from_index: blake3::Hash = index.get(chunk).unwrap().into();
        assert_eq!(outboard.root, from_index, "chunk {chunk}");
    }
}

#[test]
fn a_granule_verifies_alone_and_a_tampered_one_does_not() {
    let (data, chunking) = image();
    let index = index_bytes(&data, chunking).unwrap();
    let layout = layout(&data, chunking);
    let granularity = chunking.fetch_granularity;
    // A 100-byte read in the middle of the short last chunk.
    let read = layout.image_len() - 5000..layout.image_len() - 4900;
    for span in layout.spans(read).unwrap() {
        let chunk_range = layout.chunk_range(span.chunk).unwrap();
        let chunk = &data[chunk_range.start as usize..chunk_range.end as usize];
        let granule = span.granules(granularity);
        assert_eq!(granule.end - granule.start, u64::from(granularity));
        let (response, ranges) = serve(chunk, granule.clone());
        let root = index.get(span.chunk).unwrap().into();

        let leaves = verify(root, span.chunk_len, &response, &ranges).unwrap();
        let covered: u64 = leaves.iter().map(|(_, b)| b.len() as u64).sum();
        assert_eq!(covered, u64::from(granularity));
        for (offset, bytes) in &leaves {
            let start = *offset as usize;
            assert_eq!(&chunk[start..start + bytes.len()], &bytes[..]);
        }
        // The proof overhead of one granule is a handful of hashes.
        let overhead = response.len() as u64 - covered;
        assert!(overhead <= 64 * 8, "{overhead} bytes of proof");

        // Any flipped byte in the response is caught.
        for at in [0, response.len() / 2, response.len() - 1] {
            let mut bad = response.clone();
            bad[at] ^= 0x20;
            assert!(
                verify(root, span.chunk_len, &bad, &ranges).is_err(),
                "flip at {at}"
            );
        }
        // And so is the right data under another chunk's hash.
        let other = index.get(0).unwrap().into();
        assert!(verify(other, span.chunk_len, &response, &ranges).is_err());
    }
}
