//! The job runner end to end: `shoal server` power-cycles simulated nodes
//! through the `command` power driver, whose program does what a booting
//! node would: fetch `/boot/{mac}.ipxe` as iPXE does and run `shoal-agent
//! run` on the script's kernel command line, with a file as its disk.
//! A 40-node reload completes, each node an agent in its own namespace of
//! a net bed (`shoal_tests::netbed`) loading by multicast over the bed's
//! bridge; a server killed with SIGKILL mid-job resumes it from the
//! catalog on restart without power-cycling anyone twice; overlapping jobs
//! are refused; capture jobs from the CLI. All but the first on loopback.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::netbed::NetBed;
use shoal_tests::*;

struct Server {
    child: Child,
    url: String,
    port: u16,
    /// The namespace it runs in, when on a net bed: clients run there too.
    ns: Option<String>,
}

impl Server {
    /// `program` run where the server can be reached.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulated nodes' agents, killed (by pid) when the test ends.
struct Agents(std::path::PathBuf);

impl Drop for Agents {
    fn drop(&mut self) {
        for e in fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                    let _ = Command::new("kill").arg(pid.to_string()).stderr(Stdio::null()).status();
                }
            }
        }
    }
}

fn start_server(bed: &Bed, port: u16, log: &str, extra: &[String]) -> Server {
    let child = Command::new(shoal_bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .args(["--agent-kernel", bed.path("vmlinuz").to_str().unwrap()])
        .args(["--agent-initrd", bed.path("initrd").to_str().unwrap()])
        .args(["--agent-timeout-secs", "60", "--heartbeat-timeout-secs", "60", "--log-format", "json"])
        .env("SHOAL_DATA_DIR", bed.store())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path(log)).unwrap()))
        .spawn()
        .unwrap();
    let s = Server { child, url: format!("http://127.0.0.1:{port}"), port, ns: None };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn server(bed: &Bed) -> Server {
    server_with(bed, &[])
}

fn server_with(bed: &Bed, extra: &[String]) -> Server {
    fs::write(bed.path("vmlinuz"), b"kernel").unwrap();
    fs::write(bed.path("initrd"), b"initrd").unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    start_server(bed, port, "server.log", extra)
}

/// `shoal server` in the net bed's server namespace, on its bridge
/// address, with multicast out of it.
fn netbed_server(bed: &Bed, net: &NetBed) -> Server {
    fs::write(bed.path("vmlinuz"), b"kernel").unwrap();
    fs::write(bed.path("initrd"), b"initrd").unwrap();
    let addr = net.server.addr;
    let child = net
        .server
        .command(shoal_bin())
        .args(["server", "--listen", &format!("{addr}:4870"), "--mcast-iface", &addr.to_string()])
        .args(["--agent-kernel", bed.path("vmlinuz").to_str().unwrap()])
        .args(["--agent-initrd", bed.path("initrd").to_str().unwrap()])
        .args(["--agent-timeout-secs", "60", "--heartbeat-timeout-secs", "60"])
        .env("SHOAL_DATA_DIR", bed.store())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(bed.path("server.log")).unwrap()))
        .spawn()
        .unwrap();
    let s = Server { child, url: format!("http://{addr}:4870"), port: 4870, ns: Some(net.server.ns.clone()) };
    let start = Instant::now();
    while !s
        .command("curl")
        .args(["-fsS", "-o", "/dev/null", &format!("{}/v1/openapi.json", s.url)])
        .status()
        .unwrap()
        .success()
    {
        assert!(start.elapsed() < Duration::from_secs(20), "the server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

fn client(bed: &Bed, s: &Server, token: &str, args: &[&str]) -> Value {
    let out = s
        .command(shoal_bin())
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
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The power program of every simulated node: `on` and `cycle` start the
/// node's agent in the background after `delay` seconds (as a machine
/// would boot), `status` says off, `off` does nothing. Every call is
/// logged in `power.log`.
fn power_program(bed: &Bed, s: &Server, key: &str, delay: u32) -> String {
    let dir = bed.path("nodes");
    fs::create_dir_all(&dir).unwrap();
    let p = bed.path("power.sh");
    let script = format!(
        r#"#!/bin/sh
# power.sh ACTION NODE MAC
dir={dir}
echo "$1 $2" >> $dir/power.log
case "$1" in
status) echo off; exit 0 ;;
off) exit 0 ;;
esac
# On a net bed, the node is its namespace.
in=""
[ -f $dir/$2.ns ] && in="ip netns exec $(cat $dir/$2.ns)"
(
  sleep {delay}
  line=$($in curl -fsS "{url}/boot/$3.ipxe" |
    awk '/^kernel /{{for (i = 5; i <= NF && $i != "||"; i++) printf "%s%s", (i > 5 ? " " : ""), $i}}')
  exec $in {agent} run --cmdline "$line" --target $dir/$2.img --key {key}
) > $dir/$2.log 2>&1 < /dev/null &
echo $! > $dir/$2.pid
exit 0
"#,
        dir = dir.display(),
        url = s.url,
        agent = agent_bin().display(),
    );
    fs::write(&p, script).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

fn register(bed: &Bed, s: &Server, token: &str, program: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("sim{i:02}");
            let mac = format!("52:54:00:bb:00:{i:02x}");
            let args = ["node", "register", &name, "--mac", &mac, "--type", "vm", "--power", "command"];
            client(bed, s, token, &[&args[..], &["--power-address", program]].concat());
            fs::File::create(bed.path(&format!("nodes/{name}.img"))).unwrap().set_len(64 * MIB).unwrap();
            name
        })
        .collect()
}

