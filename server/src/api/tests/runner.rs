//! The job runner and the webhook over a real catalog and router: power
//! cycles through the `command` driver (a script writing to a file),
//! time-outs, retries, the first-boot check-in, and the compare-and-set
//! that lets an agent's call win over a stale runner step.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{json, Value};

use super::{Bed, IMG_ID};
use crate::catalog::Name;
use crate::jobs::plan::Timeouts;
use crate::jobs::webhook::WebhookConfig;
use crate::jobs::{Runner, RunnerConfig};
use crate::metrics::Registry;
use crate::power::PowerSettings;

const MAC: &str = "52:54:00:00:00:01";
const SIM: &str = "52:54:00:00:00:31";

/// Registers `pc-sim` in project `own`, powered by a script that appends
/// its arguments to `calls` and says it is on.
fn sim_node(bed: &Bed, dir: &std::path::Path) -> std::path::PathBuf {
    let calls = dir.join("calls");
    let script = dir.join("power.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\nif [ \"$1\" = status ]; then echo on; fi\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let a = bed.call(
        Method::POST,
        "/v1/nodes",
        Some(&bed.own),
        Some(json!({"name": "pc-sim", "mac": SIM, "node_type": "pc3000",
                    "power": {"driver": "command", "address": script.display().to_string()}})),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    calls
}

fn runner(bed: &Bed, agent_secs: u64, retries: u32) -> Arc<Runner> {
    runner_with(
        bed,
        Timeouts {
            agent: Duration::from_secs(agent_secs),
            power_retries: retries,
            heartbeat: Duration::from_secs(2),
            first_boot: Duration::from_secs(30),
            reboot_after: Duration::from_secs(30),
        },
    )
}

fn runner_with(bed: &Bed, timeouts: Timeouts) -> Arc<Runner> {
    let config = RunnerConfig {
        timeouts,
        power: PowerSettings { timeout: Duration::from_secs(5), ..PowerSettings::default() },
        tick: Duration::from_millis(100),
    };
    Runner::new(Arc::clone(&bed.cat), config, &Registry::default())
}

fn job_state(bed: &Bed, job: i64) -> Value {
    bed.call(Method::GET, &format!("/v1/jobs/{job}"), Some(&bed.own), None).body
}

/// Runs `runner` on a runtime of its own until `done` holds for the job
/// (or 20 s pass), and gives the job.
fn drive(bed: &Bed, runner: Arc<Runner>, job: i64, done: impl Fn(&Value) -> bool) -> Value {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = rt.spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    let t = Instant::now();
    let v = loop {
        let v = job_state(bed, job);
        if done(&v) || t.elapsed() > Duration::from_secs(20) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = stop.send(());
    rt.block_on(handle).unwrap();
    v
}

#[test]
fn a_node_whose_agent_never_comes_is_cycled_again_then_failed_with_its_history() {
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    let calls = sim_node(&bed, dir.path());
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-sim"], "image": "img"}));
    let v = drive(&bed, runner(&bed, 1, 1), job, |v| v["state"] != "pending" && v["state"] != "running");
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["nodes"][0]["state"], "failed");
    let powers = v["history"].as_array().unwrap().iter().filter(|e| e["state"] == "power").count();
    assert_eq!(powers, 2, "{v}");
    let last = v["history"].as_array().unwrap().iter().rev().find(|e| e["node"] == "pc-sim").unwrap();
    assert!(last["message"].as_str().unwrap().contains("2 power cycles"), "{last}");
    // Each cycle asked the status, then cycled the node that is on.
    let calls = std::fs::read_to_string(calls).unwrap();
    assert_eq!(calls.matches(&format!("cycle pc-sim {SIM}")).count(), 2, "{calls}");
    let node = bed.call(Method::GET, "/v1/nodes/pc-sim", Some(&bed.own), None).body;
    assert_eq!((node["state"].as_str(), node["boot"].as_str()), (Some("failed"), Some("local")));
}

#[test]
fn an_agent_that_falls_silent_fails_its_node_at_the_heartbeat_time_out() {
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    sim_node(&bed, dir.path());
    let job = bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-sim"]}));
    let token = bed.agent_token(SIM);
    assert_eq!(bed.call(Method::GET, &format!("/v1/agent/{SIM}/task"), Some(&token), None).status, 200);
    let v = drive(&bed, runner(&bed, 60, 0), job, |v| v["state"] == "failed");
    assert_eq!(v["state"], "failed", "{v}");
    let last = v["history"].as_array().unwrap().iter().rev().find(|e| e["node"] == "pc-sim").unwrap();
    assert!(last["message"].as_str().unwrap().contains("no word from the agent"), "{last}");
    // The failed node's token is spent.
    let hb = bed.call(Method::POST, &format!("/v1/agent/{SIM}/heartbeat"), Some(&token), Some(json!({"progress": 5})));
    assert_eq!(hb.status, 401, "{}", hb.text);
}

#[test]
fn a_runner_step_recorded_after_the_agent_moved_on_changes_nothing() {
    let bed = Bed::new();
    bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"}));
    let seen = bed.cat.unfinished_steps().unwrap().pop().unwrap();
    assert!(bed.cat.record_power_cycle(&seen, "test").unwrap());
    // The same view again: already recorded.
    assert!(!bed.cat.record_power_cycle(&seen, "test").unwrap());
    let token = bed.agent_token(MAC);
    assert_eq!(bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&token), None).status, 200);
    // The runner saw the node booting; the agent has taken its task since.
    let stale = crate::catalog::execution::NodeStep { attempts: 1, ..seen };
    assert!(!bed.cat.fail_node(&stale, "too slow").unwrap());
    let now = bed.cat.unfinished_steps().unwrap().pop().unwrap();
    assert_eq!(now.state, crate::catalog::JobNodeState::Running);
}

