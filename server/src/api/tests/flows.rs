//! Jobs from creation to the agent's report, cancellation, default
//! images, boot decisions and the metrics they show up in.

use axum::http::Method;
use serde_json::json;

use super::{assert_problem, Bed, IMG_ID};
use crate::catalog::boot::{BootDecision, BootDecisions};
use crate::catalog::Mac;

const MAC: &str = "52:54:00:00:00:01";

#[test]
fn a_reload_runs_from_job_to_agent_report_and_spends_the_token() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"}));
    let node = bed.call(Method::GET, "/v1/nodes/pc-own", t, None).body;
    assert_eq!(
        (node["boot"].as_str(), node["state"].as_str(), node["job"].as_i64()),
        (Some("agent"), Some("booting"), Some(job))
    );

    let token = bed.agent_token(MAC);
    let task = bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&token), None);
    assert_eq!(task.status, 200, "{}", task.text);
    assert_eq!((task.body["kind"].as_str(), task.body["image"].as_str()), (Some("reload"), Some(IMG_ID)));
    let hb = bed.call(
        Method::POST,
        &format!("/v1/agent/{MAC}/heartbeat"),
        Some(&token),
        Some(json!({"progress": 40, "message": "loading"})),
    );
    assert_eq!(hb.body["progress"], 40, "{}", hb.text);
    assert_eq!(bed.call(Method::GET, "/v1/nodes/pc-own", t, None).body["state"], "reloading");
    let rep = bed.call(
        Method::POST,
        &format!("/v1/agent/{MAC}/report"),
        Some(&token),
        Some(json!({"ok": true, "message": "loaded", "log": "wrote 86 MB"})),
    );
    assert_eq!(rep.status, 200, "{}", rep.text);
    assert_eq!(rep.body["state"], "succeeded");

    let shown = bed.call(Method::GET, &format!("/v1/jobs/{job}"), t, None).body;
    let states: Vec<&str> = shown["history"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["pending", "queued", "booting", "running", "progress", "done", "succeeded"]);
    assert!(shown["history"].as_array().unwrap().iter().any(|e| e["log"] == "wrote 86 MB"));
    assert_eq!(shown["nodes"][0]["progress"], 100);
    let node = bed.call(Method::GET, "/v1/nodes/pc-own", t, None).body;
    assert_eq!((node["boot"].as_str(), node["state"].as_str()), (Some("local"), Some("ready")));
    assert_eq!(node["current_image"], IMG_ID);
    // One-time: the token is spent.
    assert_problem(&bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&token), None), 401);
}

#[test]
fn a_failed_report_fails_the_job_and_the_node() {
    let bed = Bed::new();
    bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-own"]}));
    let token = bed.agent_token(MAC);
    let rep = bed.call(
        Method::POST,
        &format!("/v1/agent/{MAC}/report"),
        Some(&token),
        Some(json!({"ok": false, "message": "disk gone"})),
    );
    assert_eq!(rep.body["state"], "failed", "{}", rep.text);
    assert_eq!(bed.call(Method::GET, "/v1/nodes/pc-own", Some(&bed.own), None).body["state"], "failed");
}

#[test]
fn each_boot_issues_a_new_token_and_the_old_one_stops_working() {
    let bed = Bed::new();
    bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-own"]}));
    let first = bed.agent_token(MAC);
    let second = bed.agent_token(MAC);
    assert_ne!(first, second);
    assert_problem(&bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&first), None), 401);
    assert_eq!(bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&second), None).status, 200);
}

#[test]
fn cancelling_a_job_sends_its_nodes_back_to_local_boot() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"}));
    let token = bed.agent_token(MAC);
    let a = bed.call(Method::POST, &format!("/v1/jobs/{job}/cancel"), t, None);
    assert_eq!(a.body["state"], "cancelled", "{}", a.text);
    let node = bed.call(Method::GET, "/v1/nodes/pc-own", t, None).body;
    assert_eq!((node["boot"].as_str(), node["state"].as_str()), (Some("local"), Some("free")));
    assert_problem(&bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(&token), None), 401);
    assert!(matches!(bed.cat.decide(Mac::parse(MAC).unwrap()).unwrap(), BootDecision::Local));
    // The node is free for the next job.
    bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"}));
}

#[test]
fn a_reload_without_an_image_loads_the_project_default() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let a = bed.call(Method::PUT, "/v1/projects/own/default-image", t, Some(json!({"image": "img"})));
    assert_eq!(a.body["default_image"], IMG_ID, "{}", a.text);
    // Another project may not set this project's default.
    assert_problem(
        &bed.call(Method::PUT, "/v1/projects/own/default-image", Some(&bed.oth), Some(json!({"image": "img"}))),
        404,
    );
    let job = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"]}));
    assert_eq!(bed.call(Method::GET, &format!("/v1/jobs/{job}"), t, None).body["image"], IMG_ID);
}

