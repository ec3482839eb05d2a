//! Property tests for every encoding: round trips, canonical form, and that
//! no single flipped bit of a signed manifest gets through verification.

use std::ops::Range;

use hyperos_archive::{
    ArchiveKey, ArchiveLink, ArchiveSecret, BlobHash, ChunkIndex, Chunking, FsType, LastSeen,
    Manifest, ManifestError, OciConfig, SignedManifest,
};
use proptest::prelude::*;

const NOW: u64 = 1_750_000_000;

fn secret_strategy() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn chunking_strategy() -> impl Strategy<Value = Chunking> {
    (16u32..=24).prop_flat_map(|chunk_log| {
        (10u32..=16).prop_map(move |fetch_log| Chunking {
            chunk_size: 1 << chunk_log,
            fetch_granularity: 1 << fetch_log.min(chunk_log),
        })
    })
}

/// Sorted, disjoint, non-touching, non-empty ranges within `image_len`.
fn prefetch_strategy(image_len: u64) -> impl Strategy<Value = Vec<Range<u64>>> {
    prop::collection::vec((1u64..1 << 20, 1u64..1 << 20), 0..20).prop_map(move |steps| {
        let mut ranges = Vec::new();
        let mut at = 0u64;
        for (gap, len) in steps {
            let start = at + gap;
            let end = start + len;
            if end > image_len {
                break;
            }
            ranges.push(start..end);
            at = end;
        }
        ranges
    })
}

fn oci_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn oci_strategy() -> impl Strategy<Value = Option<OciConfig>> {
    prop::option::of(
        (
            prop::collection::vec(oci_string(), 0..4),
            prop::collection::vec(oci_string(), 0..4),
            prop::collection::vec("[A-Za-z_][A-Za-z0-9_]{0,8}=[^\u{0}]{0,16}", 0..6),
            oci_string(),
            oci_string(),
        )
            .prop_map(|(entrypoint, cmd, env, working_dir, user)| OciConfig {
                entrypoint,
                cmd,
                env,
                working_dir,
                user,
            }),
    )
}

