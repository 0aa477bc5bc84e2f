//! The scrub's file selection and its edits, on plain directory trees.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::files::{select, Op, Root};
use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// A tree with one of everything the scrub looks for, and things it must
/// leave alone.
fn tree(root: &Path) {
    write(root, "etc/ssh/ssh_host_ed25519_key", "secret");
    write(root, "etc/ssh/ssh_host_ed25519_key.pub", "public");
    write(root, "etc/ssh/sshd_config", "Port 22\n");
    write(root, "root/.bash_history", "ls\n");
    write(root, "root/.profile", "keep\n");
    write(root, "home/alice/.zsh_history", "x\n");
    write(root, "home/alice/.viminfo", "x\n");
    write(root, "home/alice/notes.txt", "keep\n");
    write(root, "var/log/syslog", "boot\n");
    write(root, "var/log/apt/history.log", "install\n");
    write(root, "var/log/empty.log", "");
    write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(root, "var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(root, "var/lib/cloud/instances/i-1/user-data.txt", "#!/bin/sh\n");
    write(root, "var/lib/cloud/data/instance-id", "i-1\n");
    symlink("/var/lib/cloud/instances/i-1", root.join("var/lib/cloud/instance")).unwrap();
    write(root, "var/lib/cloud/scripts/per-boot/keep.sh", "keep\n");
    write(root, "etc/shadow", "root:$6$s$h:1:0:99999:7:::\ndaemon:*:1:0:99999:7:::\n");
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
}

#[test]
fn selection_finds_each_category_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let actions = select(&Root::open(dir.path()).unwrap()).unwrap();
    let got: Vec<(Category, String, Op)> =
        actions.iter().map(|a| (a.category, a.path.display().to_string(), a.op)).collect();
    let want = [
        (Category::SshHostKeys, "etc/ssh/ssh_host_ed25519_key", Op::Remove),
        (Category::SshHostKeys, "etc/ssh/ssh_host_ed25519_key.pub", Op::Remove),
        (Category::ShellHistory, "root/.bash_history", Op::Remove),
        (Category::ShellHistory, "home/alice/.zsh_history", Op::Remove),
        (Category::ShellHistory, "home/alice/.viminfo", Op::Remove),
        (Category::Logs, "var/log/syslog", Op::Truncate),
        (Category::Logs, "var/log/apt/history.log", Op::Truncate),
        (Category::MachineId, "etc/machine-id", Op::Truncate),
        (Category::MachineId, "var/lib/dbus/machine-id", Op::Remove),
        (Category::CloudInit, "var/lib/cloud/instances", Op::Remove),
        (Category::CloudInit, "var/lib/cloud/instance", Op::Remove),
        (Category::CloudInit, "var/lib/cloud/data", Op::Remove),
        (Category::Passwords, "etc/shadow", Op::LockPasswords),
    ];
    let want: Vec<(Category, String, Op)> = want.iter().map(|(c, p, o)| (*c, p.to_string(), *o)).collect();
    assert_eq!(got, want);
}

#[test]
fn scrubbing_edits_the_tree_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    tree(r);
    let report = scrub_tree(r, &ScrubConfig::default()).unwrap();
    assert_eq!(report.done[&Category::Logs].len(), 2);
    assert_eq!(report.locked_accounts, ["root"]);
    assert!(!r.join("etc/ssh/ssh_host_ed25519_key").exists());
    assert!(!r.join("root/.bash_history").exists());
    assert!(!r.join("var/lib/cloud/instances").exists());
    assert!(fs::symlink_metadata(r.join("var/lib/cloud/instance")).is_err());
    assert_eq!(fs::read(r.join("var/log/syslog")).unwrap(), b"");
    assert!(r.join("var/log/apt").is_dir());
    assert_eq!(fs::read(r.join("etc/machine-id")).unwrap(), b"");
    assert_eq!(fs::read_to_string(r.join("etc/shadow")).unwrap(), "root:!:1:0:99999:7:::\ndaemon:*:1:0:99999:7:::\n");
    for keep in
        ["etc/ssh/sshd_config", "root/.profile", "home/alice/notes.txt", "var/lib/cloud/scripts/per-boot/keep.sh"]
    {
        assert!(r.join(keep).is_file(), "{keep}");
    }
    // A second scrub finds nothing left to do.
    assert!(scrub_tree(r, &ScrubConfig::default()).unwrap().done.is_empty());
}

#[test]
fn kept_categories_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let cfg = ScrubConfig { keep: vec![Category::Passwords, Category::Logs] };
    let report = scrub_tree(dir.path(), &cfg).unwrap();
    assert!(!report.done.contains_key(&Category::Passwords) && !report.done.contains_key(&Category::Logs));
    assert!(fs::read_to_string(dir.path().join("etc/shadow")).unwrap().contains("$6$s$h"));
    assert_eq!(fs::read(dir.path().join("var/log/syslog")).unwrap(), b"boot\n");
}

#[test]
fn symlinks_in_the_image_never_reach_the_host() {
    // The image's /etc/ssh and /var/log point at absolute paths that, on
    // the host, hold files the scrub would otherwise remove or truncate.
    let host = tempfile::tempdir().unwrap();
    write(host.path(), "ssh/ssh_host_rsa_key", "host secret");
    write(host.path(), "log/host.log", "host log");
    let image = tempfile::tempdir().unwrap();
    fs::create_dir_all(image.path().join("etc")).unwrap();
    fs::create_dir_all(image.path().join("var")).unwrap();
    symlink(host.path().join("ssh"), image.path().join("etc/ssh")).unwrap();
    symlink(host.path().join("log"), image.path().join("var/log")).unwrap();
    symlink(host.path().join("log/host.log"), image.path().join("etc/shadow")).unwrap();
    let report = scrub_tree(image.path(), &ScrubConfig::default()).unwrap();
    assert!(report.done.is_empty(), "{report:?}");
    assert_eq!(fs::read_to_string(host.path().join("ssh/ssh_host_rsa_key")).unwrap(), "host secret");
    assert_eq!(fs::read_to_string(host.path().join("log/host.log")).unwrap(), "host log");
}

#[test]
fn categories_parse_by_name() {
    for c in Category::ALL {
        assert_eq!(c.name().parse::<Category>(), Ok(c));
    }
    assert!("ssh".parse::<Category>().unwrap_err().contains("ssh-host-keys"));
}
