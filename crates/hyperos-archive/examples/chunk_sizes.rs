//! Measures what the storage chunk size and the fetch granularity cost, on a
//! synthetic filesystem image and an update of it, and prints a table.
//!
//! ```text
//! cargo run --release -p hyperos-archive --example chunk_sizes
//! ```
//!
//! The image (128 MiB) imitates a filesystem: 2 MiB of metadata blocks, then
//! files of log-uniform size (1 KiB to 4 MiB, random contents, 4 KiB
//! aligned) filling 70% of it, then free space (zeros). The update rewrites
//! 5% of the files in place, adds files worth 2% of the image in free space,
//! and rewrites 300 metadata blocks and 100 directory blocks scattered over
//! the used area, all 4 KiB blocks, like a package upgrade would.
//!
//! Reported per chunk size: chunks, distinct chunks, index size, and the
//! bytes a peer holding version 1 must fetch to hold version 2 (against the
//! 4 KiB blocks that really changed). Per fetch granularity: the bytes a cold
//! read of 300 small files fetches and the number of requests; and the
//! measured bao proof bytes per request (iroh-blobs' 16 KiB block outboard)
//! for each chunk size.

use std::collections::HashSet;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::round_up_to_chunks;
use bao_tree::io::sync::encode_ranges_validated;
use bao_tree::{BlockSize, ByteRanges};
use hyperos_archive::{Chunking, DEFAULT_CHUNK_SIZE, index_bytes};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const IMAGE: usize = 128 * MIB;
const BLOCK: usize = 4 * KIB;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