prop_compose! {
    fn manifest_strategy()(
        seed in secret_strategy(),
        version in any::<u64>(),
        created in 0u64..NOW,
        lifetime in 1u64..1 << 40,
        chunking in chunking_strategy(),
        image_fraction in 0u64..=1 << 20,
        fs_type in prop_oneof![Just(FsType::Ext4), Just(FsType::Erofs), Just(FsType::Squashfs)],
        root in any::<[u8; 32]>(),
        oci in oci_strategy(),
    )(
        prefetch in prefetch_strategy(image_fraction * u64::from(chunking.chunk_size) / 8),
        seed in Just(seed), version in Just(version), created in Just(created),
        lifetime in Just(lifetime), chunking in Just(chunking),
        image_fraction in Just(image_fraction), fs_type in Just(fs_type),
        root in Just(root), oci in Just(oci),
    ) -> (Manifest, [u8; 32]) {
        let archive = ArchiveSecret::from_bytes(&seed).public();
        let manifest = Manifest {
            archive,
            version,
            created,
            expires: created + lifetime,
            // Up to 2^20 chunks, the limit, a fraction of them in use.
            image_len: image_fraction * u64::from(chunking.chunk_size) / 8,
            fs_type,
            chunking,
            root_hash: BlobHash::from_bytes(root),
            prefetch,
            oci,
        };
        (manifest, seed)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn manifest_round_trips((manifest, _) in manifest_strategy()) {
        let bytes = manifest.encode().unwrap();
        prop_assert_eq!(Manifest::decode(&bytes).unwrap(), manifest.clone());
        // Canonical: decoding then encoding gives the same bytes.
        prop_assert_eq!(Manifest::decode(&bytes).unwrap().encode().unwrap(), bytes);
    }

    #[test]
    fn signed_manifest_round_trips_and_verifies((manifest, seed) in manifest_strategy()) {
        let secret = ArchiveSecret::from_bytes(&seed);
        let signed = manifest.sign(&secret).unwrap();
        let wire = signed.encode();
        let back = SignedManifest::decode(&wire).unwrap();
        prop_assert_eq!(&back, &signed);
        prop_assert_eq!(back.encode(), wire);
        let now = manifest.expires - 1;
        let verified = back.verify(&secret.public(), now, None).unwrap();
        prop_assert_eq!(&verified, &manifest);
        let seen = back.last_seen(&verified);
        prop_assert_eq!(back.verify(&secret.public(), now, Some(seen)).unwrap(), manifest);
    }

    #[test]
    fn any_single_bit_flip_is_refused(
        (manifest, seed) in manifest_strategy(),
        bit in any::<prop::sample::Index>(),
    ) {
        let secret = ArchiveSecret::from_bytes(&seed);
        let wire = manifest.sign(&secret).unwrap().encode();
        let bit = bit.index(wire.len() * 8);
        let mut flipped = wire.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let now = manifest.expires - 1;
        let result = SignedManifest::decode(&flipped)
            .and_then(|signed| signed.verify(&secret.public(), now, None));
        prop_assert!(result.is_err(), "bit {} of {} got through", bit, wire.len() * 8);
    }

    #[test]
    fn versions_never_go_back(
        (manifest, seed) in manifest_strategy(),
        last in any::<u64>(),
        digest in any::<[u8; 32]>(),
    ) {
        let secret = ArchiveSecret::from_bytes(&seed);
        let signed = manifest.sign(&secret).unwrap();
        let seen = LastSeen { version: last, digest: BlobHash::from_bytes(digest) };
        let result = signed.verify(&secret.public(), manifest.expires - 1, Some(seen));
        if manifest.version < last {
            let is_rollback = matches!(result, Err(ManifestError::Rollback { .. }));
            prop_assert!(is_rollback);
        } else if manifest.version == last {
            let is_equivocation = matches!(result, Err(ManifestError::Equivocation { .. }));
            prop_assert!(is_equivocation);
        } else {
            prop_assert!(result.is_ok());
        }
    }

    #[test]
    fn manifest_decoder_is_canonical_on_mutations(
        (manifest, _) in manifest_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = manifest.encode().unwrap();
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(decoded) = Manifest::decode(&bytes) {
            prop_assert_eq!(decoded.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn link_round_trips(seed in secret_strategy(), version in prop::option::of(any::<u64>()),
                        upper in any::<bool>(), slash in any::<bool>()) {
        let key = ArchiveSecret::from_bytes(&seed).public();
        let link = ArchiveLink { key, version };
        let text = link.to_string();
        prop_assert_eq!(ArchiveLink::parse(&text).unwrap(), link);
        let mut variant = if upper { text.replace(&key.to_hex(), &key.to_hex().to_uppercase()) } else { text.clone() };
        if slash {
            variant.push('/');
        }
        prop_assert_eq!(ArchiveLink::parse(&variant).unwrap(), link);
        prop_assert_eq!(text.parse::<ArchiveLink>().unwrap().to_string(), text);
    }

    #[test]
    fn link_parser_never_panics_and_accepts_only_links(text in "\\PC{0,100}") {
        if let Ok(link) = ArchiveLink::parse(&text) {
            let canonical = link.to_string();
            prop_assert!(text.to_lowercase().trim_end_matches('/') == canonical);
        }
    }

    #[test]
    fn key_hex_round_trips(seed in secret_strategy()) {
        let secret = ArchiveSecret::from_bytes(&seed);
        let key = secret.public();
        prop_assert_eq!(ArchiveKey::from_hex(&key.to_hex()).unwrap(), key);
        prop_assert_eq!(ArchiveSecret::from_hex(&secret.to_hex()).unwrap().public(), key);
    }

    #[test]
    fn chunk_index_round_trips(hashes in prop::collection::vec(any::<[u8; 32]>(), 0..64),
                               chunking in chunking_strategy(), short in 0u64..1 << 16) {
        let index = ChunkIndex::new(hashes.into_iter().map(BlobHash::from_bytes).collect());
        let bytes = index.encode();
        prop_assert_eq!(bytes.len(), index.len() * 32);
        prop_assert_eq!(&ChunkIndex::decode(&bytes).unwrap(), &index);
        prop_assert_eq!(index.root(), BlobHash::of(&bytes));
        // An image whose chunk count matches verifies against the root.
        let n = index.len() as u64;
        let image_len = if n == 0 { 0 } else {
            n * u64::from(chunking.chunk_size) - short.min(u64::from(chunking.chunk_size) - 1)
        };
        let layout = chunking.layout(image_len).unwrap();
        prop_assert_eq!(layout.chunk_count(), n);
        prop_assert_eq!(ChunkIndex::decode_verified(&bytes, &layout, &index.root()).unwrap(), index);
    }

    #[test]
    fn spans_cover_a_range_exactly(chunking in chunking_strategy(), image_len in 0u64..1 << 30,
                                   a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let layout = chunking.layout(image_len).unwrap();
        let (x, y) = (a.index(image_len as usize + 1) as u64, b.index(image_len as usize + 1) as u64);
        let range = x.min(y)..x.max(y);
        let spans = layout.spans(range.clone()).unwrap();
        let mut at = range.start;
        for span in &spans {
            let chunk_range = layout.chunk_range(span.chunk).unwrap();
            prop_assert_eq!(chunk_range.end - chunk_range.start, span.chunk_len);
            prop_assert_eq!(chunk_range.start + span.range_in_chunk.start, at);
            prop_assert!(span.range_in_chunk.start < span.range_in_chunk.end);
            prop_assert!(span.range_in_chunk.end <= span.chunk_len);
            prop_assert_eq!(layout.locate(at), Some((span.chunk, span.range_in_chunk.start)));
            let granules = span.granules(chunking.fetch_granularity);
            prop_assert!(granules.start <= span.range_in_chunk.start);
            prop_assert!(granules.end >= span.range_in_chunk.end);
            prop_assert!(granules.end <= span.chunk_len);
            prop_assert_eq!(granules.start % u64::from(chunking.fetch_granularity), 0);
            at = chunk_range.start + span.range_in_chunk.end;
        }
        prop_assert_eq!(at, range.end);
    }
}

/// Exhaustive over one small manifest: every one of its bits.
#[test]
fn every_bit_of_a_small_manifest_matters() {
    let seed = [5u8; 32];
    let secret = ArchiveSecret::from_bytes(&seed);
    let manifest = Manifest {
        archive: secret.public(),
        version: 1,
        created: NOW - 1,
        expires: NOW + 1,
        image_len: 1 << 20,
        fs_type: FsType::Ext4,
        chunking: Chunking::default(),
        root_hash: BlobHash::of(b"index"),
        prefetch: vec![],
        oci: None,
    };
    let wire = manifest.sign(&secret).unwrap().encode();
    for bit in 0..wire.len() * 8 {
        let mut flipped = wire.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let result = SignedManifest::decode(&flipped)
            .and_then(|signed| signed.verify(&secret.public(), NOW, None));
        assert!(result.is_err(), "bit {bit} got through");
    }
}
