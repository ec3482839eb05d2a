//! Content addressing: chunks, the chunk index, and the arithmetic from byte
//! offsets of the image to chunks.
//!
//! An image of `image_len` bytes is cut into chunks of `chunk_size` bytes
//! (the last one may be shorter). Each chunk is a blob named by its
//! [`BlobHash`], the BLAKE3 root of its bytes — exactly iroh-blobs' `Hash`, so
//! a chunk can be stored and served as an iroh blob, and any byte range inside
//! it fetched and verified with bao-tree against that hash. Identical chunks
//! (the all-zero chunks of free space above all) have one hash and are stored
//! and sent once, within a version and across versions.
//!
//! The [`ChunkIndex`] lists the chunk hashes in image order. Its encoding is
//! the concatenation of the 32-byte hashes, which is iroh-blobs' `HashSeq`
//! format, so the index is itself a blob; its hash is the manifest's
//! `root_hash`. A reader checks the index against the root before it trusts a
//! single chunk hash in it ([`ChunkIndex::decode_verified`]).

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;

use crate::hex;

/// Length of a BLAKE3 hash.
pub const HASH_LEN: usize = 32;

/// The default storage chunk size: 128 KiB (see the README for the measurement).
pub const DEFAULT_CHUNK_SIZE: u32 = 128 * 1024;

/// The default fetch granularity: 16 KiB, iroh-blobs' bao block (chunk group)
/// size, the smallest range its outboards can verify on their own.
pub const DEFAULT_FETCH_GRANULARITY: u32 = 16 * 1024;

/// Smallest allowed chunk size (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest allowed chunk size (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Smallest allowed fetch granularity: one BLAKE3 chunk (1 KiB).
pub const MIN_FETCH_GRANULARITY: u32 = 1024;
/// Largest allowed fetch granularity (64 KiB).
pub const MAX_FETCH_GRANULARITY: u32 = 64 * 1024;

/// Most chunks one image may have: 2^20, so the index is at most 32 MiB (a
/// 256 GiB image at 256 KiB chunks, 1 TiB at 1 MiB).
pub const MAX_CHUNKS: u64 = 1 << 20;

/// Errors about chunking and the chunk index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk size is outside the allowed range or not a power of two.
    #[error(
        "the chunk size {0} is not a power of two between 64 KiB and 16 MiB; pick one that is (the default is 128 KiB)"
    )]
    ChunkSize(u32),
    /// The fetch granularity is outside the allowed range, not a power of two,
    /// or larger than the chunk size.
    #[error(
        "the fetch granularity {granularity} is not a power of two between 1 KiB and 64 KiB and at most the chunk size {chunk_size}; pick one that is (the default is 16 KiB)"
    )]
    FetchGranularity { granularity: u32, chunk_size: u32 },
    /// The image would need more chunks than [`MAX_CHUNKS`].
    #[error(
        "an image of {image_len} bytes needs more than 2^20 chunks of {chunk_size} bytes; use a larger chunk size"
    )]
    TooManyChunks { image_len: u64, chunk_size: u32 },
    /// The index bytes are not a whole number of hashes.
    #[error(
        "the chunk index is {0} bytes, which is not a whole number of 32-byte hashes; the data is damaged, fetch it again"
    )]
    IndexLength(usize),
    /// The index lists more than [`MAX_CHUNKS`] hashes.
    #[error(
        "the chunk index lists {0} chunks, more than the 2^20 any image may have; the data is not a HyperOS chunk index, fetch it from another peer"
    )]
    IndexTooLong(u64),
    /// The index has a different number of chunks than the manifest says.
    #[error(
        "the chunk index lists {found} chunks but the manifest needs {expected}; the index does not belong to this manifest, fetch it again"
    )]
    IndexChunkCount { expected: u64, found: u64 },
    /// The index does not hash to the manifest's root.
    #[error(
        "the chunk index does not hash to the manifest's root hash {expected}; the data is damaged or substituted, fetch it from another peer"
    )]
    IndexRoot { expected: BlobHash },
    /// A byte range reaches past the end of the image.
    #[error(
        "the byte range {start}..{end} reaches past the end of the {image_len}-byte image; read within the image"
    )]
    OutOfRange {
        start: u64,
        end: u64,
        image_len: u64,
    },
}

