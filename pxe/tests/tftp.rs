//! The TFTP server against clients nobody here wrote (curl, tftp-hpa,
//! atftp) and against hand-built datagrams for what those clients cannot
//! send. Each test runs its own server on 127.0.0.1 on an ephemeral port
//! with a temporary root, and stops it before returning; the temporary
//! directory goes when the fixture drops, even on failure.
//!
//! Needs the Debian packages curl, tftp-hpa and atftp (`make deps`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_pxe::tftp::{Counters, RateLimit, Server, ServerConfig, Snapshot, TransferConfig};
use tokio::net::UdpSocket;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server over a temporary root.
struct Fixture {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::with(|_| {}).await
    }

    async fn with(tune: impl FnOnce(&mut ServerConfig)) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("root")).expect("root dir");
        let mut config = ServerConfig::new(dir.path().join("root"));
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.transfer = TransferConfig {
            timeout: Duration::from_millis(200),
            max_timeout: Duration::from_secs(1),
            ..TransferConfig::default()
        };
        tune(&mut config);
        let server = Server::bind(config).expect("server binds");
        let (addr, counters) = (server.local_addr(), server.counters());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Fixture { dir, addr, counters, stop: Some(stop), task: Some(task) }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file of `len` patterned bytes under the root.
    fn file(&self, name: &str, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(self.root().join(name), &data).expect("write file");
        data
    }

    fn counters(&self) -> Snapshot {
        self.counters.snapshot()
    }

    /// The counters once `settled` holds, or after two seconds: a client
    /// may exit before the server has counted its last ACK.
    async fn counters_when(&self, settled: impl Fn(&Snapshot) -> bool) -> Snapshot {
        for _ in 0..100 {
            let c = self.counters();
            if settled(&c) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.counters()
    }

    /// Stops the server and waits until every socket it held is closed.
    async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
        // The listening port is free again.
        std::net::UdpSocket::bind(self.addr).expect("listening port released");
    }
}

/// Runs a client, killing it if it takes longer than a minute.
async fn run(cmd: &mut Command) -> std::process::Output {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} timed out"))
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? `make deps`)"));
    out
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn curl(f: &Fixture, name: &str, dest: &Path, extra: &[&str]) -> std::process::Output {
    let url = format!("tftp://{}/{name}", f.addr);
    run(Command::new("curl").args(["-sS", "--max-time", "100", "-o"]).arg(dest).args(extra).arg(url)).await
}

async fn tftp_hpa(f: &Fixture, mode: &str, name: &str, dest: &Path) -> std::process::Output {
    let (host, port) = (f.addr.ip().to_string(), f.addr.port().to_string());
    run(Command::new("tftp").args(["-v", "-m", mode, &host, &port, "-c", "get", name]).arg(dest)).await
}

// ---- a client written here, for what the real ones cannot say ----------

fn request(opcode: u8, name: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0, opcode];
    for field in [name, mode].into_iter().chain(options.iter().flat_map(|(k, v)| [*k, *v])) {
        out.extend_from_slice(field.as_bytes());
        out.push(0);
    }
    out
}

fn ack(block: u16) -> [u8; 4] {
    let [a, b] = block.to_be_bytes();
    [0, 4, a, b]
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("client socket")
}

/// The next datagram within two seconds.
async fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0; 70_000];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await.ok()?.ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// The opcode, the second u16, and the rest of a datagram.
fn parts(d: &[u8]) -> (u16, u16, &[u8]) {
    assert!(d.len() >= 4, "short datagram {d:?}");
    (u16::from_be_bytes([d[0], d[1]]), u16::from_be_bytes([d[2], d[3]]), &d[4..])
}

/// Sends `rrq` and expects an ERROR back; returns its code.
async fn error_code_for(f: &Fixture, packet: &[u8]) -> u16 {
    let s = client().await;
    s.send_to(packet, f.addr).await.expect("send");
    let (d, _) = recv(&s).await.expect("an answer");
    let (op, code, _) = parts(&d);
    assert_eq!(op, 5, "expected ERROR, got {d:?}");
    code
}

