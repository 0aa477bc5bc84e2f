//! The agent takes its task from the server: a node in a reload job
//! network-boots (here: its boot script is fetched as iPXE would), and
//! `shoal-agent run` acts on the script's kernel command line, which
//! carries a catalog-issued one-time token and no task. The agent asks
//! `/v1/agent/{mac}/task`, loads, sends heartbeats and reports with its
//! log; the job ends, the node is ready and boots its disk next. A spent
//! token is refused, and a disk too small for the image is refused before
//! anything is written, reported, and leaves the node failed with the
//! agent's log kept; so is a manifest signed by another key. An agent
//! that dies mid-write (power lost) leaves the node reloading, never
//! ready, and its next boot runs the job again (on the namespace bed,
//! where the load is multicast; the others run on loopback, where loads
//! fall back to HTTP).

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::netbed::NetBed;
use shoal_tests::*;

const MAC: &str = "52:54:00:aa:00:01";

/// `shoal server` on loopback with an agent kernel and initramfs to serve
/// (their bytes do not matter: no machine boots them here).
fn server(bed: &Bed) -> Server {
    server_with(bed, 0, &[])
}

fn server_with(bed: &Bed, port: u16, extra: &[&str]) -> Server {
    fs::write(bed.path("vmlinuz"), b"kernel").unwrap();
    fs::write(bed.path("initrd"), b"initrd").unwrap();
    let (k, i) = (bed.path("vmlinuz"), bed.path("initrd"));
    let mut args = vec!["--agent-kernel", k.to_str().unwrap(), "--agent-initrd", i.to_str().unwrap()];
    args.extend_from_slice(extra);
    bed.server(port, &args)
}

/// An admin token of project `default`, which the server made at start
/// for the images already in the store.
fn admin_token(bed: &Bed) -> String {
    bed.ok(&["token", "create", "--project", "default", "--admin"]).trim().to_string()
}

/// `shoal ARGS` as an API client of `s` with `token`.
fn client(bed: &Bed, s: &Server, token: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(shoal_bin())
        .arg("--json")
        .args(args)
        .env("SHOAL_DATA_DIR", bed.store())
        .env("SHOAL_URL", &s.url)
        .env("SHOAL_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shoal {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The kernel command line of the node's boot script, as iPXE would pass it.
fn boot_cmdline(s: &Server) -> String {
    let out = sh(Command::new("curl").args(["-fsS", &format!("{}/boot/{MAC}.ipxe", s.url)]));
    let line = out.lines().find(|l| l.starts_with("kernel ")).unwrap_or_else(|| panic!("no kernel line in\n{out}"));
    // kernel --name shoal-kernel URL ARGS... || goto retry
    let args: Vec<&str> = line.split_whitespace().skip(4).take_while(|w| *w != "||").collect();
    args.join(" ")
}

fn run_agent(bed: &Bed, key: &str, cmdline: &str, target: &str) -> Output {
    Command::new(agent_bin())
        .args(["run", "--cmdline", cmdline, "--target", target, "--key", key])
        .stdin(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path("agent.log")).unwrap()))
        .output()
        .unwrap()
}

fn job(bed: &Bed, s: &Server, token: &str, id: &serde_json::Value) -> serde_json::Value {
    client(bed, s, token, &["job", "show", &id.to_string()])
}

#[test]
fn an_agent_takes_its_job_from_the_server_reports_and_leaves_the_node_ready() {
    let bed = Bed::new();
    bed.ext4_image(64, 21);
    let key = bed.ok(&["key"]).trim().to_string();
    let s = server(&bed);
    let token = admin_token(&bed);
    client(&bed, &s, &token, &["node", "register", "n1", "--mac", MAC, "--type", "vm", "--disk", "/dev/vda"]);
    let j = client(&bed, &s, &token, &["node", "reload", "n1", "--image", "img"]);
    let id = j["id"].clone();

    let line = boot_cmdline(&s);
    assert!(line.contains("shoal.token=") && !line.contains("shoal.task="), "{line}");
    assert!(line.contains("shoal.target=/dev/vda") && line.contains("BOOTIF=01-52-54-00-aa-00-01"), "{line}");
    // The node's empty disk.
    let target = bed.path("n1.img");
    fs::File::create(&target).unwrap().set_len(64 * MIB).unwrap();
    let out = run_agent(&bed, &key, &line, target.to_str().unwrap());
    let log = fs::read_to_string(bed.path("agent.log")).unwrap();
    assert!(out.status.success(), "the agent failed:\n{log}");
    assert!(log.contains("asking") && log.contains("reported to the server: done"), "{log}");
    bed.ok(&["image", "verify", "img", "--target", target.to_str().unwrap()]);

    let j = job(&bed, &s, &token, &id);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["nodes"][0]["progress"], 100, "{j}");
    let events = j["history"].as_array().unwrap_or_else(|| panic!("no history in {j}"));
    let done = events.iter().find(|e| e["state"] == "done").unwrap_or_else(|| panic!("no done event in {j}"));
    assert!(done["log"].as_str().unwrap().contains("asking"), "the report carries the agent's log: {done}");
    let n = client(&bed, &s, &token, &["node", "show", "n1"]);
    assert_eq!((n["state"].as_str(), n["boot"].as_str()), (Some("ready"), Some("local")), "{n}");
    let script = sh(Command::new("curl").args(["-fsS", &format!("{}/boot/{MAC}.ipxe", s.url)]));
    assert!(script.contains("sanboot"), "the next boot is the local disk:\n{script}");

    // The token was spent by the report.
    let again = run_agent(&bed, &key, &line, target.to_str().unwrap());
    let log = fs::read_to_string(bed.path("agent.log")).unwrap();
    assert!(!again.status.success(), "a spent token still ran:\n{log}");
    assert!(log.contains("the server refused"), "{log}");
}