#[test]
fn a_reload_that_waits_for_the_first_boot_ends_at_the_check_in() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"], "image": "img", "first_boot": true}));
    let token = bed.agent_token(MAC);
    bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&token), None);
    let rep = bed.call(Method::POST, &format!("/v1/agent/{MAC}/report"), Some(&token), Some(json!({"ok": true})));
    assert_eq!(rep.body["state"], "running", "{}", rep.text);
    assert_eq!(rep.body["nodes"][0]["state"], "rebooting");
    let node = bed.call(Method::GET, "/v1/nodes/pc-own", t, None).body;
    assert_eq!(
        (node["state"].as_str(), node["boot"].as_str(), node["job"].as_i64()),
        (Some("reloading"), Some("local"), Some(job))
    );
    assert_eq!(node["current_image"], IMG_ID);
    // A check-in for another node changes nothing; an unknown node is an error.
    bed.cat.first_boot_checkin(&Name::parse("pc-oth").unwrap(), "i-9").unwrap();
    assert!(bed.cat.first_boot_checkin(&Name::parse("pc-nope").unwrap(), "i-9").is_err());
    assert_eq!(job_state(&bed, job)["state"], "running");
    bed.cat.first_boot_checkin(&Name::parse("pc-own").unwrap(), "i-1").unwrap();
    let v = job_state(&bed, job);
    assert_eq!((v["state"].as_str(), v["nodes"][0]["state"].as_str()), (Some("succeeded"), Some("done")), "{v}");
    assert!(v["history"].as_array().unwrap().iter().any(|e| e["message"].as_str().unwrap().contains("instance i-1")));
    assert_eq!(bed.call(Method::GET, "/v1/nodes/pc-own", t, None).body["state"], "ready");
}

/// A one-thread HTTP server on loopback that answers `status` to every
/// request and hands each body to the test.
fn sink(status: u16) -> (String, std::sync::mpsc::Receiver<Value>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = write!(s, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                let _ = tx.send(v);
            }
        }
    });
    (url, rx)
}

fn webhook(bed: &Bed, url: String, tries: u32) -> (tokio::runtime::Runtime, tokio::sync::oneshot::Sender<()>) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let config = WebhookConfig {
        tries,
        backoff: Duration::from_millis(50),
        poll: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        ..WebhookConfig::new(url)
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(crate::jobs::webhook::run(Arc::clone(&bed.cat), config, Arc::new(Registry::default()), async move {
        let _ = stopped.await;
    }));
    (rt, stop)
}

#[test]
fn the_webhook_gets_each_new_job_event_once_in_order() {
    let bed = Bed::new();
    bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-own"]}));
    let (url, rx) = sink(200);
    let (_rt, _stop) = webhook(&bed, url, 3);
    std::thread::sleep(Duration::from_millis(300));
    // Only what happens after start-up is sent.
    let job = bed.job(&bed.oth, json!({"kind": "wipe", "nodes": ["pc-oth"]}));
    let got: Vec<Value> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
    assert_eq!(got[0]["job"], job);
    assert_eq!((got[0]["state"].as_str(), got[0]["node"].is_null()), (Some("pending"), true));
    assert_eq!((got[1]["state"].as_str(), got[1]["node"].as_str()), (Some("queued"), Some("pc-oth")));
    assert!(got[0]["id"].as_i64() < got[1]["id"].as_i64());
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "an event came twice");
}