/// Fetches with options through the hand-written windowed client.
async fn fetch_windowed(f: &Fixture, name: &str, options: &[(&str, &str)]) -> (Vec<(String, u64)>, Vec<u8>) {
    let s = client().await;
    s.send_to(&request(1, name, "octet", options), f.addr).await.expect("send");
    let (d, tid) = recv(&s).await.expect("OACK");
    assert_ne!(tid, f.addr, "the transfer answers from a new port");
    let (op, _, _) = parts(&d);
    assert_eq!(op, 6, "expected OACK, got {d:?}");
    let fields: Vec<&[u8]> = d[2..].split(|&b| b == 0).filter(|f| !f.is_empty()).collect();
    let oack: Vec<(String, u64)> = fields
        .chunks(2)
        .map(|kv| (String::from_utf8_lossy(kv[0]).into_owned(), String::from_utf8_lossy(kv[1]).parse().unwrap()))
        .collect();
    let get = |k: &str| oack.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let (blksize, window) = (get("blksize").unwrap_or(512) as usize, get("windowsize").unwrap_or(1));
    s.send_to(&ack(0), tid).await.expect("ack 0");
    let (mut got, mut next, mut in_window) = (Vec::new(), 1u16, 0);
    loop {
        let (d, from) = recv(&s).await.expect("DATA");
        assert_eq!(from, tid);
        let (op, block, data) = parts(&d);
        assert_eq!(op, 3, "expected DATA, got {d:?}");
        if block != next {
            continue;
        }
        got.extend_from_slice(data);
        next = next.wrapping_add(1);
        in_window += 1;
        let last = data.len() < blksize;
        if last || in_window == window {
            s.send_to(&ack(block), tid).await.expect("ack");
            in_window = 0;
        }
        if last {
            return (oack, got);
        }
    }
}

