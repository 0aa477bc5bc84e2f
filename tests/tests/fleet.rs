//! The node side end to end: three QEMU nodes with empty disks, registered
//! in the catalog, reloaded by one job through one multicast session (each
//! PXE-boots into the agent initramfs, which takes its task from the
//! server), every disk checked against the image, each node then booted
//! from its own disk into the image's marker OS. Then a changed node (the
//! marker OS records on its disk where it first booted) is captured back
//! to the server by a capture job, and that capture is loaded onto another
//! node, which boots showing the first node's mark; and a wipe job zeroes
//! a node's disk through the agent. Needs root, the
//! namespace bed and QEMU (TCG); takes a few minutes.

use std::time::Duration;

use shoal_tests::fleet::{self, agent_line, load_figures, marker_line, Fleet};
use shoal_tests::{osimage, Bed, MIB};

/// One power-on of up to three nodes at once under TCG on two cores.
const ROUND: Duration = Duration::from_secs(420);

#[test]
fn three_nodes_reload_through_one_session_boot_their_disks_and_a_capture_loads_onto_another() {
    let dir = Bed::new();
    osimage::build(&dir, "demo", "64M");
    let initrd = fleet::agent_initramfs(&dir);
    let mut f = Fleet::new(&dir, &initrd, 3, 64 * MIB);

    let job = f.api(&["node", "reload", "n1", "n2", "n3", "--image", "demo"]);
    for r in f.power_on(&[0, 1, 2], ROUND) {
        assert!(agent_line(&r.console, "reported to the server: done").is_some(), "{}:\n{}", r.node, r.console);
        let (multicast, bytes, secs) = load_figures(&r.console).unwrap_or_else(|| panic!("{}:\n{}", r.node, r.console));
        eprintln!(
            "{}: agent after {:?}, {multicast} chunks by multicast, {bytes} bytes in {secs} s",
            r.node, r.to_agent
        );
        assert!(multicast > 0, "{}: nothing came by multicast:\n{}", r.node, r.console);
    }
    let j = f.wait_job(&job["id"], Duration::from_secs(30));
    assert_eq!(j["state"], "succeeded", "{j}");
    let sessions = fleet::server_log(&dir).matches("session started").count();
    assert_eq!(sessions, 1, "the three loads did not share one session:\n{}", fleet::server_log(&dir));
    for n in &f.nodes {
        assert!(f.verify("demo", &n.disk), "{}'s disk does not hold the image", n.name);
    }

    for r in f.power_on(&[0, 1, 2], ROUND) {
        let marker =
            marker_line(&r.console).unwrap_or_else(|| panic!("{} did not boot its disk:\n{}", r.node, r.console));
        assert_eq!(marker, format!("{} node={} origin={} boots=1", osimage::MARKER, r.node, r.node), "{}", r.console);
        assert!(!r.console.contains("running as PID 1"), "{} booted the agent again", r.node);
        assert!(
            r.console.contains("Booting from SAN device 0x80") && !r.console.contains("0x80 failed"),
            "{}",
            r.console
        );
    }

    let cap = f.post("/v1/jobs", &serde_json::json!({"kind": "capture", "node": "n1", "name": "captured"}));
    let run = f.power_on(&[0], ROUND).remove(0);
    assert!(agent_line(&run.console, "captured as captured:").is_some(), "{}", run.console);
    let j = f.wait_job(&cap["id"], Duration::from_secs(30));
    assert_eq!(j["state"], "succeeded", "{j}");

    let job = f.api(&["node", "reload", "n3", "--image", "captured"]);
    let run = f.power_on(&[2], ROUND).remove(0);
    assert!(agent_line(&run.console, "reported to the server: done").is_some(), "{}", run.console);
    assert_eq!(f.wait_job(&job["id"], Duration::from_secs(30))["state"], "succeeded");
    assert!(f.verify("captured", &f.nodes[2].disk), "n3's disk does not hold the capture");
    let run = f.power_on(&[2], ROUND).remove(0);
    let marker = marker_line(&run.console).unwrap_or_else(|| panic!("n3 did not boot its disk:\n{}", run.console));
    assert_eq!(marker, format!("{} node=n3 origin=n1 boots=2", osimage::MARKER), "{}", run.console);

    let wipe = f.post("/v1/jobs", &serde_json::json!({"kind": "wipe", "nodes": ["n2"]}));
    let run = f.power_on(&[1], ROUND).remove(0);
    assert!(agent_line(&run.console, "reported to the server: done").is_some(), "{}", run.console);
    assert_eq!(f.wait_job(&wipe["id"], Duration::from_secs(30))["state"], "succeeded");
    let zeros = shoal_tests::read_at(&f.nodes[1].disk, 0, 64 * MIB as usize).iter().all(|&b| b == 0);
    assert!(zeros, "n2's disk was not wiped");
    let n = f.api(&["node", "show", "n2"]);
    assert_eq!((n["state"].as_str(), n["current_image"].as_str()), (Some("free"), None), "{n}");
}
