//! The agent takes its task from the server: a node in a reload job
//! network-boots (here: its boot script is fetched as iPXE would), and
//! `shoal-agent run` acts on the script's kernel command line, which
//! carries a catalog-issued one-time token and no task. The agent asks
//! `/v1/agent/{mac}/task`, loads, sends heartbeats and reports with its
//! log; the job ends, the node is ready and boots its disk next. A spent
//! token is refused, and a disk too small for the image is refused before
//! anything is written, reported, and leaves the node failed with the
//! agent's log kept. On loopback; no root needed beyond the bed.

use std::fs;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::*;

const MAC: &str = "52:54:00:aa:00:01";

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shoal server` on loopback with an agent kernel and initramfs to serve
/// (their bytes do not matter: no machine boots them here).
fn server(bed: &Bed) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    fs::write(bed.path("vmlinuz"), b"kernel").unwrap();
    fs::write(bed.path("initrd"), b"initrd").unwrap();
    let child = Command::new(shoal_bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--agent-kernel", bed.path("vmlinuz").to_str().unwrap()])
        .args(["--agent-initrd", bed.path("initrd").to_str().unwrap()])
        .env("SHOAL_DATA_DIR", bed.store())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path("server.log")).unwrap()))
        .spawn()
        .unwrap();
    let s = Server { child, url: format!("http://127.0.0.1:{port}") };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
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
