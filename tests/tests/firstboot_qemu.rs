//! `shoal-agent firstboot` in a QEMU (TCG) node: a busybox OS built with
//! `shoal image build`, given the static agent and an rc.local hook by
//! `shoal image customize`, deployed offline with `shoal image deploy` to
//! a disk file and booted from it on a tap of the bed's bridge. At boot
//! the agent asks `shoal server`'s metadata service (169.254.169.254 in
//! the server's namespace); then the test logs in on the serial console as
//! root with the initial password the owner was shown (a wrong one is
//! refused first) and finds its hostname, SSH key and user-data's mark.
//! Needs root and `make deps`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_tests::netbed::NetBed;
use shoal_tests::osimage::{self, busybox_tree, kernel, script};
use shoal_tests::*;

const METADATA_IP: &str = "169.254.169.254";
const NODE_IP: &str = "10.99.0.20";
const MAC: &str = "52:54:00:fb:00:01";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@desk";
/// Firmware, boot loader, kernel, init and first boot under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The virtio disk and network drivers, in load order: the image's
/// initrd brings up the NIC for first boot.
const MODULES: [&str; 9] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The OS: init brings up the network at the node's address, runs
/// /etc/rc.local (where customize puts first boot), then a getty on ttyS0.
fn rootfs(bed: &Bed) -> PathBuf {
    let root = bed.path("rootfs");
    let applets = [
        "sh", "mount", "echo", "poweroff", "sync", "ip", "hostname", "getty", "login", "cat", "mkdir", "sleep", "id",
        "ls", "grep",
    ];
    busybox_tree(&root, &applets);
    for d in ["root", "var/lib", "var/log", "usr/local/sbin"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    script(
        &root.join("sbin/init"),
        &format!(
            "#!/bin/sh\nexport PATH=/bin:/sbin:/usr/bin:/usr/local/sbin\n\
             mount -t proc proc /proc\nmount -t devtmpfs dev /dev\nmount -t sysfs sys /sys\nmount -o remount,rw /\n\
             ip link set lo up\nip link set eth0 up\nip addr add {NODE_IP}/24 dev eth0\n\
             ip route add {METADATA_IP}/32 dev eth0\n\
             /etc/rc.local >/dev/console 2>&1\necho SHOAL-RC-LOCAL-DONE >/dev/console\n\
             while true; do getty -L 115200 ttyS0 vt100; done\n"
        ),
    );
    script(&root.join("etc/rc.local"), "#!/bin/sh\nexit 0\n");
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    fs::write(root.join("etc/hostname"), "template\n").unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1\tlocalhost\n").unwrap();
    root
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The serial console: everything read so far, and the socket to type on.
struct Console {
    seen: Arc<Mutex<String>>,
    sock: UnixStream,
    start: Instant,
}

impl Console {
    fn connect(path: &Path) -> Console {
        let start = Instant::now();
        let sock = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("the serial console socket: {e}"),
            }
        };
        let seen = Arc::new(Mutex::new(String::new()));
        let (mut r, s2) = (sock.try_clone().unwrap(), Arc::clone(&seen));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Console { seen, sock, start }
    }

    /// Waits for `what` to appear after byte `from`; returns where it ends.
    fn wait(&self, what: &str, from: usize) -> usize {
        loop {
            let text = self.seen.lock().unwrap().clone();
            if let Some(i) = text.get(from..).and_then(|t| t.find(what)) {
                return from + i + what.len();
            }
            assert!(self.start.elapsed() < BOOT_TIMEOUT, "no {what:?} on the console within {BOOT_TIMEOUT:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn type_line(&mut self, line: &str) {
        self.sock.write_all(format!("{line}\r").as_bytes()).unwrap();
    }

    fn text(&self) -> String {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn firstboot_in_a_qemu_node_sets_the_password_for_a_console_login_and_the_keys() {
    let bed = Bed::new();
    fs::create_dir_all(bed.store()).unwrap();
    let (vmlinuz, version) = kernel();
    let root = rootfs(&bed);
    let initrd = osimage::initrd_with(&bed, &version, &MODULES);
    let (r, k, i) = (root.to_str().unwrap(), vmlinuz.to_str().unwrap(), initrd.to_str().unwrap());
    bed.ok(&[
        "image",
        "build",
        "--rootfs",
        r,
        "--kernel",
        k,
        "--initrd",
        i,
        "--size",
        "96M",
        "--out",
        "fb",
        "--version",
        "1",
    ]);
    let agent = static_agent_bin().to_str().unwrap().to_string();
    bed.ok(&["image", "customize", "fb:1", "--agent", &agent, "--hook", "rc-local", "--version", "2"]);
    let disk = bed.path("node.img");
    bed.ok(&["image", "deploy", "fb:2", disk.to_str().unwrap()]);

    // The server, with the node registered at its address.
    bed.ok(&["project", "create", "lab"]);
    let token = bed.ok(&["token", "create", "--project", "lab"]).trim().to_string();
    let mut net = NetBed::new(0);
    let srv = net.server.clone();
    sh(srv.command("ip").args(["addr", "add", &format!("{METADATA_IP}/32"), "dev", "eth0"]));
    let mut server = srv.command(shoal_bin());
    server
        .args(["server", "--listen", &format!("{}:4870", srv.addr), "--metadata-listen", &format!("{METADATA_IP}:80")])
        .env("SHOAL_DATA_DIR", bed.store())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path("server.log")).unwrap()));
    net.spawn(server);
    let url = format!("http://{}:4870", srv.addr);
    let cli = |args: &[&str]| -> String {
        let start = Instant::now();
        loop {
            let out =
                srv.command(shoal_bin()).args(args).env("SHOAL_URL", &url).env("SHOAL_TOKEN", &token).output().unwrap();
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
            // The server may still be starting.
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "shoal {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    cli(&["node", "register", "pc0", "--mac", MAC, "--type", "qemu", "--ip", NODE_IP]);
    let keys = bed.path("keys");
    fs::write(&keys, format!("{KEY}\n")).unwrap();
    let ud = bed.path("ud.sh");
    fs::write(&ud, "#!/bin/sh\necho USER-DATA-RAN-$(hostname) > /root/user-data-mark\n").unwrap();
    cli(&["node", "metadata", "set", "pc0", "--ssh-keys", keys.to_str().unwrap(), "--user-data", ud.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&cli(&["--json", "node", "instance", "pc0"])).unwrap();
    let password = v["initial_password"].as_str().unwrap().to_string();

    net.add_tap("tapfb0");
    let sock = bed.path("console.sock");
    let mut q = net.hub_command("qemu-system-x86_64");
    q.args(["-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=s0,path={},server=on,wait=off,logfile={}",
            sock.display(),
            bed.path("console.log").display()
        ))
        .args(["-serial", "chardev:s0"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .args(["-netdev", "tap,id=n0,ifname=tapfb0,script=no,downscript=no"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path("qemu.err")).unwrap()));
    let _qemu = Qemu(q.spawn().expect("qemu-system-x86_64 runs"));
    let mut con = Console::connect(&sock);
    let at = con.wait("SHOAL-RC-LOCAL-DONE", 0);
    let boot = con.text();
    assert!(boot.contains("shoal-firstboot: hostname pc0"), "{boot}");
    assert!(boot.contains("shoal-firstboot: initial password set for root"), "{boot}");
    eprintln!("booted and configured in {:.1} s (wall)", con.start.elapsed().as_secs_f64());

    // A wrong password is refused; the owner's logs in.
    let at = con.wait("login:", at);
    con.type_line("root");
    let at = con.wait("Password:", at);
    con.type_line("not-the-password");
    let at = con.wait("Login incorrect", at);
    let at = con.wait("login:", at);
    con.type_line("root");
    let at = con.wait("Password:", at);
    con.type_line(&password);
    std::thread::sleep(Duration::from_secs(2));
    con.type_line("echo LOGGED-IN-AS-$(id -u)-ON-$(hostname); cat /root/.ssh/authorized_keys /root/user-data-mark");
    let at = con.wait("LOGGED-IN-AS-0-ON-pc0", at);
    con.wait("USER-DATA-RAN-pc0", at);
    assert!(con.text()[at..].contains(KEY), "{}", con.text());
}
