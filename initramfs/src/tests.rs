use std::process::{Command, Stdio};

use super::*;

const PT_LOAD: u32 = 1;

/// A kernel tree in miniature: modules.dep, modules.builtin, and module
/// files plain, xz- and zstd-compressed.
fn kernel_tree(dir: &Path) {
    let dep = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko.zst: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/unrelated.ko:
";
    fs::write(dir.join("modules.dep"), dep).unwrap();
    fs::write(dir.join("modules.builtin"), "kernel/drivers/nvme/host/nvme.ko\n").unwrap();
    for (path, body) in [
        ("kernel/drivers/virtio/virtio_ring.ko", "ring"),
        ("kernel/drivers/virtio/virtio.ko", "virtio"),
        ("kernel/drivers/unrelated.ko", "unrelated"),
    ] {
        fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
        fs::write(dir.join(path), body).unwrap();
    }
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &b"pci"[..], &mut xz).unwrap();
    fs::write(dir.join("kernel/drivers/virtio/virtio_pci.ko.xz"), xz).unwrap();
    fs::create_dir_all(dir.join("kernel/drivers/net")).unwrap();
    fs::write(dir.join("kernel/drivers/net/virtio_net.ko.zst"), zstd::encode_all(&b"net"[..], 3).unwrap()).unwrap();
}

fn config(dir: &Path) -> BuildConfig {
    kernel_tree(dir);
    let agent = dir.join("shoal-agent");
    fs::write(&agent, elf::test_elf(&[PT_LOAD])).unwrap();
    let mut cfg = BuildConfig::new(dir.to_owned(), agent, KeyId([7; 32]));
    cfg.modules = ["virtio_pci", "virtio_net", "nvme", "e1000e"].iter().map(|m| ModuleName::new(m)).collect();
    cfg.level = 3;
    cfg
}

fn file<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("{path} missing"))
}

fn data<'a>(entries: &'a [Entry], path: &str) -> &'a [u8] {
    match &file(entries, path).kind {
        Kind::File(d) => d,
        other => panic!("{path} is {other:?}"),
    }
}

#[test]
fn the_archive_holds_init_the_key_and_modules_in_load_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (bytes, report) = build(&cfg).unwrap();
    let entries = read_archive(&bytes).unwrap();

    let init = file(&entries, "init");
    assert_eq!(init.perm, 0o755);
    assert_eq!(data(&entries, "init"), &fs::read(&cfg.agent).unwrap()[..]);
    assert_eq!(data(&entries, "etc/shoal/server.pub"), format!("{}\n", "07".repeat(32)).as_bytes());
    assert_eq!(file(&entries, "dev/console").kind, Kind::CharDev(5, 1));
    assert_eq!(file(&entries, "tmp").perm, 0o1777);

    let list = String::from_utf8(data(&entries, "etc/shoal/modules.load").to_vec()).unwrap();
    let want = [
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/net/virtio_net.ko",
    ];
    assert_eq!(list.lines().collect::<Vec<_>>(), want);
    assert_eq!(report.modules, want);
    // Stored uncompressed, whatever the tree had.
    assert_eq!(data(&entries, "lib/modules/kernel/drivers/virtio/virtio_pci.ko"), b"pci");
    assert_eq!(data(&entries, "lib/modules/kernel/drivers/net/virtio_net.ko"), b"net");
    assert!(!entries.iter().any(|e| e.path.contains("unrelated")));
    assert_eq!(report.builtin, ["nvme"]);
    assert_eq!(report.absent, ["e1000e"]);
    assert_eq!(report.entries, entries.len());
    assert_eq!(report.compressed_bytes, bytes.len() as u64);
}

#[test]
fn entries_are_sorted_and_every_parent_directory_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&config(dir.path())).unwrap();
    let entries = read_archive(&bytes).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    for (i, e) in entries.iter().enumerate() {
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            let at = paths.iter().position(|p| *p == parent).unwrap_or_else(|| panic!("no {parent}"));
            assert!(at < i && entries[at].kind == Kind::Dir, "{parent} before {}", e.path);
        }
    }
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (a, _) = build(&cfg).unwrap();
    // Newer times on every input change nothing.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&cfg.agent, fs::read(&cfg.agent).unwrap()).unwrap();
    let (b, _) = build(&cfg).unwrap();
    assert_eq!(a, b);
}

#[test]
fn busybox_comes_with_a_shell_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let bb = dir.path().join("busybox");
    fs::write(&bb, b"busybox").unwrap();
    cfg.busybox = Some(bb);
    let (bytes, report) = build(&cfg).unwrap();
    let entries = read_archive(&bytes).unwrap();
    assert_eq!(data(&entries, "bin/busybox"), b"busybox");
    assert_eq!(file(&entries, "bin/sh").kind, Kind::Symlink("busybox".into()));
    assert_eq!(report.busybox_bytes, Some(7));
}

#[test]
fn a_dynamically_linked_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    fs::write(&cfg.agent, elf::test_elf(&[PT_LOAD, 3])).unwrap();
    assert!(matches!(build(&cfg), Err(BuildError::Agent { source: elf::ElfError::Dynamic, .. })));
}

#[test]
fn gzip_modules_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    fs::write(dir.path().join("modules.dep"), "kernel/a.ko.gz:\n").unwrap();
    fs::create_dir_all(dir.path().join("kernel")).unwrap();
    fs::write(dir.path().join("kernel/a.ko.gz"), b"").unwrap();
    cfg.modules = vec![ModuleName::new("a")];
    assert!(matches!(build(&cfg), Err(BuildError::ModuleFormat(_))));
}

/// GNU cpio, the reference reader, lists what we wrote.
#[test]
fn gnu_cpio_reads_the_archive() {
    if Command::new("cpio").arg("--version").output().is_err() {
        eprintln!("cpio not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&config(dir.path())).unwrap();
    let raw = zstd::stream::decode_all(&bytes[..]).unwrap();
    let mut child = Command::new("cpio")
        .args(["-t", "-v", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || io::Write::write_all(&mut stdin, &raw));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("crw-------") && l.ends_with(" dev/console")), "{listing}");
    assert!(listing.contains("lib/modules/kernel/drivers/net/virtio_net.ko"), "{listing}");
}