fn wait_for(bed: &Bed, s: &Server, token: &str, id: &Value, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let j = client(bed, s, token, &["job", "show", &id.to_string()]);
        if done(&j) {
            return j;
        }
        if start.elapsed() > limit {
            let logs = fs::read_to_string(bed.path("nodes/sim00.log")).unwrap_or_default();
            panic!("job {id} did not get there in {limit:?}: {j}\nsim00:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn finished(j: &Value) -> bool {
    !matches!(j["state"].as_str(), Some("pending" | "running"))
}

fn power_calls(bed: &Bed) -> Vec<String> {
    fs::read_to_string(bed.path("nodes/power.log")).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn a_forty_node_reload_against_simulated_nodes_completes() {
    let bed = Bed::new();
    let reference = bed.ext4_image(64, 31);
    let key = bed.ok(&["key"]).trim().to_string();
    let net = NetBed::new(40);
    let s = netbed_server(&bed, &net);
    let _agents = Agents(bed.path("nodes"));
    let token = bed.ok(&["token", "create", "--project", "default", "--admin"]).trim().to_string();
    let program = power_program(&bed, &s, &key, 0);
    for (i, h) in net.nodes.iter().enumerate() {
        fs::write(bed.path(&format!("nodes/sim{i:02}.ns")), &h.ns).unwrap();
    }
    let nodes = register(&bed, &s, &token, &program, 40);
    let mut args = vec!["node", "reload"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--image", "img"]);
    let t = Instant::now();
    let id = client(&bed, &s, &token, &args)["id"].clone();
    let j = wait_for(&bed, &s, &token, &id, Duration::from_secs(240), finished);
    eprintln!("40 nodes reloaded in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(j["state"], "succeeded", "{j}");
    assert!(j["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "done" && n["progress"] == 100), "{j}");
    // One power cycle each: every node started (status, then on).
    let calls = power_calls(&bed);
    for n in &nodes {
        assert_eq!(calls.iter().filter(|c| *c == &format!("on {n}")).count(), 1, "{n}: {calls:?}");
    }
    for n in ["sim00", "sim17", "sim39"] {
        assert_eq!(digest(&bed.path(&format!("nodes/{n}.img"))), digest(&reference), "{n}'s disk");
    }
    let list = client(&bed, &s, &token, &["node", "list"]);
    assert!(list.as_array().unwrap().iter().all(|n| n["state"] == "ready" && n["boot"] == "local"), "{list}");
    let metrics = sh(s.command("curl").args(["-fsS", &format!("{}/metrics", s.url)]));
    assert!(metrics.contains("shoal_jobs{state=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("shoal_power_commands_total 40"), "{metrics}");
    let counter = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
        line[name.len() + 1..].parse().unwrap()
    };
    assert!(counter("shoal_sessions_started_total") >= 1, "{metrics}");
    assert!(counter("shoal_session_receivers_joined_total") >= 40, "{metrics}");
    assert!(counter("shoal_session_bytes_sent_total") > 0, "{metrics}");
}

#[test]
fn a_server_killed_mid_job_resumes_it_from_the_catalog_on_restart() {
    let bed = Bed::new();
    let reference = bed.ext4_image(64, 32);
    let key = bed.ok(&["key"]).trim().to_string();
    let mut s = server(&bed);
    let _agents = Agents(bed.path("nodes"));
    let token = bed.ok(&["token", "create", "--project", "default", "--admin"]).trim().to_string();
    // The nodes take 3 s to "boot": the server is gone by then.
    let program = power_program(&bed, &s, &key, 3);
    let nodes = register(&bed, &s, &token, &program, 4);
    let mut args = vec!["node", "reload"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--image", "img"]);
    let id = client(&bed, &s, &token, &args)["id"].clone();
    let before = wait_for(&bed, &s, &token, &id, Duration::from_secs(30), |j| {
        j["history"].as_array().unwrap().iter().filter(|e| e["state"] == "power").count() == 4
    });
    // SIGKILL: no shutdown, no flush beyond what each transaction did.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let integrity = sh(Command::new("sqlite3").arg(bed.store().join("catalog.db")).arg("PRAGMA integrity_check"));
    assert_eq!(integrity.trim(), "ok");
    std::thread::sleep(Duration::from_secs(1));
    let port = s.port;
    drop(s);
    let s = start_server(&bed, port, "server2.log", &[]);
    let j = wait_for(&bed, &s, &token, &id, Duration::from_secs(120), finished);
    assert_eq!(j["state"], "succeeded", "{j}");
    // Nothing lost: the history before the kill is the start of the history after.
    let (old, new) = (before["history"].as_array().unwrap(), j["history"].as_array().unwrap());
    assert_eq!(&new[..old.len()], &old[..], "history rewritten");
    // The restarted runner knew each node had been cycled already.
    let calls = power_calls(&bed);
    assert_eq!(calls.iter().filter(|c| c.starts_with("on ")).count(), 4, "{calls:?}");
    assert_eq!(j["history"].as_array().unwrap().iter().filter(|e| e["state"] == "power").count(), 4, "{j}");
    for n in &nodes {
        assert_eq!(digest(&bed.path(&format!("nodes/{n}.img"))), digest(&reference), "{n}'s disk");
    }
}

#[test]
fn a_job_on_a_node_already_in_one_is_refused_and_changes_nothing_and_tftp_is_counted() {
    let bed = Bed::new();
    bed.ext4_image(16, 33);
    let key = bed.ok(&["key"]).trim().to_string();
    // TFTP on loopback too, to see its counters in /metrics.
    let tftp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    fs::write(bed.path("bios.kpxe"), vec![7u8; 3000]).unwrap();
    fs::write(bed.path("ipxe.efi"), b"efi").unwrap();
    let s = server_with(
        &bed,
        &[
            "--tftp-listen".into(),
            format!("127.0.0.1:{tftp}"),
            "--ipxe-bios".into(),
            bed.path("bios.kpxe").display().to_string(),
            "--ipxe-efi".into(),
            bed.path("ipxe.efi").display().to_string(),
        ],
    );
    let _agents = Agents(bed.path("nodes"));
    let token = bed.ok(&["token", "create", "--project", "default", "--admin"]).trim().to_string();
    let got = sh(Command::new("curl").args([
        "-fsS",
        "-o",
        bed.path("got.kpxe").to_str().unwrap(),
        &format!("tftp://127.0.0.1:{tftp}/undionly.kpxe"),
    ]));
    assert!(got.is_empty());
    assert_eq!(fs::read(bed.path("got.kpxe")).unwrap(), vec![7u8; 3000]);
    let metrics = sh(Command::new("curl").args(["-fsS", &format!("{}/metrics", s.url)]));
    assert!(
        metrics.contains("# TYPE shoal_tftp_transfers_ok_total counter\nshoal_tftp_transfers_ok_total 1\n"),
        "{metrics}"
    );
    // Nodes that never boot (a minute's delay): the job stays open.
    let program = power_program(&bed, &s, &key, 60);
    register(&bed, &s, &token, &program, 3);
    let first = client(&bed, &s, &token, &["node", "reload", "sim00", "sim01", "--image", "img"]);
    let jobs_before = client(&bed, &s, &token, &["job", "list"]);
    let out = Command::new(shoal_bin())
        .args(["node", "reload", "sim02", "sim01", "--image", "img"])
        .env("SHOAL_URL", &s.url)
        .env("SHOAL_TOKEN", &token)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("409") && err.contains(&format!("node sim01 is busy with job {}", first["id"])), "{err}");
    assert_eq!(client(&bed, &s, &token, &["job", "list"]), jobs_before);
    let n = client(&bed, &s, &token, &["node", "show", "sim02"]);
    assert_eq!((n["boot"].as_str(), n["job"].is_null()), (Some("local"), true), "{n}");
    // Cancelling frees the node for the next job.
    client(&bed, &s, &token, &["job", "cancel", &first["id"].to_string()]);
    client(&bed, &s, &token, &["node", "reload", "sim02", "sim01", "--image", "img"]);
}

/// `shoal ARGS` (text output) as a client of `s`; gives (success, stdout, stderr).
fn client_text(s: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = s
        .command(shoal_bin())
        .args(args)
        .env("SHOAL_URL", &s.url)
        .env("SHOAL_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn image_create_from_a_node_and_snapshot_run_capture_jobs_that_job_watch_follows() {
    let bed = Bed::new();
    let reference = bed.ext4_image(64, 34);
    let key = bed.ok(&["key"]).trim().to_string();
    let s = server(&bed);
    let _agents = Agents(bed.path("nodes"));
    let token = bed.ok(&["token", "create", "--project", "default", "--admin"]).trim().to_string();
    let program = power_program(&bed, &s, &key, 0);
    register(&bed, &s, &token, &program, 1);
    // The node's disk holds the image (as after a reload).
    fs::copy(&reference, bed.path("nodes/sim00.img")).unwrap();

    let (ok, out, err) = client_text(&s, &token, &["image", "create", "--from-node", "sim00", "lab", "--watch"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("capture of sim00") && out.contains("succeeded: 1 of 1 nodes done"), "{out}");
    assert!(out.contains(" sim00 ") && out.contains(" power "), "watch prints the history: {out}");
    // The catalog has it, as the job's project's.
    let api_images = || -> Value {
        let auth = format!("Authorization: Bearer {token}");
        serde_json::from_str(&sh(Command::new("curl").args(["-fsS", "-H", &auth, &format!("{}/v1/images", s.url)])))
            .unwrap()
    };
    let images = api_images();
    let lab: Vec<&Value> = images.as_array().unwrap().iter().filter(|i| i["name"] == "lab").collect();
    assert_eq!(lab.len(), 1, "{images}");
    assert_eq!(lab[0]["owner"], "default", "{images}");

    let (ok, out, err) = client_text(&s, &token, &["image", "snapshot", "sim00", "lab", "--watch"]);
    assert!(ok, "{out}\n{err}");
    let images = api_images();
    let versions = images.as_array().unwrap().iter().filter(|i| i["name"] == "lab").count();
    assert_eq!(versions, 2, "a new version of lab: {images}");

    // A job that fails: watch says so and exits non-zero.
    fs::write(bed.path("nodes/sim00.img"), vec![0u8; 1 << 20]).unwrap();
    let id = client(&bed, &s, &token, &["node", "reload", "sim00", "--image", "img"])["id"].to_string();
    let (ok, out, _) = client_text(&s, &token, &["job", "watch", &id, "--every", "1"]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("job {id} failed: 0 of 1 nodes done")), "{out}");
}
