//! The control plane end to end: `shoal server` as a process on
//! 127.0.0.1 with a scratch data directory, driven by the `shoal` CLI
//! (bootstrap commands on the catalog file, the rest through the API)
//! and by plain HTTP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::*;

/// `shoal server` on a free port; killed when dropped.
struct Server {
    child: Child,
    url: String,
    addr: String,
}

impl Server {
    fn start(bed: &Bed) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(bed.path("server.log")).expect("log file");
        let child = Command::new(shoal_bin())
            .args(["server", "--listen", &addr, "--mcast-iface", "127.0.0.1"])
            .env("SHOAL_DATA_DIR", bed.store())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("shoal server starts");
        let server = Server { child, url: format!("http://{addr}"), addr };
        // Readiness, not a timing budget: wait as long as a slow machine needs.
        let deadline = Instant::now() + Duration::from_secs(120);
        while http(&server.addr, "GET", "/v1/openapi.json", None, None).map(|(s, _, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "the server never answered; see {}", bed.path("server.log").display());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; answers (status, content type, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let out = String::from_utf8_lossy(&raw);
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let ctype = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
        .unwrap_or_default();
    Some((status, ctype, body.to_string()))
}

/// `shoal ARGS` against the bed's store and, with a token, the server.
fn shoal(bed: &Bed, srv: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(shoal_bin())
        .args(args)
        .env("SHOAL_DATA_DIR", bed.store())
        .env("SHOAL_URL", &srv.url)
        .env("SHOAL_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("shoal runs")
}

fn ok(bed: &Bed, srv: &Server, token: &str, args: &[&str]) -> String {
    let o = shoal(bed, srv, token, args);
    assert!(
        o.status.success(),
        "shoal {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(bed: &Bed, srv: &Server, token: &str, args: &[&str], code: i32, says: &str) {
    let o = shoal(bed, srv, token, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "shoal {args:?}: {err}");
    assert!(err.contains(says), "shoal {args:?}: wanted {says:?} in: {err}");
}

#[test]
fn operators_share_images_register_nodes_and_reload_them_through_the_api() {
    let bed = Bed::new();
    let disk = bed.path("d.img");
    std::fs::File::create(&disk).unwrap().set_len(16 * MIB).unwrap();
    mkfs_ext4(&disk, 0, 16 * MIB, None, &[]);
    // Captured before any catalog exists: the server records it under
    // project `default` when it starts.
    bed.capture(&disk, "ubuntu24-std", &[]);
    let srv = Server::start(&bed);

    // Bootstrap on the catalog file while the server runs.
    bed.ok(&["project", "create", "lab"]);
    let lab = bed.ok(&["token", "create", "--project", "lab"]).trim().to_string();
    let ops = bed.ok(&["token", "create", "--project", "default", "--admin"]).trim().to_string();
    assert!(lab.starts_with("shoal_") && ops.starts_with("shoal_"));

    // The owner shares; lab can now see it.
    fails(&bed, &srv, &lab, &["image", "share", "ubuntu24-std", "--project", "lab"], 1, "404");
    let out = ok(&bed, &srv, &ops, &["image", "share", "ubuntu24-std", "--project", "lab"]);
    assert!(out.contains("shared (shared with lab)"), "{out}");

    ok(
        &bed,
        &srv,
        &lab,
        &[
            "node",
            "register",
            "pc1",
            "--mac",
            "52:54:00:00:01:01",
            "--type",
            "pc3000",
            "--power",
            "ipmi",
            "--power-address",
            "10.0.1.1",
        ],
    );
    ok(&bed, &srv, &lab, &["node", "register", "pc2", "--mac", "52:54:00:00:01:02", "--type", "pc3000"]);
    let list = ok(&bed, &srv, &lab, &["node", "list"]);
    assert!(list.contains("pc1") && list.contains("pc2") && list.contains("free"), "{list}");
    fails(&bed, &srv, &lab, &["node", "register", "pc3", "--mac", "52:54:00:00:01:01", "--type", "pc3000"], 1, "409");
    fails(
        &bed,
        &srv,
        &lab,
        &["node", "register", "PC 3", "--mac", "52:54:00:00:01:03", "--type", "pc3000"],
        2,
        "invalid name",
    );

    // Reload both nodes; a second reload of a busy node is refused.
    let job: serde_json::Value = serde_json::from_str(&ok(
        &bed,
        &srv,
        &lab,
        &["--json", "node", "reload", "pc1", "pc2", "--image", "ubuntu24-std"],
    ))
    .unwrap();
    let id = job["id"].as_i64().expect("job id").to_string();
    let shown = ok(&bed, &srv, &lab, &["job", "show", &id]);
    assert!(shown.contains("reload (pending)") && shown.contains("pc1") && shown.contains("pc2"), "{shown}");
    fails(&bed, &srv, &lab, &["node", "reload", "pc1", "--image", "ubuntu24-std"], 1, "busy with job");
    // Only the owner may delete, and not while a job uses the image.
    fails(&bed, &srv, &lab, &["image", "delete", "ubuntu24-std"], 1, "403");
    fails(&bed, &srv, &ops, &["image", "delete", "ubuntu24-std"], 1, "in use");
    assert!(ok(&bed, &srv, &lab, &["job", "cancel", &id]).contains("cancelled"));

    // The project's default image.
    fails(&bed, &srv, &lab, &["node", "reload", "pc1"], 1, "no default image");
    let (status, _, body) =
        http(&srv.addr, "PUT", "/v1/projects/lab/default-image", Some(&lab), Some(r#"{"image": "ubuntu24-std"}"#))
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let out = ok(&bed, &srv, &lab, &["node", "reload", "pc1"]);
    assert!(out.contains("reload of pc1 with ubuntu24-std:1"), "{out}");

    let status = ok(&bed, &srv, &lab, &["status"]);
    assert!(
        status.contains("project lab: 1 images") && status.contains("1 booting") && status.contains("1 pending"),
        "{status}"
    );
    let (code, ctype, metrics) = http(&srv.addr, "GET", "/metrics", None, None).unwrap();
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert!(
        metrics.contains("shoal_jobs{state=\"cancelled\"} 1") && metrics.contains("shoal_nodes{state=\"booting\"} 1"),
        "{metrics}"
    );

    // The image-serving routes are still there beside the control API.
    assert_eq!(http(&srv.addr, "GET", "/v1/images/ubuntu24-std/manifest", None, None).unwrap().0, 200);
    assert_eq!(http(&srv.addr, "GET", "/v1/key", None, None).unwrap().0, 200);
}

#[test]
fn api_errors_are_problem_documents_and_the_cli_says_what_went_wrong() {
    let bed = Bed::new();
    let srv = Server::start(&bed);
    bed.ok(&["project", "create", "lab"]);
    let lab = bed.ok(&["token", "create", "--project", "lab"]).trim().to_string();

    let (status, ctype, body) = http(&srv.addr, "GET", "/v1/images", None, None).unwrap();
    assert_eq!((status, ctype.as_str()), (401, "application/problem+json"), "{body}");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["status"], 401);
    assert!(p["type"].is_string() && p["title"].is_string() && p["detail"].is_string(), "{p}");
    let (status, _, body) = http(&srv.addr, "POST", "/v1/nodes", Some(&lab), Some("{not json")).unwrap();
    assert_eq!(status, 400, "{body}");

    fails(&bed, &srv, "", &["node", "list"], 1, "SHOAL_TOKEN");
    fails(&bed, &srv, "shoal_bogus", &["node", "list"], 1, "401");
    fails(&bed, &srv, &lab, &["node", "show", "pc9"], 1, "no node named pc9");
    fails(&bed, &srv, &lab, &["job", "show", "77"], 1, "no job named 77");
    fails(&bed, &srv, &lab, &["image", "share", "nosuch", "--public"], 1, "no image named nosuch");
    let o = Command::new(shoal_bin())
        .args(["node", "list"])
        .env("SHOAL_DATA_DIR", bed.store())
        .env_remove("SHOAL_URL")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("SHOAL_URL"), "{}", String::from_utf8_lossy(&o.stderr));
    // The local image commands keep working without --url.
    bed.ok(&["image", "list"]);
    assert!(bed.ok(&["image", "delete", "--help"]).contains("SHOAL_URL"));
}
