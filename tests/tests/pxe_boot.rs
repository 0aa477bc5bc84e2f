//! Real firmware booting through Shoal: QEMU (TCG) nodes with QEMU's own
//! iPXE ROM, on a tap port of the test bed's bridge, PXE-boot through
//! `shoal server`'s DHCP, TFTP and HTTP into the Debian cloud kernel and a
//! test initramfs that prints a marker and its command line.
//!
//! - BIOS (SeaBIOS): the ROM is iPXE itself, so it asks with user class
//!   "iPXE" and gets the script URL straight away; no TFTP.
//! - UEFI (OVMF): OVMF's own PXE client asks (no user class), gets
//!   ipxe.efi over TFTP, which asks again and gets the script.
//! - proxyDHCP: dnsmasq is the site's DHCP server (addresses only) and
//!   Shoal answers as proxyDHCP on ports 67 and 4011, to QEMU's iPXE ROM
//!   (the node's decision is `menu` with a default image and a 1 s
//!   timeout) and to OVMF's PXE client.
//! - `local`: iPXE sanboots the node's disk, whose boot sector prints its
//!   own marker.
//! - A download that fails (the initramfs is missing at first) is retried
//!   by the script until it works.
//!
//! QEMU boots one at a time (a mutex), since TCG on two cores is slow
//! enough alone. Everything goes with the bed and the temporary directory.

use std::fs;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_tests::netbed::{Host, NetBed};
use shoal_tests::pxeboot::{kernel, write_initramfs, write_local_disk, Firmware, QemuNode, LOCAL_MARKER, MARKER};
use shoal_tests::{shoal_bin, Bed};

static QEMU: Mutex<()> = Mutex::new(());

const MAC: &str = "52:54:00:99:00:01";
const NODE_IP: &str = "10.99.0.50";
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// Starts `shoal server` in the bed's server namespace with the test
/// initramfs as the agent (written later by the test unless
/// `initrd_now`), and waits until it serves.
fn start_shoal(bed: &mut NetBed, dir: &Bed, nodes: &str, extra: &[&str], initrd_now: bool) {
    let initrd = dir.path("initrd.cpio");
    if initrd_now {
        write_initramfs(&initrd);
    }
    fs::write(dir.path("nodes.toml"), nodes).expect("nodes file");
    let log = fs::File::create(dir.path("shoal.log")).expect("log");
    let mut cmd = bed.server.command(shoal_bin());
    cmd.arg("--data-dir").arg(dir.store()).args(["server", "--listen", "10.99.0.1:4870", "--server-ip", "10.99.0.1"]);
    cmd.args(["--dhcp-iface", "eth0", "--agent-cmdline", "console=ttyS0 panic=-1", "--boot-retry-secs", "1"]);
    cmd.arg("--nodes")
        .arg(dir.path("nodes.toml"))
        .arg("--agent-kernel")
        .arg(kernel())
        .arg("--agent-initrd")
        .arg(&initrd);
    cmd.args(extra).env("NO_COLOR", "1").stdout(Stdio::null()).stderr(log);
    bed.spawn(cmd);
    wait_for_log(dir, "shoal server ready", Duration::from_secs(60));
}

fn shoal_log(dir: &Bed) -> String {
    fs::read_to_string(dir.path("shoal.log")).unwrap_or_default()
}

