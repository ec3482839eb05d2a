//! OCI image layouts and `docker save` archives become EROFS images with
//! layers, whiteouts and opaque directories applied; hostile layers write
//! nothing outside their root.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{CAP_NET_RAW, LayerTar, Mounted, Node, assert_same_tree, root_or_skip, sha256, walk};
use hyperos_imagefs::oci::OciError;
use hyperos_imagefs::{FsType, ImageFsError, OciConfig, Source, detect, layer, prepare};

const APP: &[u8] = b"#!/bin/sh\necho app\n";

fn base_layer() -> Vec<u8> {
    LayerTar::default()
        .dir("./", 0o755, (0, 0))
        .dir("etc/", 0o755, (0, 0))
        .file("etc/os-release", 0o644, (0, 0), b"one\n")
        .file("etc/remove-me", 0o644, (0, 0), b"x")
        .dir("usr/", 0o755, (0, 0))
        .dir("usr/bin/", 0o755, (0, 0))
        .file_with_capability("usr/bin/app", 0o755, APP, CAP_NET_RAW)
        .hardlink("usr/bin/app-link", "usr/bin/app")
        .file("usr/bin/suid", 0o4755, (0, 0), b"suid")
        .symlink("bin", "usr/bin")
        .dir("var/cache/", 0o755, (0, 0))
        .file("var/cache/old", 0o644, (0, 0), b"old")
        .file("var/cache/sub/older", 0o644, (0, 0), b"older")
        .dir("opq/", 0o750, (0, 0))
        .file("opq/lower", 0o644, (0, 0), b"lower")
        .file("home/u/file", 0o600, (1000, 1000), b"mine")
        .file("thing", 0o644, (0, 0), b"a file, later a directory")
        .fifo("run/fifo", 0o600)
        .char_device("dev/null", 0o666, 1, 3)
        .finish()
}

fn top_layer() -> Vec<u8> {
    LayerTar::default()
        .marker("etc/.wh.remove-me")
        .file("etc/os-release", 0o644, (0, 0), b"two\n")
        // The opaque marker after a sibling from the same layer: the
        // sibling stays, the lower entries go.
        .file("var/cache/new", 0o644, (0, 0), b"new")
        .marker("var/cache/.wh..wh..opq")
        .marker("opq/.wh..wh..opq")
        .file("opq/upper", 0o644, (0, 0), b"upper")
        // Written through the in-root symlink bin -> usr/bin.
        .file("bin/via-link", 0o755, (0, 0), b"via")
        .dir("thing/", 0o755, (0, 0))
        .file("thing/inner", 0o644, (0, 0), b"inner")
        .marker("home/.wh..wh.plnk")
        .finish()
}

const CONFIG_JSON: &str = r#"{
  "architecture": "amd64", "os": "linux",
  "config": {"Entrypoint": ["/usr/bin/app"], "Cmd": ["--flag"], "Env": ["PATH=/usr/bin", "A=b"],
             "WorkingDir": "/home/u", "User": "1000:1000", "Labels": {"x": "y"}},
  "rootfs": {"type": "layers", "diff_ids": ["DIFF0", "DIFF1"]}
}"#;

fn config_json(layers: &[&[u8]]) -> Vec<u8> {
    CONFIG_JSON
        .replace("DIFF0", &format!("sha256:{}", sha256(layers[0])))
        .replace("DIFF1", &format!("sha256:{}", sha256(layers[1])))
        .into_bytes()
}

fn expected_config() -> OciConfig {
    OciConfig {
        entrypoint: vec!["/usr/bin/app".into()],
        cmd: vec!["--flag".into()],
        env: vec!["PATH=/usr/bin".into(), "A=b".into()],
        working_dir: "/home/u".into(),
        user: "1000:1000".into(),
    }
}

fn node(kind: String, mode: u32, owner: (u32, u32)) -> Node {
    Node {
        kind,
        mode,
        uid: owner.0,
        gid: owner.1,
        capability: None,
        link_group: None,
    }
}

fn file(data: &[u8], mode: u32) -> Node {
    node(format!("file {}", sha256(data)), mode, (0, 0))
}

fn dir(mode: u32) -> Node {
    node("dir".into(), mode, (0, 0))
}

