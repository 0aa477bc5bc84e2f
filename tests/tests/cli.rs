//! The command line: help that explains each option, JSON for scripts,
//! names and versions.

use shoal_tests::*;

#[test]
fn help_explains_every_image_command_and_option() {
    let bed = Bed::new();
    let top = bed.ok(&["image", "--help"]);
    for cmd in ["capture", "deploy", "verify", "info", "list", "import", "export", "delete", "gc"] {
        assert!(top.contains(cmd), "image --help lacks {cmd}");
    }
    let deploy = bed.ok(&["image", "deploy", "--help"]);
    for opt in ["--partition", "--free", "leave", "zero", "discard", "--threads"] {
        assert!(deploy.contains(opt), "deploy --help lacks {opt}");
    }
    let capture = bed.ok(&["image", "capture", "--help"]);
    for opt in ["--partition", "--name", "--version", "--level", "allocated"] {
        assert!(capture.contains(opt), "capture --help lacks {opt}");
    }
    assert!(bed.ok(&["--help"]).contains("Exit status"));
}

#[test]
fn bad_arguments_exit_2() {
    let bed = Bed::new();
    assert_eq!(bed.shoal(&["image", "deploy"]).status.code(), Some(2));
    assert_eq!(bed.shoal(&["image", "capture", "x", "--name", "n", "--level", "40"]).status.code(), Some(2));
}

#[test]
fn images_resolve_by_id_prefix_name_and_version_in_json() {
    let bed = Bed::new();
    let disk = bed.path("d.img");
    std::fs::File::create(&disk).unwrap().set_len(32 * MIB).unwrap();
    mkfs_ext4(&disk, 0, 32 * MIB, None, &[]);
    let v1 = bed.capture(&disk, "web", &["--version", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let v2 = bed.capture(&disk, "web", &["--version", "2", "--base", "web:1", "--description", "second"]);
    let list = bed.json(&["image", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let newest = bed.json(&["image", "info", "web"]);
    assert_eq!(newest["manifest"]["id"], v2["id"]);
    assert_eq!(newest["manifest"]["base"], v1["id"]);
    assert_eq!(newest["manifest"]["description"], "second");
    let old = bed.json(&["image", "info", "web:1"]);
    assert_eq!(old["manifest"]["id"], v1["id"]);
    let prefix = &v1["id"].as_str().unwrap()[..8];
    assert_eq!(bed.json(&["image", "info", prefix])["manifest"]["id"], v1["id"]);
    let missing = bed.shoal(&["image", "info", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no image named nope"));
    // Text output names the image too.
    assert!(bed.ok(&["image", "list"]).contains("web"));
}

#[test]
fn key_prints_the_same_signing_key_every_time() {
    let bed = Bed::new();
    let a = bed.ok(&["key"]);
    assert_eq!(a.trim().len(), 64, "{a}");
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(bed.ok(&["key"]), a);
}