// ---- real clients -------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn curl_fetches_the_same_bytes_with_and_without_blksize() {
    let f = Fixture::start().await;
    let data = f.file("ipxe.efi", 1_000_003);
    for (i, extra) in [&["-v"][..], &["--tftp-blksize", "1428"], &["--tftp-no-options"]].iter().enumerate() {
        let dest = f.out(&format!("curl-{i}"));
        let out = curl(&f, "ipxe.efi", &dest, extra).await;
        assert!(out.status.success(), "curl {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(read(&dest) == data, "curl {extra:?} got different bytes");
        if i == 0 {
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(log.contains("tsize parsed from OACK (1000003)"), "curl saw no tsize: {log}");
        }
    }
    assert_eq!(f.counters_when(|c| c.transfers_ok == 3).await.transfers_ok, 3);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_hpa_fetches_binary_and_netascii() {
    let f = Fixture::start().await;
    let data = f.file("agent.img", 300_001);
    let dest = f.out("hpa");
    let out = tftp_hpa(&f, "binary", "agent.img", &dest).await;
    assert!(read(&dest) == data, "tftp-hpa binary: {}", String::from_utf8_lossy(&out.stdout));
    let text = b"#!ipxe\r\nchain http://boot/agent\nbare\rcr\n".repeat(100);
    std::fs::write(f.root().join("menu.ipxe"), &text).unwrap();
    let dest = f.out("hpa-ascii");
    tftp_hpa(&f, "netascii", "/menu.ipxe", &dest).await;
    assert_eq!(read(&dest), text, "netascii did not round-trip through tftp-hpa");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_40_mib_file_at_blksize_512_survives_block_number_rollover() {
    let f = Fixture::start().await;
    let data = f.file("big.img", 40 << 20);
    let dest = f.out("big-hpa");
    let out = tftp_hpa(&f, "binary", "big.img", &dest).await;
    assert!(read(&dest) == data, "tftp-hpa: {}", String::from_utf8_lossy(&out.stdout));
    let dest = f.out("big-curl");
    let out = curl(&f, "big.img", &dest, &["--tftp-blksize", "512"]).await;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(read(&dest) == data, "curl got different bytes");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn atftp_fetches_with_windowsize_blksize_and_tsize() {
    let f = Fixture::start().await;
    let data = f.file("kernel", 2_000_001);
    let dest = f.out("atftp");
    let (host, port) = (f.addr.ip().to_string(), f.addr.port().to_string());
    let out = run(Command::new("atftp")
        .args(["--option", "windowsize 8", "--option", "blksize 1428", "--option", "tsize enable", "--trace"])
        .args(["-g", "-r", "kernel", "-l"])
        .arg(&dest)
        .args([&host, &port]))
    .await;
    let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "atftp: {log}");
    assert!(read(&dest) == data, "atftp got different bytes: {log}");
    let oack = log.lines().find(|l| l.starts_with("received OACK")).unwrap_or_default();
    assert!(oack.contains("windowsize: 8") && oack.contains("blksize: 1428"), "atftp's OACK: {oack}");
    assert!(log.contains("sent ACK <block: 8>") && !log.contains("sent ACK <block: 7>"), "not windowed: {log}");
    f.stop().await;
}

// ---- negotiation, through the client written here ----------------------

#[tokio::test(flavor = "multi_thread")]
async fn tsize_blksize_and_windowsize_are_granted_in_the_oack() {
    let f = Fixture::start().await;
    let data = f.file("f", 123_457);
    let opts = [("tsize", "0"), ("blksize", "1000"), ("windowsize", "4"), ("timeout", "2"), ("x-vendor", "1")];
    let (oack, got) = fetch_windowed(&f, "f", &opts).await;
    let mut oack = oack;
    oack.sort();
    let expected = [("blksize", 1000), ("timeout", 2), ("tsize", 123_457), ("windowsize", 4)];
    assert_eq!(oack, expected.map(|(k, v)| (k.to_string(), v)));
    assert!(got == data);
    let (oack, got) = fetch_windowed(&f, "f", &[("blksize", "65464"), ("windowsize", "65535")]).await;
    assert_eq!(oack, [("blksize".to_string(), 1468), ("windowsize".to_string(), 64)], "capped at the config");
    assert!(got == data);
    f.stop().await;
}

// ---- refusals ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn traversal_attempts_and_links_out_of_the_root_get_access_violation() {
    let f = Fixture::start().await;
    std::fs::write(f.dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink("../secret", f.root().join("relative-out")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", f.root().join("absolute-out")).unwrap();
    std::os::unix::fs::symlink(f.dir.path().join("secret"), f.root().join("absolute-out-2")).unwrap();
    let names = [
        "../etc/passwd",
        "/../../etc/passwd",
        "../secret",
        "a/../../secret",
        "relative-out",
        "absolute-out",
        "absolute-out-2",
        "..\\secret",
        "/proc/self/root/etc/passwd",
    ];
    for name in names {
        let code = error_code_for(&f, &request(1, name, "octet", &[])).await;
        // /proc/... is simply not under the root: not found is right too.
        assert!(code == 2 || (name.starts_with("/proc") && code == 1), "{name}: ERROR {code}");
    }
    let dest = f.out("hpa-escape");
    tftp_hpa(&f, "binary", "../secret", &dest).await;
    assert!(std::fs::read(&dest).map_or(true, |b| b != b"outside"), "tftp-hpa read a file outside the root");
    assert!(f.counters().escapes >= 7, "{:?}", f.counters());
    assert_eq!(f.counters().transfers_started, 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_file_gets_error_1_and_curl_reports_it() {
    let f = Fixture::start().await;
    assert_eq!(error_code_for(&f, &request(1, "nope", "octet", &[])).await, 1);
    let out = curl(&f, "nope", &f.out("nope"), &[]).await;
    assert_eq!(out.status.code(), Some(68), "curl's 'TFTP file not found'");
    assert_eq!(f.counters().not_found, 2);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_request_gets_error_2_and_nothing_is_written() {
    let f = Fixture::start().await;
    assert_eq!(error_code_for(&f, &request(2, "new", "octet", &[])).await, 2);
    std::fs::write(f.out("upload"), b"data").unwrap();
    let (host, port) = (f.addr.ip().to_string(), f.addr.port().to_string());
    let up = f.out("upload");
    let out = run(Command::new("tftp").args(["-m", "binary", &host, &port, "-c", "put"]).arg(&up).arg("up")).await;
    let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.to_lowercase().contains("access violation"), "tftp-hpa put: {log}");
    assert!(!f.root().join("new").exists() && !f.root().join("up").exists());
    assert_eq!(f.counters().write_requests, 2);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn junk_and_truncated_requests_leave_the_server_serving() {
    let f = Fixture::with(|c| c.rate = RateLimit { burst: 100_000, per_second: 100_000, max_clients: 16 }).await;
    let data = f.file("after", 5000);
    let s = client().await;
    let full = request(1, "after", "octet", &[("blksize", "1024"), ("tsize", "0")]);
    let mut seed = 7u64;
    for i in 0..3000usize {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let junk: Vec<u8> = match i % 3 {
            0 => full[..(seed as usize % full.len())].to_vec(),
            1 => (0..(seed % 600)).map(|j| (seed >> (j % 56)) as u8).collect(),
            _ => [&[0u8, (seed % 8) as u8][..], &full[2..(2 + seed as usize % (full.len() - 2))]].concat(),
        };
        s.send_to(&junk, f.addr).await.expect("send junk");
    }
    // Answers to the junk (ERROR 4) are just drained.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut [0; 2048])).await {}
    let dest = f.out("after-junk");
    let out = curl(&f, "after", &dest, &[]).await;
    assert!(out.status.success() && read(&dest) == data, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(f.counters().malformed > 500, "{:?}", f.counters());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_beyond_the_limit_get_busy_and_slots_free_up() {
    let f = Fixture::with(|c| {
        c.max_transfers = 2;
        c.rate = RateLimit { burst: 1000, per_second: 1000, max_clients: 16 };
    })
    .await;
    f.file("slow", 100_000);
    // Two transfers that wait for ACKs that never come.
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = client().await;
        s.send_to(&request(1, "slow", "octet", &[]), f.addr).await.unwrap();
        let (d, tid) = recv(&s).await.expect("DATA 1");
        assert_eq!(parts(&d).0, 3);
        held.push((s, tid));
    }
    let third = client().await;
    third.send_to(&request(1, "slow", "octet", &[]), f.addr).await.unwrap();
    let (d, _) = recv(&third).await.expect("an answer");
    assert_eq!(parts(&d).0, 5);
    assert_eq!(parts(&d).1, 0);
    assert!(String::from_utf8_lossy(parts(&d).2).contains("busy"));
    // An ERROR from the client ends a transfer and frees its slot.
    let (s, tid) = &held[0];
    s.send_to(b"\x00\x05\x00\x00done\x00", tid).await.unwrap();
    let mut served = false;
    for _ in 0..50 {
        let s = client().await;
        s.send_to(&request(1, "slow", "octet", &[]), f.addr).await.unwrap();
        if let Some((d, _)) = recv(&s).await {
            if parts(&d).0 == 3 {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot was never reused");
    assert!(f.counters().busy >= 1 && f.counters().peer_errors == 1, "{:?}", f.counters());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_client_rate_are_dropped_silently() {
    let f = Fixture::with(|c| c.rate = RateLimit { burst: 3, per_second: 1, max_clients: 16 }).await;
    let mut answered = 0;
    for _ in 0..5 {
        let s = client().await;
        s.send_to(&request(1, "missing", "octet", &[]), f.addr).await.unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut [0; 600])).await {
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
    assert_eq!(f.counters().rate_limited, 2);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_port_gets_error_5_and_the_transfer_goes_on() {
    let f = Fixture::start().await;
    let data = f.file("f", 700);
    let s = client().await;
    s.send_to(&request(1, "f", "octet", &[]), f.addr).await.unwrap();
    let (d, tid) = recv(&s).await.expect("DATA 1");
    assert_eq!(parts(&d).1, 1);
    let intruder = client().await;
    intruder.send_to(&ack(1), tid).await.unwrap();
    let (e, from) = recv(&intruder).await.expect("ERROR 5");
    assert_eq!((parts(&e).0, parts(&e).1, from), (5, 5, tid));
    // A repeated request from the same port is the same transfer.
    s.send_to(&request(1, "f", "octet", &[]), f.addr).await.unwrap();
    s.send_to(&ack(1), tid).await.unwrap();
    let (d2, _) = recv(&s).await.expect("DATA 2");
    assert_eq!(parts(&d2).1, 2);
    s.send_to(&ack(2), tid).await.unwrap();
    assert_eq!([&d[4..], &d2[4..]].concat(), data);
    let c = f.counters_when(|c| c.transfers_ok == 1).await;
    assert_eq!((c.wrong_tid, c.transfers_ok, c.transfers_started, c.duplicate_requests), (1, 1, 1, 1), "{c:?}");
    f.stop().await;
}

// ---- the fuzz target's checks, replayed ---------------------------------

mod fuzz {
    include!("../fuzz/harness.rs");
}

#[test]
fn fuzz_regressions_and_pseudo_random_inputs_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/tftp");
    for entry in std::fs::read_dir(&dir).expect("regressions dir") {
        let path = entry.expect("dir entry").path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        fuzz::check(&read(&path));
    }
    let mut state = 0x9e37_79b9_u64;
    for _ in 0..20_000 {
        let mut input = Vec::new();
        for _ in 0..(state % 64) {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            input.push((state >> 33) as u8 % [2, 5, 9, 255][(state % 4) as usize]);
        }
        fuzz::check(&input);
    }
}