struct File {
    offset: usize,
    len: usize,
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn make_images() -> (Vec<u8>, Vec<u8>, Vec<File>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut v1 = vec![0u8; IMAGE];
    rng.fill(&mut v1[..2 * MIB]);
    let mut files = Vec::new();
    let mut at = 2 * MIB;
    while at < IMAGE * 7 / 10 {
        // Log-uniform from 1 KiB to 4 MiB.
        let log = 10.0 + (rng.below(1000) as f64 / 1000.0) * 12.0;
        let len = (2f64.powf(log) as usize).min(IMAGE * 7 / 10 - at).max(1);
        rng.fill(&mut v1[at..at + len]);
        files.push(File { offset: at, len });
        at = round_up(at + len, BLOCK);
    }
    let used_end = at;
    let mut v2 = v1.clone();
    for _ in 0..files.len() / 20 {
        let f = &files[rng.below(files.len())];
        rng.fill(&mut v2[f.offset..f.offset + f.len]);
    }
    let new_end = (used_end + IMAGE / 50).min(IMAGE);
    rng.fill(&mut v2[used_end..new_end]);
    for _ in 0..300 {
        let block = rng.below(2 * MIB / BLOCK) * BLOCK;
        rng.fill(&mut v2[block..block + BLOCK]);
    }
    for _ in 0..100 {
        let block = rng.below(used_end / BLOCK) * BLOCK;
        rng.fill(&mut v2[block..block + BLOCK]);
    }
    (v1, v2, files)
}

fn main() {
    let (v1, v2, files) = make_images();
    let changed_blocks = v1
        .chunks(BLOCK)
        .zip(v2.chunks(BLOCK))
        .filter(|(a, b)| a != b)
        .count();
    println!(
        "image {} MiB, {} files, update changes {} 4-KiB blocks ({:.1} MiB, {:.2}% of the image)\n",
        IMAGE / MIB,
        files.len(),
        changed_blocks,
        (changed_blocks * BLOCK) as f64 / MIB as f64,
        100.0 * (changed_blocks * BLOCK) as f64 / IMAGE as f64
    );

    println!("| chunk size | chunks | distinct | index | v1→v2 fetch | × changed |");
    println!("|---|---|---|---|---|---|");
    for chunk_size in [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB, 4 * MIB] {
        let chunking = Chunking {
            chunk_size: chunk_size as u32,
            fetch_granularity: 16 * KIB as u32,
        };
        let i1 = index_bytes(&v1, chunking).expect("valid chunking");
        let i2 = index_bytes(&v2, chunking).expect("valid chunking");
        let have: HashSet<_> = i1.hashes().iter().collect();
        let distinct: HashSet<_> = i2.hashes().iter().collect();
        let mut fetched = HashSet::new();
        let mut fetch_bytes = 0usize;
        for (i, hash) in i2.hashes().iter().enumerate() {
            if !have.contains(hash) && fetched.insert(hash) {
                fetch_bytes += chunk_size.min(IMAGE - i * chunk_size);
            }
        }
        println!(
            "| {} KiB | {} | {} | {} KiB | {:.1} MiB | {:.1} |",
            chunk_size / KIB,
            i2.len(),
            distinct.len(),
            i2.len() * 32 / KIB,
            fetch_bytes as f64 / MIB as f64,
            fetch_bytes as f64 / (changed_blocks * BLOCK) as f64
        );
    }

    // Cold reads: 300 small files (≤ 64 KiB), as a boot or `apt-get --version` touches.
    let mut rng = Rng(42);
    let small: Vec<&File> = files.iter().filter(|f| f.len <= 64 * KIB).collect();
    let reads: Vec<&File> = (0..300).map(|_| small[rng.below(small.len())]).collect();
    let wanted: usize = {
        let mut seen = HashSet::new();
        reads
            .iter()
            .filter(|f| seen.insert(f.offset))
            .map(|f| f.len)
            .sum()
    };
    println!(
        "\ncold read of 300 small files ({:.2} MiB of file data), chunk size 128 KiB:\n",
        wanted as f64 / MIB as f64
    );
    println!("| granularity | fetched | × file data | requests |");
    println!("|---|---|---|---|");
    let chunk_size = DEFAULT_CHUNK_SIZE as usize;
    for granularity in [4 * KIB, 16 * KIB, 32 * KIB, 64 * KIB] {
        let proof = proof_bytes(&v1, chunk_size, granularity);
        let mut units = HashSet::new();
        for f in &reads {
            for u in f.offset / granularity..(f.offset + f.len).div_ceil(granularity) {
                units.insert(u);
            }
        }
        // One request per run of consecutive granules within one chunk.
        let mut sorted: Vec<_> = units.iter().copied().collect();
        sorted.sort_unstable();
        let per_chunk = chunk_size / granularity;
        let requests = sorted
            .iter()
            .enumerate()
            .filter(|&(i, &u)| i == 0 || sorted[i - 1] + 1 != u || u % per_chunk == 0)
            .count();
        let fetched = units.len() * granularity + requests * proof;
        println!(
            "| {} KiB | {:.2} MiB | {:.2} | {} |",
            granularity / KIB,
            fetched as f64 / MIB as f64,
            fetched as f64 / wanted as f64,
            requests,
        );
    }

    println!(
        "\nmeasured proof + 8-byte size header of one request, in bytes (16 KiB bao blocks):\n"
    );
    println!("| chunk size | 4 KiB | 16 KiB | 64 KiB |");
    println!("|---|---|---|---|");
    for chunk_size in [64 * KIB, 256 * KIB, MIB, 4 * MIB] {
        let cells: Vec<String> = [4 * KIB, 16 * KIB, 64 * KIB]
            .iter()
            .map(|&g| proof_bytes(&v1, chunk_size, g).to_string())
            .collect();
        println!("| {} KiB | {} |", chunk_size / KIB, cells.join(" | "));
    }
}

/// The bytes beyond the data itself that a response to a request for one
/// granule (aligned, in the middle of a chunk) carries: bao parent hashes,
/// plus the 8-byte size header iroh-blobs sends first.
fn proof_bytes(image: &[u8], chunk_size: usize, granularity: usize) -> usize {
    let chunk = &image[2 * MIB..2 * MIB + chunk_size];
    let outboard = PreOrderMemOutboard::create(chunk, BlockSize::from_chunk_log(4));
    let start = (chunk_size / 2 / granularity * granularity).min(chunk_size - granularity) as u64;
    let ranges = ByteRanges::from(start..start + granularity as u64);
    let mut response = Vec::new();
    encode_ranges_validated(
        chunk,
        &outboard,
        &round_up_to_chunks(&ranges),
        &mut response,
    )
    .expect("encode");
    response.len() + 8 - granularity
}