/// The BLAKE3 hash of a blob: a chunk, or the chunk index.
///
/// The same 32 bytes as iroh-blobs' `Hash` (`iroh_blobs::Hash::from(bytes)`),
/// and the root of bao-tree's verified streaming for that blob at any block
/// size.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash([u8; HASH_LEN]);

impl BlobHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl From<blake3::Hash> for BlobHash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl From<BlobHash> for blake3::Hash {
    fn from(hash: BlobHash) -> Self {
        blake3::Hash::from_bytes(hash.0)
    }
}

impl From<[u8; HASH_LEN]> for BlobHash {
    fn from(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({self})")
    }
}

/// How an image is cut: the storage chunk size and the fetch granularity.
///
/// Both are powers of two: chunks are 64 KiB to 16 MiB, fetches 1 KiB to
/// 64 KiB and never larger than a chunk. A reader asks peers for whole
/// granules ([`ChunkSpan::granules`]), each verified through the chunk's
/// BLAKE3 tree before a byte is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunking {
    /// Bytes per chunk; every chunk but the last is exactly this long.
    pub chunk_size: u32,
    /// Bytes per fetch request unit inside a chunk.
    pub fetch_granularity: u32,
}

impl Default for Chunking {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            fetch_granularity: DEFAULT_FETCH_GRANULARITY,
        }
    }
}

impl Chunking {
    /// Checks the sizes against the limits.
    pub fn validate(&self) -> Result<(), ChunkError> {
        let Self {
            chunk_size,
            fetch_granularity,
        } = *self;
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
        {
            return Err(ChunkError::ChunkSize(chunk_size));
        }
        if !fetch_granularity.is_power_of_two()
            || !(MIN_FETCH_GRANULARITY..=MAX_FETCH_GRANULARITY).contains(&fetch_granularity)
            || fetch_granularity > chunk_size
        {
            return Err(ChunkError::FetchGranularity {
                granularity: fetch_granularity,
                chunk_size,
            });
        }
        Ok(())
    }

    /// The layout of an image of `image_len` bytes cut this way.
    pub fn layout(&self, image_len: u64) -> Result<ChunkLayout, ChunkError> {
        self.validate()?;
        let layout = ChunkLayout {
            image_len,
            chunking: *self,
        };
        if layout.chunk_count() > MAX_CHUNKS {
            return Err(ChunkError::TooManyChunks {
                image_len,
                chunk_size: self.chunk_size,
            });
        }
        Ok(layout)
    }
}

/// Where each byte of an image lives: a validated [`Chunking`] applied to an
/// image length. All offsets are image offsets unless named `_in_chunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLayout {
    image_len: u64,
    chunking: Chunking,
}

/// The part of one chunk that a byte range of the image touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Which chunk (0-based, in image order).
    pub chunk: u64,
    /// The bytes of that chunk the range touches, as offsets in the chunk.
    pub range_in_chunk: Range<u64>,
    /// The chunk's length (the last chunk may be short).
    pub chunk_len: u64,
}

impl ChunkSpan {
    /// `range_in_chunk` widened to whole granules of `granularity` bytes and
    /// clipped to the chunk: what to ask a peer for.
    pub fn granules(&self, granularity: u32) -> Range<u64> {
        let g = u64::from(granularity.max(1));
        let start = self.range_in_chunk.start / g * g;
        let end = self
            .range_in_chunk
            .end
            .div_ceil(g)
            .saturating_mul(g)
            .min(self.chunk_len);
        start..end
    }
}

impl ChunkLayout {
    /// The image length.
    pub fn image_len(&self) -> u64 {
        self.image_len
    }

    /// The chunking.
    pub fn chunking(&self) -> Chunking {
        self.chunking
    }

    fn chunk_size(&self) -> u64 {
        u64::from(self.chunking.chunk_size)
    }

    /// How many chunks the image has (0 for an empty image).
    pub fn chunk_count(&self) -> u64 {
        self.image_len.div_ceil(self.chunk_size())
    }

    /// The length of chunk `chunk`, or `None` past the last one.
    pub fn chunk_len(&self, chunk: u64) -> Option<u64> {
        let start = chunk.checked_mul(self.chunk_size())?;
        (start < self.image_len).then(|| (self.image_len - start).min(self.chunk_size()))
    }

    /// The image offsets chunk `chunk` covers, or `None` past the last one.
    pub fn chunk_range(&self, chunk: u64) -> Option<Range<u64>> {
        let len = self.chunk_len(chunk)?;
        let start = chunk * self.chunk_size();
        Some(start..start + len)
    }