/// The tree both layers give.
fn expected_tree() -> BTreeMap<String, Node> {
    let mut app = file(APP, 0o755);
    app.capability = Some(CAP_NET_RAW.to_vec());
    app.link_group = Some("usr/bin/app".into());
    let entries = [
        ("etc", dir(0o755)),
        ("etc/os-release", file(b"two\n", 0o644)),
        ("usr", dir(0o755)),
        ("usr/bin", dir(0o755)),
        ("usr/bin/app", app.clone()),
        ("usr/bin/app-link", app),
        ("usr/bin/suid", file(b"suid", 0o4755)),
        ("usr/bin/via-link", file(b"via", 0o755)),
        ("bin", node("symlink -> usr/bin".into(), 0o777, (0, 0))),
        ("var", dir(0o755)),
        ("var/cache", dir(0o755)),
        ("var/cache/new", file(b"new", 0o644)),
        ("opq", dir(0o750)),
        ("opq/upper", file(b"upper", 0o644)),
        ("home", dir(0o755)),
        ("home/u", dir(0o755)),
        (
            "home/u/file",
            node(format!("file {}", sha256(b"mine")), 0o600, (1000, 1000)),
        ),
        ("thing", dir(0o755)),
        ("thing/inner", file(b"inner", 0o644)),
        ("run", dir(0o755)),
        ("run/fifo", node("fifo".into(), 0o600, (0, 0))),
        ("dev", dir(0o755)),
        (
            "dev/null",
            node(format!("char {}", libc::makedev(1, 3)), 0o666, (0, 0)),
        ),
    ];
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn check_image(archive: &Path, work: &Path) {
    assert_eq!(
        detect(archive).unwrap(),
        Source::OciArchive,
        "{}",
        archive.display()
    );
    let prepared = prepare(archive, work).unwrap();
    assert_eq!(prepared.fs_type, FsType::Erofs);
    assert!(prepared.temporary);
    assert_eq!(prepared.oci, Some(expected_config()));
    let leftovers: Vec<_> = std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("oci-rootfs-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let mounted = Mounted::new(&prepared.path, "erofs");
    let mut actual = walk(mounted.path());
    let root = actual.remove("").unwrap();
    assert_eq!((root.mode, root.uid, root.gid), (0o755, 0, 0));
    assert_same_tree(&expected_tree(), &actual);
}

fn docker_save(layers: &[&[u8]]) -> Vec<u8> {
    let config = config_json(layers);
    let config_name = format!("{}.json", sha256(&config));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["test:latest"],
        "Layers": ["l0/layer.tar", "dup/layer.tar"],
    }]);
    let mut outer = tar::Builder::new(Vec::new());
    common::add(&mut outer, &config_name, &config);
    common::add(&mut outer, "l0/layer.tar", layers[0]);
    common::add(&mut outer, "l1/layer.tar", layers[1]);
    // As older `docker save` links a repeated layer.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    outer
        .append_link(&mut h, "dup/layer.tar", "../l1/layer.tar")
        .unwrap();
    common::add(&mut outer, "manifest.json", manifest.to_string().as_bytes());
    outer.into_inner().unwrap()
}

/// An OCI layout in `dir`: gzip and zstd layers, an index listing an arm64
/// image (whose layer is missing, so taking it would fail) and the amd64 one.
fn oci_layout(dir: &Path, layers: &[&[u8]]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        serde_json::json!({"digest": format!("sha256:{hex}"), "size": bytes.len()})
    };
    let compressed = [common::gzip(layers[0]), common::zstd(layers[1])];
    let mut l0 = put(&compressed[0]);
    l0["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    let mut l1 = put(&compressed[1]);
    l1["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
    let config = put(&config_json(layers));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [l0, l1],
    });
    let mut amd64 = put(manifest.to_string().as_bytes());
    amd64["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    amd64["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let arm_manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": config,
        "layers": [{"digest": format!("sha256:{}", "0".repeat(64)), "size": 1}],
    });
    let mut arm64 = put(arm_manifest.to_string().as_bytes());
    arm64["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [arm64, amd64]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn docker_save_archive_becomes_an_image() {
    if !root_or_skip("docker_save_archive_becomes_an_image") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, top) = (base_layer(), top_layer());
    let archive = tmp.path().join("image.tar");
    std::fs::write(&archive, docker_save(&[&base, &top])).unwrap();
    check_image(&archive, &tmp.path().join("work"));
}