#[test]
fn a_failing_webhook_is_retried_and_never_holds_up_the_catalog() {
    let bed = Bed::new();
    let (url, rx) = sink(500);
    let (_rt, _stop) = webhook(&bed, url, 2);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let job = bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-own"]}));
    bed.call(Method::POST, &format!("/v1/jobs/{job}/cancel"), Some(&bed.own), None);
    assert!(t.elapsed() < Duration::from_secs(2));
    // Each of the first event's two tries arrived.
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let again = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["id"], again["id"]);
}

#[test]
fn a_reloaded_node_that_does_not_check_in_is_power_cycled_once_then_failed() {
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    let calls = sim_node(&bed, dir.path());
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-sim"], "image": "img", "first_boot": true}));
    let token = bed.agent_token(SIM);
    bed.call(Method::GET, &format!("/v1/agent/{SIM}/task"), Some(&token), None);
    let rep = bed.call(Method::POST, &format!("/v1/agent/{SIM}/report"), Some(&token), Some(json!({"ok": true})));
    assert_eq!(rep.body["nodes"][0]["state"], "rebooting", "{}", rep.text);
    let t = Timeouts {
        agent: Duration::from_secs(60),
        power_retries: 0,
        heartbeat: Duration::from_secs(60),
        first_boot: Duration::from_secs(3),
        reboot_after: Duration::from_secs(1),
    };
    let v = drive(&bed, runner_with(&bed, t), job, |v| v["state"] == "failed");
    assert_eq!(v["state"], "failed", "{v}");
    let msgs: Vec<&str> = v["history"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("power cycle into the disk")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("no first-boot check-in")), "{msgs:?}");
    // Only the reboot: the agent had been booted by hand (the test).
    let calls = std::fs::read_to_string(calls).unwrap();
    assert_eq!(calls.lines().collect::<Vec<_>>(), [format!("cycle pc-sim {SIM}")], "{calls}");
}

#[test]
fn a_malformed_first_boot_is_a_400_problem_and_records_no_job() {
    let bed = Bed::new();
    let a = bed.call(
        Method::POST,
        "/v1/jobs",
        Some(&bed.own),
        Some(json!({"kind": "reload", "nodes": ["pc-own"], "image": "img", "first_boot": "yes"})),
    );
    super::assert_problem(&a, 400);
    assert!(a.body["detail"].as_str().unwrap().contains("expected a boolean"), "{}", a.text);
    let jobs = bed.call(Method::GET, "/v1/jobs", Some(&bed.own), None).body;
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
    assert!(bed.cat.unfinished_steps().unwrap().is_empty());
}

#[test]
fn cancelling_a_job_that_waits_for_the_first_boot_leaves_the_loaded_node_ready() {
    let bed = Bed::new();
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"], "image": "img", "first_boot": true}));
    let token = bed.agent_token(MAC);
    bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&token), None);
    bed.call(Method::POST, &format!("/v1/agent/{MAC}/report"), Some(&token), Some(json!({"ok": true})));
    let c = bed.call(Method::POST, &format!("/v1/jobs/{job}/cancel"), Some(&bed.own), None);
    assert_eq!(c.body["state"], "cancelled", "{}", c.text);
    let node = bed.call(Method::GET, "/v1/nodes/pc-own", Some(&bed.own), None).body;
    assert_eq!((node["state"].as_str(), node["job"].is_null()), (Some("ready"), true), "{node}");
    // A late check-in for a cancelled job changes nothing.
    bed.cat.first_boot_checkin(&Name::parse("pc-own").unwrap(), "i-late").unwrap();
    assert_eq!(job_state(&bed, job)["state"], "cancelled");
}

#[test]
fn a_node_whose_power_command_fails_is_failed_with_the_drivers_error_in_its_history() {
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    sim_node(&bed, dir.path());
    std::fs::write(dir.path().join("power.sh"), "#!/bin/sh\necho 'pdu 3: outlet stuck' >&2\nexit 2\n").unwrap();
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-sim"], "image": "img"}));
    let v = drive(&bed, runner(&bed, 1, 0), job, |v| v["state"] == "failed");
    assert_eq!(v["state"], "failed", "{v}");
    let h = v["history"].as_array().unwrap();
    assert!(
        h.iter().any(|e| e["state"] == "power-error" && e["message"].as_str().unwrap().contains("outlet stuck")),
        "{v}"
    );
    let last = h.iter().rev().find(|e| e["node"] == "pc-sim").unwrap();
    assert!(last["message"].as_str().unwrap().contains("power cycles failed"), "{last}");
}