    /// The chunk holding image byte `offset`, and the offset inside it;
    /// `None` at or past the end of the image.
    pub fn locate(&self, offset: u64) -> Option<(u64, u64)> {
        (offset < self.image_len).then(|| (offset / self.chunk_size(), offset % self.chunk_size()))
    }

    /// The chunks a read of `range` touches, in order, with the part of each.
    /// An empty range touches nothing.
    pub fn spans(&self, range: Range<u64>) -> Result<Vec<ChunkSpan>, ChunkError> {
        if range.end > self.image_len || range.start > range.end {
            return Err(ChunkError::OutOfRange {
                start: range.start,
                end: range.end,
                image_len: self.image_len,
            });
        }
        let size = self.chunk_size();
        let mut spans = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let chunk = at / size;
            let chunk_start = chunk * size;
            let chunk_len = (self.image_len - chunk_start).min(size);
            let end = range.end.min(chunk_start + chunk_len);
            spans.push(ChunkSpan {
                chunk,
                range_in_chunk: at - chunk_start..end - chunk_start,
                chunk_len,
            });
            at = end;
        }
        Ok(spans)
    }
}

/// The list of chunk hashes of an image, in order.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChunkIndex {
    hashes: Vec<BlobHash>,
}

impl fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkIndex({} chunks, root {})", self.len(), self.root())
    }
}

impl ChunkIndex {
    /// An index of these hashes.
    pub fn new(hashes: Vec<BlobHash>) -> Self {
        Self { hashes }
    }

    /// The hashes in image order.
    pub fn hashes(&self) -> &[BlobHash] {
        &self.hashes
    }

    /// The hash of chunk `chunk`.
    pub fn get(&self, chunk: u64) -> Option<BlobHash> {
        usize::try_from(chunk)
            .ok()
            .and_then(|i| self.hashes.get(i))
            .copied()
    }

    /// How many chunks.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are no chunks (an empty image).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The encoding: the hashes concatenated (iroh-blobs' `HashSeq` bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.hashes.len() * HASH_LEN);
        for hash in &self.hashes {
            out.extend_from_slice(hash.as_bytes());
        }
        out
    }

    /// The hash of the encoding: the manifest's `root_hash`.
    pub fn root(&self) -> BlobHash {
        let mut hasher = blake3::Hasher::new();
        for hash in &self.hashes {
            hasher.update(hash.as_bytes());
        }
        hasher.finalize().into()
    }

    /// Reads an encoding, refusing a length that is not a multiple of 32 or
    /// more than [`MAX_CHUNKS`] hashes. Nothing is verified: use
    /// [`ChunkIndex::decode_verified`] for bytes from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, ChunkError> {
        if !bytes.len().is_multiple_of(HASH_LEN) {
            return Err(ChunkError::IndexLength(bytes.len()));
        }
        let count = (bytes.len() / HASH_LEN) as u64;
        if count > MAX_CHUNKS {
            return Err(ChunkError::IndexTooLong(count));
        }
        let hashes = bytes
            .chunks_exact(HASH_LEN)
            .map(|h| {
                let mut bytes = [0u8; HASH_LEN];
                bytes.copy_from_slice(h);
                BlobHash(bytes)
            })
            .collect();
        Ok(Self { hashes })
    }

    /// Reads an encoding and checks it against what a verified manifest says:
    /// the number of chunks its layout needs and its root hash. The count is
    /// checked before anything is hashed or allocated.
    pub fn decode_verified(
        bytes: &[u8],
        layout: &ChunkLayout,
        root: &BlobHash,
    ) -> Result<Self, ChunkError> {
        let expected = layout.chunk_count();
        let found = (bytes.len() / HASH_LEN) as u64;
        if !bytes.len().is_multiple_of(HASH_LEN) {
            return Err(ChunkError::IndexLength(bytes.len()));
        }
        if found != expected {
            return Err(ChunkError::IndexChunkCount { expected, found });
        }
        if BlobHash::of(bytes) != *root {
            return Err(ChunkError::IndexRoot { expected: *root });
        }
        Self::decode(bytes)
    }
}

/// One chunk cut from an image: its hash and bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The BLAKE3 hash of `bytes`.
    pub hash: BlobHash,
    /// The chunk's bytes (`chunk_size` long, except perhaps the last).
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunk({}, {} bytes)", self.hash, self.bytes.len())
    }
}