#[test]
fn boot_decisions_follow_the_node() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let mac = Mac::parse(MAC).unwrap();
    assert!(matches!(bed.cat.decide(Mac::parse("02:00:00:00:00:00").unwrap()).unwrap(), BootDecision::Unknown));
    assert!(matches!(bed.cat.decide(mac).unwrap(), BootDecision::Local));
    assert_eq!(bed.call(Method::PUT, "/v1/nodes/pc-own/boot", t, Some(json!({"boot": "menu"}))).status, 200);
    match bed.cat.decide(mac).unwrap() {
        BootDecision::Menu { images, .. } => {
            assert_eq!(images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["img"])
        }
        other => panic!("{other:?}"),
    }
    // The other project's node is offered nothing of project own's.
    bed.call(Method::PUT, "/v1/nodes/pc-oth/boot", Some(&bed.oth), Some(json!({"boot": "menu"})));
    match bed.cat.decide(Mac::parse("52:54:00:00:00:02").unwrap()).unwrap() {
        BootDecision::Menu { images, .. } => assert!(images.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_menu_choice_becomes_a_reload_job_whose_token_runs_it() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let mac = Mac::parse(MAC).unwrap();
    // Not at its menu: no choice to make.
    assert!(bed.cat.menu_reload(mac, "img:1").is_err());
    bed.call(Method::PUT, "/v1/nodes/pc-own/boot", t, Some(json!({"boot": "menu"})));
    let offered = match bed.cat.decide(mac).unwrap() {
        BootDecision::Menu { images, .. } => format!("{}:{}", images[0].name, images[0].version),
        other => panic!("{other:?}"),
    };
    // Only what the menu offers.
    assert!(bed.cat.menu_reload(mac, "nope:1").is_err());
    let (job, token) = bed.cat.menu_reload(mac, &offered).unwrap();
    let node = bed.call(Method::GET, "/v1/nodes/pc-own", t, None).body;
    assert_eq!((node["boot"].as_str(), node["job"].as_i64()), (Some("agent"), Some(job.0)));
    let task = bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(token.expose()), None);
    assert_eq!(task.status, 200, "{}", task.text);
    assert_eq!(task.body["kind"], "reload");
    assert_eq!(task.body["image"], IMG_ID);
    // Looking the node up changes nothing; issuing a token replaces the old one.
    assert!(bed.cat.boot_node(mac).unwrap().is_some());
    assert_eq!(bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(token.expose()), None).status, 200);
    let (_, newer) = bed.cat.issue_agent_token(mac).unwrap().unwrap();
    assert_problem(&bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(token.expose()), None), 401);
    assert_eq!(bed.call(Method::GET, &format!("/v1/agent/{MAC}/task"), Some(newer.expose()), None).status, 200);
}

#[test]
fn metrics_count_jobs_and_nodes_by_state() {
    let bed = Bed::new();
    bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-own"]}));
    let m = bed.call(Method::GET, "/metrics", None, None);
    assert_eq!(m.status, 200);
    assert!(m.content_type.starts_with("text/plain"), "{}", m.content_type);
    for line in ["shoal_jobs{state=\"pending\"} 1", "shoal_nodes{state=\"booting\"} 1", "shoal_nodes{state=\"free\"} 1"]
    {
        assert!(m.text.contains(line), "no {line} in:\n{}", m.text);
    }
    let s = bed.call(Method::GET, "/v1/status", Some(&bed.own), None);
    assert_eq!((s.body["project"].as_str(), s.body["images"].as_u64()), (Some("own"), Some(1)), "{}", s.text);
    assert_eq!(s.body["jobs"]["pending"], 1);
}

#[test]
fn capture_and_import_requests_become_jobs() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let a = bed.call(
        Method::POST,
        "/v1/images",
        t,
        Some(json!({"name": "web", "version": "2", "node": "pc-own", "base": "img"})),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!((a.body["kind"].as_str(), a.body["params"]["name"].as_str()), (Some("capture"), Some("web")));
    let a =
        bed.call(Method::POST, "/v1/images", t, Some(json!({"name": "legacy", "url": "http://example.org/x.qcow2"})));
    assert_eq!((a.status.as_u16(), a.body["kind"].as_str()), (202, Some("import")), "{}", a.text);
    // Another project may not take a name project own uses.
    bed.call(Method::POST, "/v1/images/img/share", t, Some(json!({"public": true})));
    let a = bed.call(Method::POST, "/v1/images", Some(&bed.oth), Some(json!({"name": "img", "node": "pc-oth"})));
    assert_problem(&a, 409);
}