#[test]
fn a_disk_too_small_is_refused_before_writing_and_the_node_is_marked_failed_with_its_log() {
    let bed = Bed::new();
    bed.ext4_image(64, 22);
    let key = bed.ok(&["key"]).trim().to_string();
    let s = server(&bed);
    let token = admin_token(&bed);
    client(&bed, &s, &token, &["node", "register", "n1", "--mac", MAC, "--type", "vm"]);
    let id = client(&bed, &s, &token, &["node", "reload", "n1", "--image", "img"])["id"].clone();
    let small = bed.path("small.img");
    fs::write(&small, vec![0x5a; 1 << 20]).unwrap();
    let out = run_agent(&bed, &key, &boot_cmdline(&s), small.to_str().unwrap());
    assert!(!out.status.success());
    assert!(fs::read(&small).unwrap().iter().all(|&b| b == 0x5a), "nothing was written to the small disk");
    let j = job(&bed, &s, &token, &id);
    assert_eq!(j["state"], "failed", "{j}");
    let failed = j["history"].as_array().unwrap().iter().find(|e| e["state"] == "failed").cloned().unwrap();
    assert!(failed["message"].as_str().unwrap().contains("but the image needs"), "{failed}");
    assert!(!failed["log"].as_str().unwrap().is_empty(), "{failed}");
    let n = client(&bed, &s, &token, &["node", "show", "n1"]);
    assert_eq!(n["state"], "failed", "{n}");
}

#[test]
fn a_manifest_signed_by_another_key_is_refused_and_reported() {
    let bed = Bed::new();
    bed.ext4_image(64, 23);
    let s = server(&bed);
    let token = admin_token(&bed);
    client(&bed, &s, &token, &["node", "register", "n1", "--mac", MAC, "--type", "vm"]);
    let id = client(&bed, &s, &token, &["node", "reload", "n1", "--image", "img"])["id"].clone();
    let disk = bed.path("n1.img");
    fs::File::create(&disk).unwrap().set_len(64 * MIB).unwrap();
    // The key another server would have baked into the initramfs.
    let other = Bed::new();
    let wrong = other.ok(&["key"]).trim().to_string();
    let out = run_agent(&bed, &wrong, &boot_cmdline(&s), disk.to_str().unwrap());
    assert!(!out.status.success());
    assert!(read_at(&disk, 0, 1 << 20).iter().all(|&b| b == 0), "something was written");
    let j = job(&bed, &s, &token, &id);
    assert_eq!(j["state"], "failed", "{j}");
    let failed = j["history"].as_array().unwrap().iter().find(|e| e["state"] == "failed").cloned().unwrap();
    assert!(failed["message"].as_str().unwrap().contains("sign"), "{failed}");
}