/// Cuts a reader into chunks of `chunk_size` bytes: an iterator of
/// [`Chunk`]s, each read whole (short reads are retried, `Interrupted` is
/// retried) before it is hashed. Stops after the first error.
pub struct Chunker<R> {
    reader: R,
    chunk_size: usize,
    done: bool,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`; `chunking` is validated first.
    pub fn new(reader: R, chunking: Chunking) -> Result<Self, ChunkError> {
        chunking.validate()?;
        Ok(Self {
            reader,
            chunk_size: chunking.chunk_size as usize,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let mut bytes = vec![0u8; self.chunk_size];
        let mut filled = 0;
        while filled < bytes.len() {
            match self.reader.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled < bytes.len() {
            self.done = true;
            bytes.truncate(filled);
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Chunk {
            hash: BlobHash::of(&bytes),
            bytes,
        }))
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_chunk();
        if next.is_err() {
            self.done = true;
        }
        next.transpose()
    }
}

/// A reader's chunk index and length, keeping no chunk bytes: what a
/// publisher needs for the manifest. Fails past [`MAX_CHUNKS`] chunks.
pub fn index_reader<R: Read>(reader: R, chunking: Chunking) -> io::Result<(ChunkIndex, u64)> {
    let mut hashes = Vec::new();
    let mut len = 0u64;
    let chunker = Chunker::new(reader, chunking).map_err(io::Error::other)?;
    for chunk in chunker {
        let chunk = chunk?;
        len += chunk.bytes.len() as u64;
        hashes.push(chunk.hash);
        if hashes.len() as u64 > MAX_CHUNKS {
            return Err(io::Error::other(ChunkError::TooManyChunks {
                image_len: len,
                chunk_size: chunking.chunk_size,
            }));
        }
    }
    Ok((ChunkIndex::new(hashes), len))
}

/// The chunk index of bytes in memory.
pub fn index_bytes(data: &[u8], chunking: Chunking) -> Result<ChunkIndex, ChunkError> {
    let layout = chunking.layout(data.len() as u64)?;
    let hashes = data
        .chunks(layout.chunking().chunk_size as usize)
        .map(BlobHash::of)
        .collect();
    Ok(ChunkIndex::new(hashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn layout(image_len: u64) -> ChunkLayout {
        Chunking {
            chunk_size: 64 * 1024,
            fetch_granularity: 16 * 1024,
        }
        .layout(image_len)
        .unwrap()
    }

    #[test]
    fn chunking_limits() {
        assert!(Chunking::default().validate().is_ok());
        for chunk_size in [0, 1, 32 * 1024, 96 * 1024, 32 * 1024 * 1024] {
            let c = Chunking {
                chunk_size,
                fetch_granularity: 16 * 1024,
            };
            assert_eq!(c.validate(), Err(ChunkError::ChunkSize(chunk_size)));
        }
        for fetch_granularity in [0, 512, 3000, 128 * 1024] {
            let c = Chunking {
                chunk_size: 1 << 20,
                fetch_granularity,
            };
            assert!(matches!(
                c.validate(),
                Err(ChunkError::FetchGranularity { .. })
            ));
        }
        let c = Chunking {
            chunk_size: 64 * 1024,
            fetch_granularity: 64 * 1024,
        };
        assert!(c.validate().is_ok());
        let too_big = Chunking {
            chunk_size: 64 * 1024,
            fetch_granularity: 1024,
        };
        assert!(matches!(
            too_big.layout((MAX_CHUNKS + 1) * 64 * KIB),
            Err(ChunkError::TooManyChunks { .. })
        ));
        assert!(too_big.layout(MAX_CHUNKS * 64 * KIB).is_ok());
    }

    #[test]
    fn layout_arithmetic_with_a_short_last_chunk() {
        let l = layout(150 * KIB);
        assert_eq!(l.chunk_count(), 3);
        assert_eq!(l.chunk_len(0), Some(64 * KIB));
        assert_eq!(l.chunk_len(2), Some(22 * KIB));
        assert_eq!(l.chunk_len(3), None);
        assert_eq!(l.chunk_len(u64::MAX), None);
        assert_eq!(l.chunk_range(2), Some(128 * KIB..150 * KIB));
        assert_eq!(l.locate(0), Some((0, 0)));
        assert_eq!(l.locate(64 * KIB), Some((1, 0)));
        assert_eq!(l.locate(150 * KIB - 1), Some((2, 22 * KIB - 1)));
        assert_eq!(l.locate(150 * KIB), None);
        assert_eq!(layout(0).chunk_count(), 0);
        assert_eq!(layout(1).chunk_count(), 1);
    }

    #[test]
    fn spans_of_ranges() {
        let l = layout(150 * KIB);
        assert_eq!(l.spans(10..10).unwrap(), vec![]);
        let spans = l.spans(60 * KIB..140 * KIB).unwrap();
        assert_eq!(
            spans,
            vec![
                ChunkSpan {
                    chunk: 0,
                    range_in_chunk: 60 * KIB..64 * KIB,
                    chunk_len: 64 * KIB
                },
                ChunkSpan {
                    chunk: 1,
                    range_in_chunk: 0..64 * KIB,
                    chunk_len: 64 * KIB
                },
                ChunkSpan {
                    chunk: 2,
                    range_in_chunk: 0..12 * KIB,
                    chunk_len: 22 * KIB
                },
            ]
        );
        assert_eq!(spans[0].granules(16 * 1024), 48 * KIB..64 * KIB);
        assert_eq!(spans[2].granules(16 * 1024), 0..16 * KIB);
        // Granules are clipped to the short last chunk.
        let last = &l.spans(145 * KIB..146 * KIB).unwrap()[0];
        assert_eq!(last.granules(16 * 1024), 16 * KIB..22 * KIB);
        assert!(matches!(
            l.spans(0..150 * KIB + 1),
            Err(ChunkError::OutOfRange { .. })
        ));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = l.spans(5..4);
        assert!(reversed.is_err());
    }

    #[test]
    fn index_round_trip_and_verification() {
        let chunking = Chunking {
            chunk_size: 64 * 1024,
            fetch_granularity: 16 * 1024,
        };
        let mut data = vec![0u8; 200 * 1024];
        data[70_000] = 1;
        let index = index_bytes(&data, chunking).unwrap();
        assert_eq!(index.len(), 4);
        // Zero chunks share a hash.
        assert_eq!(index.get(0), index.get(2));
        assert_ne!(index.get(0), index.get(1));
        assert_eq!(index.get(3), Some(BlobHash::of(&[0u8; 8 * 1024])));
        let encoded = index.encode();
        assert_eq!(encoded.len(), 4 * 32);
        assert_eq!(index.root(), BlobHash::of(&encoded));
        assert_eq!(ChunkIndex::decode(&encoded).unwrap(), index);
        let l = chunking.layout(data.len() as u64).unwrap();
        let root = index.root();
        assert_eq!(
            ChunkIndex::decode_verified(&encoded, &l, &root).unwrap(),
            index
        );
        let mut bad = encoded.clone();
        bad[5] ^= 1;
        assert_eq!(
            ChunkIndex::decode_verified(&bad, &l, &root),
            Err(ChunkError::IndexRoot { expected: root })
        );
        assert_eq!(
            ChunkIndex::decode_verified(&encoded[..96], &l, &root),
            Err(ChunkError::IndexChunkCount {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(
            ChunkIndex::decode(&encoded[..95]),
            Err(ChunkError::IndexLength(95))
        );
    }

    /// A reader that hands out at most 1000 bytes per call and is sometimes
    /// interrupted, like a pipe.
    struct Dribble<'a> {
        data: &'a [u8],
        calls: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(7) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let n = buf.len().min(self.data.len()).min(1000);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunker_matches_in_memory_index() {
        let chunking = Chunking {
            chunk_size: 64 * 1024,
            fetch_granularity: 16 * 1024,
        };
        for len in [0usize, 1, 65535, 65536, 65537, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (index, read_len) = index_reader(
                Dribble {
                    data: &data,
                    calls: 0,
                },
                chunking,
            )
            .unwrap();
            assert_eq!(read_len, len as u64);
            assert_eq!(index, index_bytes(&data, chunking).unwrap(), "len {len}");
            let chunks: Vec<Chunk> = Chunker::new(&data[..], chunking)
                .unwrap()
                .collect::<io::Result<_>>()
                .unwrap();
            assert_eq!(chunks.concat_bytes(), data);
        }
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl Concat for Vec<Chunk> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|c| c.bytes.iter().copied()).collect()
        }
    }

    #[test]
    fn chunker_stops_after_an_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut chunker = Chunker::new(Broken, Chunking::default()).unwrap();
        assert!(chunker.next().unwrap().is_err());
        assert!(chunker.next().is_none());
    }
}
