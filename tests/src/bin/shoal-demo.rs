//! `make demo`: Shoal's main job on its embedded defaults, with real
//! (emulated) machines. Builds a small bootable image with `shoal image
//! build` and the agent initramfs, starts `shoal server` in a network
//! namespace, boots three QEMU nodes with empty disks over PXE and
//! reloads all three through one multicast session (one reload job),
//! boots each from its own disk into the image's marker OS, captures one
//! node back as a new image, and prints a table. Needs root and `make
//! deps`; everything it makes is removed at the end (set SHOAL_DEMO_KEEP=1
//! to keep the working directory and see its logs).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use shoal_tests::fleet::{self, agent_line, load_figures, marker_line, Fleet};
use shoal_tests::{osimage, Bed, MIB};

const ROUND: Duration = Duration::from_secs(600);

fn say(what: &str) {
    println!("\n== {what}");
}

fn main() -> ExitCode {
    if !nix_is_root() {
        eprintln!("shoal-demo: needs root (namespaces, taps, loop mounts)");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let dir = Bed::new();
    say("shoal image build: a 64 MiB bootable disk (Debian's cloud kernel, a busybox root with a marker service)");
    let built = osimage::build(&dir, "demo", "64M");
    println!("image demo: {}", built["id"].as_str().unwrap_or("?"));
    say("shoal initramfs build: the static agent as /init, the server's key, NIC and disk modules");
    let initrd = fleet::agent_initramfs(&dir);
    println!("{}: {} bytes", initrd.display(), std::fs::metadata(&initrd).map(|m| m.len()).unwrap_or(0));

    say(&format!("shoal server on {} in a namespace (DHCP, TFTP, iPXE scripts, multicast, catalog)", fleet::URL));
    let mut f = Fleet::new(&dir, &initrd, 3, 64 * MIB);
    for n in &f.nodes {
        println!("registered {} ({}), disk empty", n.name, n.mac);
    }

    say("shoal node reload n1 n2 n3 --image demo; powering the three nodes on (PXE)");
    let job = f.api(&["node", "reload", "n1", "n2", "n3", "--image", "demo"]);
    let loads = f.power_on(&[0, 1, 2], ROUND);
    let j = f.wait_job(&job["id"], Duration::from_secs(60));
    println!("job {}: {}", job["id"], j["state"].as_str().unwrap_or("?"));
    let sessions = fleet::server_log(&dir).matches("session started").count();
    println!("multicast sessions: {sessions}");
    let mut ok = j["state"] == "succeeded" && sessions == 1;
    for n in &f.nodes {
        let held = f.verify("demo", &n.disk);
        ok &= held;
        println!("{}: disk {} the image", n.name, if held { "holds" } else { "DOES NOT hold" });
    }

    say("powering them on again: each boots its own disk (decision local: iPXE sanboots it)");
    let boots = f.power_on(&[0, 1, 2], ROUND);
    for b in &boots {
        println!("{}: {}", b.node, marker_line(&b.console).unwrap_or_else(|| "no marker".into()));
    }

    say("capturing n1 back as image `captured` (a capture job; the agent uploads only missing chunks)");
    let cap = f.post("/v1/jobs", &serde_json::json!({"kind": "capture", "node": "n1", "name": "captured"}));
    let run = f.power_on(&[0], ROUND).remove(0);
    let captured = agent_line(&run.console, "captured as captured:").map(|(_, l)| l);
    let cj = f.wait_job(&cap["id"], Duration::from_secs(60));
    println!(
        "job {}: {}; {}",
        cap["id"],
        cj["state"].as_str().unwrap_or("?"),
        captured.as_deref().unwrap_or("no capture line")
    );
    ok &= cj["state"] == "succeeded";

    say("done");
    println!(
        "{:<6} {:>14} {:>10} {:>12} {:>10}  marker after reboot",
        "node", "boot-to-agent", "load", "bytes", "multicast"
    );
    for (l, b) in loads.iter().zip(&boots) {
        let (multicast, bytes, secs) = load_figures(&l.console).unwrap_or((0, 0, 0.0));
        let to_agent = l.to_agent.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        let marker = marker_line(&b.console);
        ok &= marker.is_some() && multicast > 0;
        println!(
            "{:<6} {:>14} {:>8.1} s {:>12} {:>10}  {}",
            l.node,
            to_agent,
            secs,
            bytes,
            multicast,
            marker.as_deref().map_or("NOT SEEN", |m| if m.contains(&format!("node={}", b.node)) {
                "seen"
            } else {
                "wrong"
            })
        );
    }
    println!(
        "boot-to-agent: power-on to the agent's first line (firmware, iPXE, kernel); load: the agent's own figure"
    );
    println!("the whole demo took {:.0} s", started.elapsed().as_secs_f64());
    drop(f);
    if std::env::var_os("SHOAL_DEMO_KEEP").is_some() {
        let kept = dir.dir.keep();
        println!("kept {}", kept.display());
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("shoal-demo: something did not hold (see above)");
        ExitCode::from(1)
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
