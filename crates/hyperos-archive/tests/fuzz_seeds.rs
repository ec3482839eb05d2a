//! Keeps the fuzzers' committed seed inputs (`fuzz/seeds/`) equal to what
//! this version of the crate encodes. `HYPEROS_WRITE_FUZZ_SEEDS=1 cargo test
//! -p hyperos-archive --test fuzz_seeds` rewrites them after a format change.

use std::path::PathBuf;

use hyperos_archive::{
    ArchiveLink, ArchiveSecret, BlobHash, Chunking, FsType, Manifest, OciConfig, index_bytes,
};

/// The key the `signed_manifest_verify` fuzzer verifies against.
const FUZZ_SECRET: [u8; 32] = [7; 32];

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let secret = ArchiveSecret::from_bytes(&FUZZ_SECRET);
    let chunking = Chunking::default();
    let image = vec![0u8; 3 * chunking.chunk_size as usize + 1000];
    let index = index_bytes(&image, chunking).expect("valid chunking");
    let manifest = Manifest {
        archive: secret.public(),
        version: 3,
        created: 1_700_000_000,
        expires: 1_800_000_000,
        image_len: image.len() as u64,
        fs_type: FsType::Ext4,
        chunking,
        root_hash: index.root(),
        prefetch: vec![0..4096, 300_000..300_100],
        oci: Some(OciConfig {
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: "/".into(),
            user: "0".into(),
        }),
    };
    let plain = Manifest {
        oci: None,
        prefetch: vec![],
        ..manifest.clone()
    };
    let link = ArchiveLink::at_version(secret.public(), 3).to_string();
    vec![
        (
            "manifest_decode",
            "full",
            manifest.encode().expect("encodes"),
        ),
        ("manifest_decode", "plain", plain.encode().expect("encodes")),
        (
            "signed_manifest_verify",
            "full",
            manifest.sign(&secret).expect("signs").encode(),
        ),
        (
            "signed_manifest_verify",
            "plain",
            plain.sign(&secret).expect("signs").encode(),
        ),
        ("link_parse", "versioned", link.into_bytes()),
        ("chunk_index_decode", "three", index.encode()),
        (
            "chunk_index_decode",
            "one",
            BlobHash::of(b"x").as_bytes().to_vec(),
        ),
    ]
}

#[test]
fn committed_fuzz_seeds_are_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = std::env::var_os("HYPEROS_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = root.join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with HYPEROS_WRITE_FUZZ_SEEDS=1",
                path.display()
            )
        });
        assert_eq!(
            committed,
            bytes,
            "{} is stale; run with HYPEROS_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}
