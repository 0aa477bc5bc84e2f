//! Bad input: each answers a problem document with the right status and
//! a message that says what was wrong.

use axum::http::Method;
use serde_json::json;

use super::{assert_problem, Bed};

fn detail(a: &super::Answer) -> String {
    a.body["detail"].as_str().unwrap_or_default().to_string()
}

#[test]
fn unknown_image_node_job_and_project_are_404_with_their_name() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    for (path, name) in [
        ("/v1/images/nosuch", "nosuch"),
        ("/v1/images/img:9", "img:9"),
        ("/v1/nodes/pc-nosuch", "pc-nosuch"),
        ("/v1/jobs/999", "999"),
    ] {
        let a = bed.call(Method::GET, path, t, None);
        assert_problem(&a, 404);
        assert!(detail(&a).contains(name), "{}", a.text);
    }
    let a = bed.call(Method::PUT, "/v1/projects/nosuch/default-image", t, Some(json!({"image": "img"})));
    assert_problem(&a, 404);
    assert!(detail(&a).contains("project named nosuch"), "{}", a.text);
    let a = bed.call(Method::POST, "/v1/images/img/share", t, Some(json!({"project": "nosuch"})));
    assert_problem(&a, 404);
    let a =
        bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reload", "nodes": ["pc-own"], "image": "nosuch"})));
    assert_problem(&a, 404);
}

#[test]
fn invalid_names_macs_and_bodies_are_400() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let node =
        |name: &str, mac: &str| json!({"name": name, "mac": mac, "node_type": "pc", "power": {"driver": "manual"}});
    for (body, says) in [
        (node("Bad Name", "52:54:00:00:00:10"), "invalid name"),
        (node("../etc", "52:54:00:00:00:10"), "invalid name"),
        (node("pc10", "52:54:00:00:00"), "invalid MAC"),
        (
            json!({"name": "pc10", "mac": "52:54:00:00:00:10", "node_type": "pc", "power": {"driver": "telepathy"}}),
            "telepathy",
        ),
        (json!({"name": "pc10"}), "missing field"),
        (
            json!({"name": "pc10", "mac": "52:54:00:00:00:10", "node_type": "pc", "power": {"driver": "manual"}, "colour": 1}),
            "colour",
        ),
    ] {
        let a = bed.call(Method::POST, "/v1/nodes", t, Some(body));
        assert_problem(&a, 400);
        assert!(detail(&a).contains(says), "wanted {says:?}: {}", a.text);
    }
    let a = bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reboot", "nodes": ["pc-own"]})));
    assert_problem(&a, 400);
    let a = bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reload", "nodes": []})));
    assert_problem(&a, 400);
    assert!(detail(&a).contains("at least one node"), "{}", a.text);
    assert_problem(&bed.call(Method::GET, "/v1/jobs/abc", t, None), 400);
    let a = bed.call(Method::PUT, "/v1/nodes/pc-own/boot", t, Some(json!({"boot": "agent"})));
    assert_problem(&a, 400);
    let a = bed.call(Method::POST, "/v1/images", t, Some(json!({"name": "x", "node": "pc-own", "url": "http://h/x"})));
    assert_problem(&a, 400);
    let a = bed.call(Method::POST, "/v1/images", t, Some(json!({"name": "x", "url": "file:///etc/shadow"})));
    assert_problem(&a, 400);
    // Not JSON at all.
    let a = bed.call(Method::POST, "/v1/images/img/share", t, None);
    assert!(a.status == 400 || a.status == 415, "{}", a.text);
    assert_eq!(a.content_type, "application/problem+json");
}

#[test]
fn conflicts_are_409_and_change_nothing() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    // A node already in a running job.
    let first = bed.job(&bed.own, json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"}));
    bed.agent_token("52:54:00:00:00:01");
    let a = bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"})));
    assert_problem(&a, 409);
    assert!(detail(&a).contains(&format!("node pc-own is busy with job {first}")), "{}", a.text);
    // An image in use by that job cannot be deleted.
    let a = bed.call(Method::DELETE, "/v1/images/img", t, None);
    assert_problem(&a, 409);
    assert!(detail(&a).contains("in use"), "{}", a.text);
    // Nor can the boot decision change under the job.
    assert_problem(&bed.call(Method::PUT, "/v1/nodes/pc-own/boot", t, Some(json!({"boot": "menu"}))), 409);
    // The same node registered twice, or a MAC taken.
    let a = bed.call(
        Method::POST,
        "/v1/nodes",
        t,
        Some(json!({"name": "pc-own", "mac": "52:54:00:00:00:77", "node_type": "pc", "power": {"driver": "manual"}})),
    );
    assert_problem(&a, 409);
    let a = bed.call(
        Method::POST,
        "/v1/nodes",
        t,
        Some(json!({"name": "pc-new", "mac": "52:54:00:00:00:01", "node_type": "pc", "power": {"driver": "manual"}})),
    );
    assert_problem(&a, 409);
    // A finished job cannot be cancelled.
    assert_eq!(bed.call(Method::POST, &format!("/v1/jobs/{first}/cancel"), t, None).status, 200);
    assert_problem(&bed.call(Method::POST, &format!("/v1/jobs/{first}/cancel"), t, None), 409);
    // No image named and no default image.
    let a = bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reload", "nodes": ["pc-own"]})));
    assert_problem(&a, 409);
    assert!(detail(&a).contains("no default image"), "{}", a.text);
}

#[test]
fn a_failed_multi_node_request_leaves_nothing_half_written() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    bed.node(&bed.own, "pc-b", "52:54:00:00:00:0b");
    let a = bed.call(
        Method::POST,
        "/v1/jobs",
        t,
        Some(json!({"kind": "reload", "nodes": ["pc-b", "pc-own", "pc-zz"], "image": "img"})),
    );
    assert_problem(&a, 404);
    for n in ["pc-own", "pc-b"] {
        let node = bed.call(Method::GET, &format!("/v1/nodes/{n}"), t, None).body;
        assert_eq!(node["boot"], "local", "{node}");
        assert_eq!(node["state"], "free", "{node}");
        assert!(node["job"].is_null(), "{node}");
    }
    assert_eq!(bed.call(Method::GET, "/v1/jobs", t, None).body, json!([]));
}

#[test]
fn images_for_other_node_types_or_past_their_validity_are_refused() {
    let bed = Bed::new();
    let t = Some(bed.own.as_str());
    let a = bed.call(Method::PATCH, "/v1/images/img", t, Some(json!({"node_types": ["d820"]})));
    assert_eq!(a.status, 200, "{}", a.text);
    let a = bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"})));
    assert_problem(&a, 409);
    assert!(detail(&a).contains("pc3000"), "{}", a.text);
    bed.call(Method::PATCH, "/v1/images/img", t, Some(json!({"node_types": [], "valid_until": 5})));
    let a = bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reload", "nodes": ["pc-own"], "image": "img"})));
    assert_problem(&a, 409);
    assert!(detail(&a).contains("expired"), "{}", a.text);
}

#[test]
fn routes_the_api_does_not_have_answer_404_or_405() {
    let bed = Bed::new();
    assert_eq!(bed.call(Method::GET, "/v1/nosuch", Some(&bed.own), None).status, 404);
    assert_eq!(bed.call(Method::PUT, "/v1/images", Some(&bed.own), None).status, 405);
}
