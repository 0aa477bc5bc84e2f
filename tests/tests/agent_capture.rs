//! `shoal-agent capture` to a running `shoal server` (on loopback): the
//! scrub before capture, uploads of only the chunks the server lacks, the
//! server's checks on uploads, and `shoal-agent wipe`. Needs root (the
//! scrub mounts the filesystem through a loop device).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use shoal_tests::*;

fn server(bed: &Bed) -> Server {
    bed.server(0, &[])
}

fn agent(args: &[&str]) -> serde_json::Value {
    let out = Command::new(agent_bin()).args(args).arg("--json").stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "shoal-agent {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// A disk with an MBR and one ext4 partition holding a machine's state
/// and real files; returns the disk and the tree of real files.
fn machine_disk(bed: &Bed) -> (std::path::PathBuf, std::path::PathBuf) {
    let tree = bed.path("tree");
    write(&tree, "etc/ssh/ssh_host_ed25519_key", "PRIVATE KEY");
    write(&tree, "etc/ssh/sshd_config", "Port 22\n");
    write(&tree, "root/.bash_history", "secret command\n");
    write(&tree, "home/alice/.python_history", "x\n");
    write(&tree, "home/alice/plan.txt", "keep me\n");
    write(&tree, "var/log/syslog", "a log line\n");
    write(&tree, "var/log/nginx/access.log", "GET /\n");
    write(&tree, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(&tree, "var/lib/cloud/instances/i-1/obj.pkl", "state");
    write(&tree, "var/lib/cloud/data/instance-id", "i-1\n");
    write(&tree, "etc/shadow", "root:$6$salt$hash:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n");
    let real = tree.join("usr/share/real");
    real_files(&real, 8 * MIB);
    let disk = bed.path("disk.img");
    fs::File::create(&disk).unwrap().set_len(64 * MIB).unwrap();
    sfdisk(&disk, "label: dos\nstart=2048, type=83\n");
    let (start, size) = partition(&disk, 1);
    mkfs_ext4(&disk, start, size, Some(&tree), &[]);
    (disk, real)
}

#[test]
fn capture_scrubs_the_filesystem_and_the_deployed_image_has_no_secrets() {
    let bed = Bed::new();
    let srv = server(&bed);
    let (disk, real) = machine_disk(&bed);
    let r = agent(&["capture", "--server", &srv.url, "--name", "web", disk.to_str().unwrap()]);
    assert_eq!(r["scrub"], true, "{r}");
    let fs0 = &r["scrubbed"][0];
    assert_eq!(fs0["partition"], 1, "{r}");
    for (cat, n) in [("ssh-host-keys", 1), ("shell-history", 2), ("logs", 2), ("machine-id", 1), ("cloud-init", 2)] {
        assert_eq!(fs0["done"][cat].as_array().map(Vec::len), Some(n), "{cat}: {r}");
    }
    assert_eq!(fs0["locked_accounts"], serde_json::json!(["root"]), "{r}");
    assert!(r["uploaded_chunks"].as_u64().unwrap() > 0);

    // Deploy what the server stored, and read its filesystem back.
    let out = bed.path("deployed.img");
    bed.ok(&["image", "deploy", "web", out.to_str().unwrap()]);
    let (start, size) = partition(&out, 1);
    let fs_img = bed.path("fs.img");
    extract(&out, start, size, &fs_img);
    fsck(&fs_img);
    let files = bed.path("files");
    dump_files(&fs_img, &files);
    for gone in [
        "etc/ssh/ssh_host_ed25519_key",
        "root/.bash_history",
        "home/alice/.python_history",
        "var/lib/cloud/instances",
        "var/lib/cloud/data",
    ] {
        assert!(fs::symlink_metadata(files.join(gone)).is_err(), "{gone} survived the scrub");
    }
    for empty in ["var/log/syslog", "var/log/nginx/access.log", "etc/machine-id"] {
        assert_eq!(fs::read(files.join(empty)).unwrap(), b"", "{empty}");
    }
    let shadow = fs::read_to_string(files.join("etc/shadow")).unwrap();
    assert_eq!(shadow, "root:!:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n");
    assert_eq!(fs::read_to_string(files.join("home/alice/plan.txt")).unwrap(), "keep me\n");
    assert_eq!(fs::read_to_string(files.join("etc/ssh/sshd_config")).unwrap(), "Port 22\n");
    assert!(assert_same_files(&real, &files.join("usr/share/real")) > 10);
}

#[test]
fn no_scrub_leaves_the_source_untouched_and_a_second_capture_uploads_nothing() {
    let bed = Bed::new();
    let srv = server(&bed);
    let (disk, _) = machine_disk(&bed);
    let before = digest(&disk);
    let first = agent(&["capture", "--server", &srv.url, "--name", "raw", "--no-scrub", disk.to_str().unwrap()]);
    assert_eq!(digest(&disk), before, "--no-scrub wrote to the source");
    assert_eq!(first["scrub"], false);
    assert!(first["uploaded_chunks"].as_u64().unwrap() > 0);
    let second = agent(&["capture", "--server", &srv.url, "--name", "raw", "--no-scrub", disk.to_str().unwrap()]);
    assert_eq!(second["uploaded_chunks"], 0, "{second}");
    assert_ne!(first["image"], second["image"]);
    let part_img =
        agent(&["capture", "--server", &srv.url, "--name", "p1", "--no-scrub", "-p", "1", disk.to_str().unwrap()]);
    // The partition image restores the partition byte for byte.
    let (start, size) = partition(&disk, 1);
    let part = bed.path("part.img");
    extract(&disk, start, size, &part);
    let out = bed.path("out.img");
    bed.ok(&["image", "deploy", part_img["image"].as_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(digest(&out), digest(&part));
}

fn curl(args: &[&str]) -> (u32, String) {
    let out = sh(Command::new("curl").args(["-s", "-w", "\n%{http_code}"]).args(args));
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[test]
fn the_server_refuses_chunks_that_do_not_match_oversized_bodies_and_malformed_manifests() {
    let bed = Bed::new();
    let srv = server(&bed);
    let zero = "0".repeat(64);
    let url = format!("{}/v1/chunks/{zero}", srv.url);
    let (code, body) = curl(&["-X", "PUT", "--data-binary", "not the chunk", &url]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("BLAKE3"), "{body}");
    let (code, body) =
        curl(&["-X", "POST", "--data-binary", &format!("[\"{zero}\"]"), &format!("{}/v1/chunks/missing", srv.url)]);
    assert_eq!((code, body), (200, format!("[\"{zero}\"]")));
    let (code, body) = curl(&["-X", "POST", "--data-binary", "garbage", &format!("{}/v1/captures", srv.url)]);
    assert_eq!(code, 400, "{body}");
    let big = bed.path("big");
    fs::File::create(&big).unwrap().set_len(40 * MIB).unwrap();
    let (code, _) = curl(&["-X", "PUT", "--data-binary", &format!("@{}", big.display()), &url]);
    assert_eq!(code, 413);
}

#[test]
fn wipe_zeroes_or_discards_a_whole_disk_file() {
    let bed = Bed::new();
    for mode in ["zero", "discard"] {
        let disk = bed.path(&format!("{mode}.img"));
        fill_random(&disk, 0, 16 * MIB, 3);
        let r = agent(&["wipe", "--mode", mode, disk.to_str().unwrap()]);
        assert_eq!(r["bytes"], 16 * MIB, "{r}");
        assert!(fs::read(&disk).unwrap().iter().all(|&b| b == 0), "{mode} left data");
        assert_eq!(fs::metadata(&disk).unwrap().len(), 16 * MIB);
    }
}