#[test]
fn oci_layout_directory_and_tar_become_images() {
    if !root_or_skip("oci_layout_directory_and_tar_become_images") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, top) = (base_layer(), top_layer());
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &[&base, &top]);
    check_image(&layout, &tmp.path().join("work"));

    let mut outer = tar::Builder::new(Vec::new());
    outer.append_dir_all(".", &layout).unwrap();
    let archive = tmp.path().join("layout.tar");
    std::fs::write(&archive, outer.into_inner().unwrap()).unwrap();
    check_image(&archive, &tmp.path().join("work2"));

    // A damaged blob is caught by its digest.
    let manifest_blob = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == common::zstd(&top))
        .unwrap();
    let mut bytes = std::fs::read(&manifest_blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&manifest_blob, bytes).unwrap();
    let err = prepare(&layout, &tmp.path().join("work3")).unwrap_err();
    assert!(
        matches!(
            err,
            ImageFsError::Oci(OciError::DigestMismatch { .. })
                | ImageFsError::Oci(OciError::Layer { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn hostile_layers_write_nothing_outside_their_root() {
    if !root_or_skip("hostile_layers_write_nothing_outside_their_root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), "keep me").unwrap();
    let before = walk(tmp.path());
    let outside_abs = outside.to_str().unwrap().to_string();

    let refused = [
        (
            "parent",
            LayerTar::default()
                .file("../escape", 0o644, (0, 0), b"x")
                .finish(),
            "`..`",
        ),
        (
            "deep parent",
            LayerTar::default()
                .file("a/../../escape", 0o644, (0, 0), b"x")
                .finish(),
            "`..`",
        ),
        (
            "absolute",
            LayerTar::default()
                .file("/tmp/escape", 0o644, (0, 0), b"x")
                .finish(),
            "absolute",
        ),
        (
            "hard link out",
            LayerTar::default().hardlink("pw", "/etc/passwd").finish(),
            "absolute",
        ),
        (
            "hard link up",
            LayerTar::default()
                .hardlink("pw", "../outside/victim")
                .finish(),
            "`..`",
        ),
        (
            "whiteout up",
            LayerTar::default().marker(".wh..").finish(),
            "whiteout",
        ),
    ];
    for (what, layer_bytes, why) in refused {
        let root = tempfile::tempdir_in(tmp.path()).unwrap();
        let err = layer::apply(&layer_bytes[..], root.path()).unwrap_err();
        assert!(err.to_string().contains(why), "{what}: {err}");
    }

    // Symlinks out of the root are followed as the container would: inside.
    let followed = LayerTar::default()
        .symlink("evil", &outside_abs)
        .file("evil/pwned", 0o644, (0, 0), b"x")
        .marker("evil/.wh.victim")
        .symlink("up", "../../../../../../../..")
        .file(&format!("up{outside_abs}/pwned2"), 0o644, (0, 0), b"x")
        .symlink("victim-link", &format!("{outside_abs}/victim"))
        .file(
            "victim-link",
            0o644,
            (0, 0),
            b"replaced the link, not the file",
        )
        .hardlink("hl", "evil/victim-missing-here")
        .finish();
    let root = tempfile::tempdir_in(tmp.path()).unwrap();
    let err = layer::apply(&followed[..], root.path()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let inside = root.path().join(outside_abs.trim_start_matches('/'));
    assert!(inside.join("pwned").is_file() && inside.join("pwned2").is_file());
    assert!(
        std::fs::symlink_metadata(root.path().join("victim-link"))
            .unwrap()
            .is_file()
    );
    drop(root);
    assert_eq!(
        before,
        walk(tmp.path()),
        "something outside the root changed"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("victim")).unwrap(),
        "keep me"
    );

    // Through the whole pipeline, as one clear error.
    let archive = tmp.path().join("hostile.tar");
    let hostile = LayerTar::default()
        .file("../escape", 0o644, (0, 0), b"x")
        .finish();
    std::fs::write(&archive, docker_save(&[&base_layer(), &hostile])).unwrap();
    let err = prepare(&archive, &tmp.path().join("work")).unwrap_err();
    let line = err.to_string();
    assert!(line.starts_with("layer 2 of 2 (dup/layer.tar): "), "{line}");
    assert!(line.contains("hostile"), "{line}");
    assert!(!tmp.path().join("escape").exists() && !tmp.path().join("work/escape").exists());
}

#[test]
fn oci_archive_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    // Two images in one docker save.
    let mut outer = tar::Builder::new(Vec::new());
    let one = serde_json::json!({"Config": "c.json", "Layers": []});
    common::add(
        &mut outer,
        "manifest.json",
        serde_json::json!([one, one]).to_string().as_bytes(),
    );
    let two = tmp.path().join("two.tar");
    std::fs::write(&two, outer.into_inner().unwrap()).unwrap();
    assert_eq!(detect(&two).unwrap(), Source::OciArchive);
    if root_or_skip("oci_archive_errors_are_clear (import part)") {
        let err = prepare(&two, &tmp.path().join("work")).unwrap_err();
        assert!(err.to_string().contains("holds 2 images"), "{err}");
        // A config beyond the archive format's bounds.
        let env: Vec<String> = (0..300).map(|i| format!("V{i}=x")).collect();
        let config = serde_json::json!({"config": {"Env": env}});
        let mut outer = tar::Builder::new(Vec::new());
        common::add(&mut outer, "c.json", config.to_string().as_bytes());
        let one = serde_json::json!({"Config": "c.json", "Layers": []});
        common::add(
            &mut outer,
            "manifest.json",
            serde_json::json!([one]).to_string().as_bytes(),
        );
        let big = tmp.path().join("big.tar");
        std::fs::write(&big, outer.into_inner().unwrap()).unwrap();
        let err = prepare(&big, &tmp.path().join("work")).unwrap_err();
        assert!(err.to_string().contains("Env has 300 entries"), "{err}");
        // A layer the manifest names but the archive lacks.
        let mut outer = tar::Builder::new(Vec::new());
        common::add(&mut outer, "c.json", b"{}");
        let one = serde_json::json!({"Config": "c.json", "Layers": ["gone/layer.tar"]});
        common::add(
            &mut outer,
            "manifest.json",
            serde_json::json!([one]).to_string().as_bytes(),
        );
        let gone = tmp.path().join("gone.tar");
        std::fs::write(&gone, outer.into_inner().unwrap()).unwrap();
        let err = prepare(&gone, &tmp.path().join("work")).unwrap_err();
        assert!(err.to_string().contains("has no gone/layer.tar"), "{err}");
    }
}
