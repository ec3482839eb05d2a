//! Directories become deterministic EROFS images that mount with every
//! file, mode, owner and link intact; images are told apart by magic.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{CAP_NET_RAW, Mounted, assert_same_tree, root_or_skip, set_capability, walk};
use hyperos_imagefs::{FsType, ImageFsError, Source, detect, prepare};

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mknod(p.as_ptr(), mode, dev) }, 0);
}

type Step = Box<dyn Fn(&Path)>;

/// A small root filesystem with every kind of entry. `reverse` creates the
/// same tree in another order with other timestamps.
fn make_tree(root: &Path, reverse: bool) {
    let mut steps: Vec<Step> = vec![
        Box::new(|r| {
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::fs::write(r.join("etc/hostname"), "box\n").unwrap();
        }),
        Box::new(|r| {
            std::fs::create_dir_all(r.join("usr/bin")).unwrap();
            std::fs::write(r.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
            std::fs::set_permissions(r.join("usr/bin/tool"), PermissionsExt::from_mode(0o755))
                .unwrap();
            set_capability(&r.join("usr/bin/tool"), CAP_NET_RAW);
            std::fs::write(r.join("usr/bin/suid"), "suid").unwrap();
            std::fs::set_permissions(r.join("usr/bin/suid"), PermissionsExt::from_mode(0o4755))
                .unwrap();
            std::fs::write(r.join("usr/bin/sgid"), "sgid").unwrap();
            lchown(r.join("usr/bin/sgid"), Some(0), Some(50)).unwrap();
            std::fs::set_permissions(r.join("usr/bin/sgid"), PermissionsExt::from_mode(0o2755))
                .unwrap();
        }),
        Box::new(|r| {
            std::fs::create_dir_all(r.join("usr/lib")).unwrap();
            let big: Vec<u8> = (0..300_000u32)
                .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
                .collect();
            std::fs::write(r.join("usr/lib/big.so"), &big).unwrap();
            std::fs::write(r.join("usr/lib/text"), "line\n".repeat(20_000)).unwrap();
            std::fs::hard_link(r.join("usr/lib/big.so"), r.join("usr/lib/big.so.1")).unwrap();
            std::fs::write(r.join("usr/lib/empty"), "").unwrap();
        }),
        Box::new(|r| {
            symlink("usr/lib", r.join("lib")).unwrap();
            symlink("/etc/hostname", r.join("abs-link")).unwrap();
            symlink("nowhere", r.join("dangling")).unwrap();
        }),
        Box::new(|r| {
            std::fs::create_dir_all(r.join("tmp")).unwrap();
            std::fs::set_permissions(r.join("tmp"), PermissionsExt::from_mode(0o1777)).unwrap();
            std::fs::create_dir_all(r.join("home/user")).unwrap();
            std::fs::write(r.join("home/user/.profile"), "PS1='$ '\n").unwrap();
            std::fs::set_permissions(
                r.join("home/user/.profile"),
                PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            lchown(r.join("home/user/.profile"), Some(1000), Some(1000)).unwrap();
            std::fs::set_permissions(r.join("home/user"), PermissionsExt::from_mode(0o700))
                .unwrap();
            lchown(r.join("home/user"), Some(1000), Some(1000)).unwrap();
        }),
        Box::new(|r| {
            std::fs::create_dir_all(r.join("run")).unwrap();
            mknod(&r.join("run/fifo"), libc::S_IFIFO | 0o620, 0);
            std::fs::create_dir_all(r.join("dev")).unwrap();
            mknod(
                &r.join("dev/null"),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3),
            );
            std::fs::set_permissions(r.join("dev/null"), PermissionsExt::from_mode(0o666)).unwrap();
        }),
    ];
    if reverse {
        steps.reverse();
    }
    for step in steps {
        step(root);
    }
    std::fs::set_permissions(root, PermissionsExt::from_mode(0o755)).unwrap();
    if reverse {
        // Other timestamps everywhere: they must not matter.
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567_890);
        for dir in [
            "", "etc", "usr", "usr/bin", "usr/lib", "tmp", "home", "run", "dev",
        ] {
            let f = std::fs::File::open(root.join(dir)).unwrap();
            f.set_modified(when).unwrap();
        }
        let f = std::fs::File::options()
            .write(true)
            .open(root.join("etc/hostname"))
            .unwrap();
        f.set_modified(when).unwrap();
    }
}