fn wait_for_log(dir: &Bed, what: &str, timeout: Duration) {
    let start = Instant::now();
    while !shoal_log(dir).contains(what) {
        assert!(start.elapsed() < timeout, "no {what:?} in the shoal log:\n{}", shoal_log(dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node(boot: &str, extra: &str) -> String {
    format!("[[node]]\nname = \"pc1\"\nmac = \"{MAC}\"\nip = \"{NODE_IP}\"\nboot = \"{boot}\"\ndisk = \"/dev/vda\"\n{extra}")
}

/// Waits for the node to boot the agent and checks the command line it
/// came up with.
fn check_agent(mut qemu: QemuNode, dir: &Bed, image: &str, started: Instant) {
    let line = qemu.wait_for_marker(BOOT_TIMEOUT);
    let fail = |what: &str| format!("{what}: {line}\nshoal log:\n{}\nconsole:\n{}", shoal_log(dir), qemu.console());
    let args = " console=ttyS0 panic=-1 BOOTIF=01-52-54-00-99-00-01 shoal.server=http://10.99.0.1:4870 shoal.node=pc1 ";
    assert!(line.contains(args), "{}", fail("cmdline"));
    let task = format!(" shoal.task=load shoal.image={image} shoal.target=/dev/vda shoal.token=");
    assert!(line.contains(&task), "{}", fail("task"));
    let token = line.rsplit("shoal.token=").next().and_then(|t| t.split_whitespace().next()).unwrap_or("");
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{}", fail("token"));
    assert!(qemu.wait_for_exit(Duration::from_secs(30)), "the initramfs did not power off");
    eprintln!("{MARKER} after {:?}", started.elapsed());
    if std::env::var_os("SHOAL_SHOW_CONSOLE").is_some() {
        eprintln!("{}", qemu.console());
    }
}

/// dnsmasq as the site's DHCP server on `site`: addresses, no PXE.
fn site_dhcp(bed: &mut NetBed, dir: &Bed) {
    let site: Host = bed.nodes[0].clone();
    let mut dnsmasq = site.command("/usr/sbin/dnsmasq");
    dnsmasq
        .args(["--no-daemon", "--port=0", "--conf-file=/dev/null", "--no-resolv", "--bind-interfaces"])
        .args(["--interface=eth0", "--dhcp-range=10.99.0.100,10.99.0.150,1h", "--user=root", "--log-dhcp"])
        .arg(format!("--dhcp-leasefile={}", dir.path("dnsmasq.leases").display()))
        .arg(format!("--pid-file={}", dir.path("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path("dnsmasq.log")).expect("log"));
    bed.spawn(dnsmasq);
}

fn dnsmasq_leased(dir: &Bed) {
    let leases = fs::read_to_string(dir.path("dnsmasq.leases")).unwrap_or_default();
    let log = fs::read_to_string(dir.path("dnsmasq.log")).unwrap_or_default();
    assert!(leases.contains(MAC), "dnsmasq gave no lease to the node: {leases:?}\n{log}");
}

#[test]
fn bios_node_pxe_boots_the_agent_through_shoal_dhcp_and_http_retrying_a_failed_download() {
    let _one = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Bed::new();
    let mut bed = NetBed::new(0);
    start_shoal(&mut bed, &dir, &node("reload debian12", ""), &["--dhcp", "full"], false);
    let started = Instant::now();
    let qemu = QemuNode::boot(&bed, "tap0", MAC, Firmware::Bios, dir.dir.path());
    // The initramfs is missing until the node has failed to fetch it once:
    // iPXE's retry loop must get it on a later attempt.
    wait_for_log(&dir, "initrd.cpio: No such file", BOOT_TIMEOUT);
    write_initramfs(&dir.path("initrd.cpio"));
    check_agent(qemu, &dir, "debian12", started);
    let log = shoal_log(&dir);
    assert!(log.contains("agent token issued"), "{log}");
    assert!(!log.contains("tftp: sent"), "QEMU's iPXE ROM needs no iPXE over TFTP:\n{log}");
}

#[test]
fn uefi_node_pxe_boots_ipxe_over_shoal_tftp_then_the_agent_over_http() {
    let _one = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Bed::new();
    let mut bed = NetBed::new(0);
    start_shoal(&mut bed, &dir, &node("reload debian12", ""), &["--dhcp", "full"], true);
    let started = Instant::now();
    let qemu = QemuNode::boot(&bed, "tap0", MAC, Firmware::Uefi { ipxe_rom: false }, dir.dir.path());
    check_agent(qemu, &dir, "debian12", started);
    // OVMF's PXE client fetched iPXE from the built-in TFTP root.
    let served = dir.store().join("tftp/ipxe.efi");
    assert_eq!(fs::read(&served).expect("built-in root"), fs::read("/usr/lib/ipxe/ipxe.efi").expect("ipxe"));
    let log = shoal_log(&dir);
    assert!(log.lines().any(|l| l.contains("tftp: sent") && l.contains("file=\"ipxe.efi\"")), "{log}");
}

#[test]
fn proxy_dhcp_beside_dnsmasq_boots_a_bios_node_from_its_menu() {
    let _one = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Bed::new();
    let mut bed = NetBed::new(1);
    site_dhcp(&mut bed, &dir);
    let nodes = node("menu", "images = [\"debian12\", \"ubuntu24:2\"]\nmenu_default = \"ubuntu24:2\"\n");
    start_shoal(&mut bed, &dir, &format!("menu_timeout_secs = 1\n{nodes}"), &["--dhcp", "proxy"], true);
    let started = Instant::now();
    let qemu = QemuNode::boot(&bed, "tap0", MAC, Firmware::Bios, dir.dir.path());
    check_agent(qemu, &dir, "ubuntu24:2", started);
    dnsmasq_leased(&dir);
}

#[test]
fn proxy_dhcp_beside_dnsmasq_boots_a_uefi_node_through_its_own_pxe_client() {
    let _one = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Bed::new();
    let mut bed = NetBed::new(1);
    site_dhcp(&mut bed, &dir);
    start_shoal(&mut bed, &dir, &node("reload debian12", ""), &["--dhcp", "proxy"], true);
    let started = Instant::now();
    let qemu = QemuNode::boot(&bed, "tap0", MAC, Firmware::Uefi { ipxe_rom: false }, dir.dir.path());
    check_agent(qemu, &dir, "debian12", started);
    dnsmasq_leased(&dir);
    let log = shoal_log(&dir);
    assert!(log.lines().any(|l| l.contains("tftp: sent") && l.contains("file=\"ipxe.efi\"")), "{log}");
}

#[test]
fn bios_node_whose_decision_is_local_boots_its_own_disk() {
    let _one = QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Bed::new();
    let mut bed = NetBed::new(0);
    start_shoal(&mut bed, &dir, &node("local", ""), &["--dhcp", "full"], true);
    let disk = dir.path("disk.img");
    write_local_disk(&disk);
    let mut qemu = QemuNode::boot_with_disk(&bed, "tap0", MAC, Firmware::Bios, dir.dir.path(), Some(&disk));
    qemu.wait_for_line(LOCAL_MARKER, BOOT_TIMEOUT);
    // SeaBIOS was told to boot nothing but the NIC (strict boot order):
    // the disk ran because the script sanbooted it. The console's iPXE
    // text comes through SeaBIOS's screen copy and is not matched on.
    let console = qemu.console();
    if std::env::var_os("SHOAL_SHOW_CONSOLE").is_some() {
        eprintln!("{console}");
    }
    assert!(!console.contains(MARKER), "{console}");
    let log = shoal_log(&dir);
    assert!(!log.contains("agent token issued"), "{log}");
}