/// `shoal server` in a bed's server namespace, where multicast works
/// (loopback has no route for it, so loads there fall back to HTTP).
fn bed_server(net: &mut NetBed, bed: &Bed, extra: &[&str]) {
    fs::write(bed.path("vmlinuz"), b"kernel").unwrap();
    fs::write(bed.path("initrd"), b"initrd").unwrap();
    let addr = net.server.addr.to_string();
    let mut cmd = net.server.command(shoal_bin());
    cmd.args(["server", "--listen", &format!("{addr}:4870"), "--mcast-iface", &addr])
        .args(["--agent-kernel", bed.path("vmlinuz").to_str().unwrap()])
        .args(["--agent-initrd", bed.path("initrd").to_str().unwrap()])
        .args(extra)
        .env("SHOAL_DATA_DIR", bed.store())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path("server.log")).unwrap()));
    net.spawn(cmd);
    let start = Instant::now();
    while !fs::read_to_string(bed.path("server.log")).unwrap_or_default().contains("shoal server ready") {
        assert!(start.elapsed() < Duration::from_secs(20), "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `shoal --json ARGS` against the bed's server, from its namespace.
fn bed_client(net: &NetBed, token: &str, args: &[&str]) -> serde_json::Value {
    let mut cmd = net.server.command(shoal_bin());
    cmd.arg("--json").args(args).env("SHOAL_URL", format!("http://{}:4870", net.server.addr)).env("SHOAL_TOKEN", token);
    serde_json::from_str(&sh(&mut cmd)).unwrap_or(serde_json::Value::Null)
}

fn bed_cmdline(net: &NetBed) -> String {
    let out =
        sh(net.server.command("curl").args(["-fsS", &format!("http://{}:4870/boot/{MAC}.ipxe", net.server.addr)]));
    let line = out.lines().find(|l| l.starts_with("kernel ")).unwrap_or_else(|| panic!("no kernel line in\n{out}"));
    line.split_whitespace().skip(4).take_while(|w| *w != "||").collect::<Vec<_>>().join(" ")
}

#[test]
fn power_lost_mid_write_leaves_the_node_unready_and_its_next_boot_loads_again() {
    let bed = Bed::new();
    bed.ext4_image(128, 24);
    let key = bed.ok(&["key"]).trim().to_string();
    let mut net = NetBed::new(1);
    // Slow enough that the load is surely under way when the power goes.
    bed_server(&mut net, &bed, &["--rate-mbit", "40"]);
    let token = admin_token(&bed);
    bed_client(&net, &token, &["node", "register", "n1", "--mac", MAC, "--type", "vm"]);
    let id = bed_client(&net, &token, &["node", "reload", "n1", "--image", "img"])["id"].clone();
    let disk = bed.path("n1.img");
    fs::File::create(&disk).unwrap().set_len(128 * MIB).unwrap();
    let agent = |line: &str| {
        let mut c = net.nodes[0].command(agent_bin());
        c.args(["run", "--cmdline", line, "--target", disk.to_str().unwrap(), "--key", &key])
            .stderr(Stdio::from(fs::File::create(bed.path("agent.log")).unwrap()));
        c
    };
    let line = bed_cmdline(&net);
    let mut running = agent(&line).stdin(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !fs::read_to_string(bed.path("agent.log")).unwrap().contains("first multicast data") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", fs::read_to_string(bed.path("agent.log")).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    running.kill().unwrap();
    running.wait().unwrap();
    let held = bed.shoal(&["image", "verify", "img", "--target", disk.to_str().unwrap()]);
    assert!(!held.status.success(), "the load had finished before the power went");
    let n = bed_client(&net, &token, &["node", "show", "n1"]);
    assert_ne!(n["state"], "ready", "{n}");
    assert_eq!(n["boot"], "agent", "{n}");
    assert_ne!(bed_client(&net, &token, &["job", "show", &id.to_string()])["state"], "succeeded");

    // The next boot: the script runs the job again, with a new token.
    let again = bed_cmdline(&net);
    assert!(again.contains("shoal.token=") && again != line, "{again}");
    let out = agent(&again).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", fs::read_to_string(bed.path("agent.log")).unwrap());
    bed.ok(&["image", "verify", "img", "--target", disk.to_str().unwrap()]);
    assert_eq!(bed_client(&net, &token, &["job", "show", &id.to_string()])["state"], "succeeded");
    assert_eq!(bed_client(&net, &token, &["node", "show", "n1"])["state"], "ready");
}

#[test]
fn an_agent_that_cannot_reach_its_server_retries_until_it_is_back() {
    let bed = Bed::new();
    bed.ext4_image(64, 25);
    let key = bed.ok(&["key"]).trim().to_string();
    let mut s = server(&bed);
    let token = admin_token(&bed);
    client(&bed, &s, &token, &["node", "register", "n1", "--mac", MAC, "--type", "vm"]);
    let id = client(&bed, &s, &token, &["node", "reload", "n1", "--image", "img"])["id"].clone();
    let line = boot_cmdline(&s);
    let port = s.port();
    // The server goes down after the node booted; the agent comes up to
    // find nobody there.
    let _ = s.child.kill();
    let _ = s.child.wait();
    let disk = bed.path("n1.img");
    fs::File::create(&disk).unwrap().set_len(64 * MIB).unwrap();
    let mut agent = Command::new(agent_bin())
        .args(["run", "--cmdline", &line, "--target", disk.to_str().unwrap(), "--key", &key])
        .stdin(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path("agent.log")).unwrap()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while fs::read_to_string(bed.path("agent.log")).unwrap().matches("unreachable").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", fs::read_to_string(bed.path("agent.log")).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Back on the same address, with the same catalog: the token holds.
    let s = server_with(&bed, port, &[]);
    let st = agent.wait().unwrap();
    let log = fs::read_to_string(bed.path("agent.log")).unwrap();
    assert!(st.success(), "{log}");
    assert!(log.contains("retrying in 1 s") && log.contains("retrying in 2 s"), "the retries back off: {log}");
    bed.ok(&["image", "verify", "img", "--target", disk.to_str().unwrap()]);
    assert_eq!(job(&bed, &s, &token, &id)["state"], "succeeded");
}