#[test]
fn directory_builds_a_deterministic_erofs_that_mounts_intact() {
    if !root_or_skip("directory_builds_a_deterministic_erofs_that_mounts_intact") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, work) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("work"),
    );
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    make_tree(&a, false);
    make_tree(&b, true);
    assert_eq!(walk(&a), walk(&b), "the fixture trees should be the same");

    assert_eq!(detect(&a).unwrap(), Source::Directory);
    let first = prepare(&a, &work).unwrap();
    assert_eq!(first.fs_type, FsType::Erofs);
    assert!(first.temporary && first.oci.is_none());
    assert!(first.path.starts_with(&work));
    assert_eq!(first.len, std::fs::metadata(&first.path).unwrap().len());
    let second = prepare(&a, &work).unwrap();
    let other_order = prepare(&b, &work).unwrap();
    assert_ne!(first.path, second.path);
    let bytes = std::fs::read(&first.path).unwrap();
    assert!(
        bytes == std::fs::read(&second.path).unwrap(),
        "two builds differ"
    );
    assert!(
        bytes == std::fs::read(&other_order.path).unwrap(),
        "the same tree made in another order with other mtimes gives other bytes"
    );
    assert_eq!(detect(&first.path).unwrap(), Source::Image(FsType::Erofs));

    let mounted = Mounted::new(&first.path, "erofs");
    let mut expected = walk(&a);
    let mut actual = walk(mounted.path());
    // The image root is the mount point; compare only what is inside.
    expected.remove("");
    actual.remove("");
    assert_same_tree(&expected, &actual);
    // Spot checks that the comparison really looked at these.
    let suid = &actual["usr/bin/suid"];
    assert_eq!(suid.mode, 0o4755);
    assert_eq!(
        actual["usr/bin/tool"].capability.as_deref(),
        Some(CAP_NET_RAW)
    );
    assert_eq!(actual["home/user/.profile"].uid, 1000);
    assert_eq!(
        actual["usr/lib/big.so.1"].link_group.as_deref(),
        Some("usr/lib/big.so")
    );
    assert_eq!(actual["abs-link"].kind, "symlink -> /etc/hostname");
    assert_eq!(actual["run/fifo"].kind, "fifo");
    assert_eq!(
        actual["dev/null"].kind,
        format!("char {}", libc::makedev(1, 3))
    );
    let meta = std::fs::symlink_metadata(mounted.path().join("etc/hostname")).unwrap();
    assert_eq!(
        meta.modified().unwrap(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(hyperos_imagefs::erofs::timestamp())
    );
}

#[test]
fn work_dir_inside_the_source_is_refused() {
    if !root_or_skip("work_dir_inside_the_source_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("f"), "x").unwrap();
    let err = prepare(tmp.path(), &tmp.path().join("work")).unwrap_err();
    assert!(err.to_string().contains("inside"), "{err}");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn images_are_detected_by_magic_and_shared_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello"), "hello\n").unwrap();

    // Names say nothing: every image is called "image.bin".
    let ext4 = tmp.path().join("ext4/image.bin");
    std::fs::create_dir(ext4.parent().unwrap()).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&src)
        .arg(&ext4)
        .arg("4M"));
    let squash = tmp.path().join("squash/image.bin");
    std::fs::create_dir(squash.parent().unwrap()).unwrap();
    run(Command::new("mksquashfs")
        .arg(&src)
        .arg(&squash)
        .args(["-noappend", "-quiet"]));
    let erofs = tmp.path().join("erofs/image.bin");
    std::fs::create_dir(erofs.parent().unwrap()).unwrap();
    run(Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&erofs)
        .arg(&src));

    for (path, fs_type) in [
        (&ext4, FsType::Ext4),
        (&squash, FsType::Squashfs),
        (&erofs, FsType::Erofs),
    ] {
        assert_eq!(
            detect(path).unwrap(),
            Source::Image(fs_type),
            "{}",
            path.display()
        );
        let prepared = prepare(path, &tmp.path().join("work")).unwrap();
        assert_eq!(prepared.path, *path);
        assert_eq!(prepared.fs_type, fs_type);
        assert_eq!(prepared.len, std::fs::metadata(path).unwrap().len());
        assert!(!prepared.temporary && prepared.oci.is_none());
    }

    let not_shareable = |name: &str, bytes: &[u8], why: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = detect(&path).unwrap_err();
        assert!(matches!(err, ImageFsError::NotShareable { .. }), "{err:?}");
        let line = err.to_string();
        assert!(
            line.starts_with(&format!(
                "{} is not a filesystem image (ext4, EROFS, squashfs), a directory, or an OCI/Docker image archive: ",
                path.display()
            )),
            "{line}"
        );
        assert!(line.contains(why), "{line}");
        assert!(!line.contains('\n'));
        let err = prepare(&path, &tmp.path().join("work")).unwrap_err();
        assert!(matches!(err, ImageFsError::NotShareable { .. }));
    };
    not_shareable("junk.img", &[0x42; 8192], "match none");
    not_shareable("empty.img", b"", "empty");
    not_shareable("short.img", b"hsq", "match none");
    not_shareable("image.tar.gz", &common::gzip(b"tar"), "decompress it first");
    let mut plain = tar::Builder::new(Vec::new());
    common::add(&mut plain, "README", b"not an image");
    not_shareable(
        "plain.tar",
        &plain.into_inner().unwrap(),
        "without manifest.json",
    );

    let err = detect(&tmp.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("could not read"), "{err}");
}
