//! Multicast loads in the namespace test bed: a `shoal server` in one
//! namespace, `shoal-agent load` in each node's, each target checked
//! against a reference deploy and with e2fsck.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::netbed::{Host, NetBed};
use shoal_tests::*;

fn start_server(net: &mut NetBed, bed: &Bed, rate_mbit: u32) -> usize {
    let srv = net.server.clone();
    let mut cmd = srv.command(shoal_bin());
    cmd.args(["server", "--listen", &format!("{}:4870", srv.addr), "--mcast-iface", &srv.addr.to_string()])
        .args(["--idle-secs", "20", "--rate-mbit", &rate_mbit.to_string()])
        .env("SHOAL_DATA_DIR", bed.store())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(bed.path("server.log")).unwrap()));
    net.spawn(cmd)
}

fn agent(node: &Host, server: &Host, dest: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = node.command(agent_bin());
    c.args(["load", "--json", "--server", &format!("http://{}:4870", server.addr), "--image", "img"])
        .args(["--iface", &node.addr.to_string()])
        .args(extra)
        .arg(dest);
    c
}

/// Waits for the server's HTTP port, asking from a node.
fn wait_ready(net: &NetBed) {
    let start = Instant::now();
    loop {
        let probe = net.nodes[0]
            .command("/usr/bin/python3")
            .args(["-c", &format!("import socket; socket.create_connection(('{}', 4870), 1)", net.server.addr)])
            .output()
            .unwrap();
        if probe.status.success() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "agent failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("agent report is JSON")
}

/// Runs one agent per node at once; returns their reports.
fn load_all(net: &NetBed, bed: &Bed, extra: &[&str]) -> Vec<serde_json::Value> {
    let children: Vec<_> = net
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let dest = bed.path(&format!("node{i}.img"));
            agent(n, &net.server, &dest, extra).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    children.into_iter().map(|c| report(&c.wait_with_output().unwrap())).collect()
}

fn check_targets(net: &NetBed, bed: &Bed, reference: &std::path::Path) {
    let want = digest(reference);
    for i in 0..net.nodes.len() {
        let dest = bed.path(&format!("node{i}.img"));
        assert_eq!(digest(&dest), want, "node {i} differs from the reference deploy");
        fsck(&dest);
    }
}

#[test]
fn eight_receivers_without_loss() {
    let bed = Bed::new();
    let reference = bed.ext4_image(192, 31);
    let mut net = NetBed::new(8);
    start_server(&mut net, &bed, 400);
    wait_ready(&net);
    let reports = load_all(&net, &bed, &[]);
    for r in &reports {
        assert_eq!(r["fell_back_to_http"], false, "{r}");
        assert!(r["chunks_multicast"].as_u64().unwrap() > 0, "{r}");
    }
    check_targets(&net, &bed, &reference);
}

#[test]
fn eight_receivers_with_five_percent_loss_each() {
    let bed = Bed::new();
    let reference = bed.ext4_image(128, 31);
    let mut net = NetBed::new(8);
    for n in &net.nodes {
        n.udp_loss(5);
    }
    start_server(&mut net, &bed, 400);
    wait_ready(&net);
    let reports = load_all(&net, &bed, &[]);
    for r in &reports {
        assert_eq!(r["fell_back_to_http"], false, "{r}");
    }
    check_targets(&net, &bed, &reference);
}

#[test]
fn multicast_blocked_entirely_falls_back_to_http() {
    let bed = Bed::new();
    let reference = bed.ext4_image(96, 31);
    let mut net = NetBed::new(2);
    for n in &net.nodes {
        n.block_multicast();
    }
    start_server(&mut net, &bed, 400);
    wait_ready(&net);
    let reports = load_all(&net, &bed, &["--fallback-secs", "2"]);
    for r in &reports {
        assert_eq!(r["fell_back_to_http"], true, "{r}");
        let (http, present) = (r["chunks_http"].as_u64().unwrap(), r["chunks_present"].as_u64().unwrap());
        assert_eq!(http + present, r["chunks"].as_u64().unwrap(), "{r}");
        assert_eq!(r["chunks_multicast"], 0, "{r}");
    }
    check_targets(&net, &bed, &reference);
}

#[test]
fn a_receiver_restarted_midway_fetches_only_what_it_lacks() {
    let bed = Bed::new();
    let reference = bed.ext4_image(160, 31);
    let mut net = NetBed::new(1);
    start_server(&mut net, &bed, 16);
    wait_ready(&net);
    let dest = bed.path("node0.img");
    let mut first =
        agent(&net.nodes[0], &net.server, &dest, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    first.kill().unwrap();
    first.wait().unwrap();
    let r = report(&agent(&net.nodes[0], &net.server, &dest, &[]).output().unwrap());
    assert!(r["chunks_present"].as_u64().unwrap() > 0, "nothing was recognised on the disk: {r}");
    check_targets(&net, &bed, &reference);
    // A node that already holds the image reads, and fetches nothing.
    let again = report(&agent(&net.nodes[0], &net.server, &dest, &[]).output().unwrap());
    assert_eq!(again["chunks_present"], again["chunks"], "{again}");
}

/// The session a node gets for the image, asked from inside `node`.
fn session_of(node: &Host, server: &Host) -> serde_json::Value {
    let py = format!(
        "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(urllib.request.Request('http://{}:4870/v1/images/img/session', method='POST')).read().decode())",
        server.addr
    );
    let out = sh(node.command("/usr/bin/python3").args(["-c", &py]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_late_joiner_and_a_hostile_host_on_the_segment() {
    let bed = Bed::new();
    let reference = bed.ext4_image(160, 31);
    let sizes: Vec<String> = bed.json(&["image", "info", "img"])["manifest"]["segments"][0]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["csize"].to_string())
        .collect();
    // Node 2 is the attacker; nodes 0 and 1 load, 1 joins late.
    let mut net = NetBed::new(3);
    start_server(&mut net, &bed, 16);
    wait_ready(&net);
    let info = session_of(&net.nodes[2], &net.server);
    let mut forge = net.nodes[2].command(forge_bin());
    forge.args([
        info["session"].to_string(),
        info["group"].as_str().unwrap().to_string(),
        info["port"].to_string(),
        net.nodes[2].addr.to_string(),
        "20".to_string(),
        sizes.join(","),
    ]);
    forge.stdout(Stdio::null());
    net.spawn(forge);
    let d0 = bed.path("node0.img");
    let first =
        agent(&net.nodes[0], &net.server, &d0, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let d1 = bed.path("node1.img");
    let late =
        agent(&net.nodes[1], &net.server, &d1, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let r0 = report(&first.wait_with_output().unwrap());
    let r1 = report(&late.wait_with_output().unwrap());
    for r in [&r0, &r1] {
        assert_eq!(r["fell_back_to_http"], false, "{r}");
        let noticed = ["malformed_packets", "chunks_failed_verification", "foreign_packets"]
            .iter()
            .map(|k| r[*k].as_u64().unwrap())
            .sum::<u64>();
        assert!(noticed > 0, "forged packets went unnoticed: {r}");
    }
    for d in [&d0, &d1] {
        assert_eq!(digest(d), digest(&reference));
        fsck(d);
    }
}

#[test]
fn the_server_restarted_mid_session() {
    let bed = Bed::new();
    let reference = bed.ext4_image(160, 31);
    let mut net = NetBed::new(2);
    let srv = start_server(&mut net, &bed, 16);
    wait_ready(&net);
    let children: Vec<_> = (0..2)
        .map(|i| {
            let d = bed.path(&format!("node{i}.img"));
            agent(&net.nodes[i], &net.server, &d, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    net.child(srv).kill().unwrap();
    net.child(srv).wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    start_server(&mut net, &bed, 400);
    for c in children {
        let r = report(&c.wait_with_output().unwrap());
        assert_eq!(r["fell_back_to_http"], false, "{r}");
    }
    check_targets(&net, &bed, &reference);
}

#[test]
fn two_images_at_once_on_distinct_groups_and_ports() {
    let bed = Bed::new();
    let ref_a = bed.ext4_image(96, 31);
    // A second image: a different filesystem.
    let disk_b = bed.path("b.img");
    std::fs::File::create(&disk_b).unwrap().set_len(64 * MIB).unwrap();
    let tree_b = bed.path("files-b");
    real_files(&tree_b, 8 * MIB);
    mkfs_ext4(&disk_b, 0, 64 * MIB, Some(&tree_b), &["-t", "ext3"]);
    bed.capture(&disk_b, "other", &[]);
    let ref_b = bed.path("ref-b.img");
    bed.ok(&["image", "deploy", "other", ref_b.to_str().unwrap()]);

    let mut net = NetBed::new(2);
    start_server(&mut net, &bed, 400);
    wait_ready(&net);
    let sa = session_of(&net.nodes[0], &net.server);
    let d0 = bed.path("node0.img");
    let d1 = bed.path("node1.img");
    let a = agent(&net.nodes[0], &net.server, &d0, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut cb = net.nodes[1].command(agent_bin());
    cb.args(["load", "--json", "--server", &format!("http://{}:4870", net.server.addr), "--image", "other"])
        .args(["--iface", &net.nodes[1].addr.to_string()])
        .arg(&d1);
    let b = cb.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let sb = {
        let py = format!(
            "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(urllib.request.Request('http://{}:4870/v1/images/other/session', method='POST')).read().decode())",
            net.server.addr
        );
        serde_json::from_str::<serde_json::Value>(&sh(net.nodes[1].command("/usr/bin/python3").args(["-c", &py])))
            .unwrap()
    };
    assert_ne!(sa["group"], sb["group"]);
    assert_ne!(sa["port"], sb["port"]);
    report(&a.wait_with_output().unwrap());
    report(&b.wait_with_output().unwrap());
    assert_eq!(digest(&d0), digest(&ref_a));
    assert_eq!(digest(&d1), digest(&ref_b));
    // --verify-only on a node that holds the image: everything checks, nothing is written.
    let before = digest(&d1);
    let mut v = net.nodes[1].command(agent_bin());
    v.args(["load", "--json", "--verify-only", "--server", &format!("http://{}:4870", net.server.addr)])
        .args(["--image", "other", "--iface", &net.nodes[1].addr.to_string()])
        .arg(&d1);
    let r = report(&v.output().unwrap());
    assert_eq!(r["chunks_present"], r["chunks"], "{r}");
    assert_eq!(digest(&d1), before);
}
