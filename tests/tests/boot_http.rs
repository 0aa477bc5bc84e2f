//! `shoal server`'s boot endpoints through real clients: curl for the
//! iPXE scripts and the agent files, tftp-hpa for the built-in TFTP root,
//! and the start-up checks of the boot flags. Runs in a namespace of its
//! own, so the ports are the real ones.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::netbed::NetBed;
use shoal_tests::{sh, shoal_bin, Bed};

const NODES: &str = r#"
[[node]]
name = "pc1"
mac = "52:54:00:00:00:01"
ip = "10.99.0.51"
boot = "menu"
images = ["debian12", "ubuntu24:2"]
"#;

/// (status, content type, body) of `GET url` from the server namespace.
fn get(bed: &NetBed, url: &str) -> (u16, String, Vec<u8>) {
    let out = bed
        .server
        .command("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code} %{content_type}", url])
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').expect("curl's trailer");
    let trailer = String::from_utf8_lossy(&body[at + 1..]).into_owned();
    body.truncate(at);
    let (code, ctype) = trailer.split_once(' ').unwrap_or((&trailer, ""));
    (code.parse().expect("status"), ctype.to_owned(), body)
}

#[test]
fn boot_endpoints_serve_scripts_files_and_tftp_and_refuse_the_rest() {
    let dir = Bed::new();
    let mut bed = NetBed::new(0);
    fs::write(dir.path("nodes.toml"), NODES).expect("nodes");
    fs::write(dir.path("kernel"), b"not really a kernel").expect("kernel");
    fs::write(dir.path("initrd"), vec![7u8; 300_000]).expect("initrd");
    fs::write(dir.path("bios.kpxe"), b"bios ipxe").expect("bios");
    let log = fs::File::create(dir.path("shoal.log")).expect("log");
    let mut cmd = bed.server.command(shoal_bin());
    cmd.arg("--data-dir").arg(dir.store()).args(["server", "--listen", "10.99.0.1:4870"]);
    cmd.arg("--nodes").arg(dir.path("nodes.toml"));
    cmd.arg("--agent-kernel").arg(dir.path("kernel")).arg("--agent-initrd").arg(dir.path("initrd"));
    cmd.arg("--ipxe-bios").arg(dir.path("bios.kpxe")).args(["--tftp-listen", "10.99.0.1:69"]);
    cmd.env("NO_COLOR", "1").stdout(Stdio::null()).stderr(log);
    bed.spawn(cmd);
    let start = Instant::now();
    while !fs::read_to_string(dir.path("shoal.log")).unwrap_or_default().contains("shoal server ready") {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", fs::read_to_string(dir.path("shoal.log")).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let base = "http://10.99.0.1:4870/boot";

    let (code, ctype, menu) = get(&bed, &format!("{base}/52:54:00:00:00:01.ipxe"));
    let menu = String::from_utf8_lossy(&menu).into_owned();
    assert_eq!((code, ctype.as_str()), (200, "text/plain; charset=utf-8"), "{menu}");
    assert!(menu.starts_with("#!ipxe\n") && menu.contains("item image1 ubuntu24:2\n"), "{menu}");
    // iPXE percent-encodes the colons; the query form names the MAC too.
    assert_eq!(get(&bed, &format!("{base}/52%3A54%3A00%3A00%3A00%3A01.ipxe")).0, 200);
    assert_eq!(get(&bed, &format!("{base}/ipxe?mac=52:54:00:00:00:01")).0, 200);
    let (code, _, agent) = get(&bed, &format!("{base}/52:54:00:00:00:01/load/ubuntu24:2"));
    let agent = String::from_utf8_lossy(&agent).into_owned();
    assert_eq!(code, 200, "{agent}");
    let args = " BOOTIF=01-52-54-00-00-00-01 shoal.server=http://10.99.0.1:4870 shoal.node=pc1 shoal.task=load \
                shoal.image=ubuntu24:2 shoal.target=/dev/sda shoal.token=";
    assert!(agent.contains(args), "{agent}");

    assert_eq!(get(&bed, &format!("{base}/52:54:00:00:00:01/load/secret")).0, 403);
    assert_eq!(get(&bed, &format!("{base}/52:54:00:00:00:09.ipxe")).0, 404);
    assert_eq!(get(&bed, &format!("{base}/not-a-mac.ipxe")).0, 400);
    assert_eq!(get(&bed, &format!("{base}/ipxe?mac=%0Achain%20http://evil/")).0, 400);

    let (code, ctype, initrd) = get(&bed, &format!("{base}/agent/initrd"));
    assert_eq!((code, ctype.as_str(), initrd.len()), (200, "application/octet-stream", 300_000));
    assert_eq!(get(&bed, &format!("{base}/agent/kernel")).2, b"not really a kernel");

    // The built-in TFTP root holds the configured BIOS binary under its
    // TFTP name, and nothing outside it can be named.
    let got = dir.path("got.kpxe");
    sh(bed.server.command("tftp").args(["10.99.0.1", "-m", "binary", "-c", "get", "undionly.kpxe"]).arg(&got));
    assert_eq!(fs::read(&got).expect("fetched"), b"bios ipxe");
    let out = bed
        .server
        .command("tftp")
        .args(["10.99.0.1", "-m", "binary", "-c", "get", "../nodes.toml"])
        .arg(dir.path("escaped"))
        .output()
        .expect("tftp runs");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Error code"), "traversal was not refused: {said}");
    assert!(fs::read(dir.path("escaped")).unwrap_or_default().is_empty());
}

#[test]
fn bad_boot_settings_exit_2_before_serving() {
    let dir = Bed::new();
    let refused = |args: &[&str], says: &str| {
        let out = Command::new(shoal_bin())
            .arg("--data-dir")
            .arg(dir.store())
            .arg("server")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("shoal runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(&["--dhcp", "full"], "--server-ip");
    refused(&["--dhcp", "proxy", "--server-ip", "10.0.0.1", "--pool", "10.0.0.5-10.0.0.9"], "--dhcp full");
    let nodes = dir.path("nodes.toml");
    fs::write(&nodes, NODES).expect("nodes");
    let nodes = nodes.to_str().expect("utf-8");
    refused(&["--dhcp", "full", "--server-ip", "10.99.0.1", "--nodes", nodes], "needs the agent");
    fs::write(dir.path("bad.toml"), NODES.replace("debian12", "debian12 ${x}")).expect("nodes");
    refused(&["--nodes", dir.path("bad.toml").to_str().expect("utf-8")], "letters, digits");
    assert!(!dir.store().exists(), "the store was touched before the settings were checked");
}
