//! The whole image permission matrix: who (owner project, another
//! project with the image shared / public / neither, an admin token of
//! another project, an agent token, a bad token, no token) × what (list,
//! show, load, delete, share, update, update from a node, derive).

use axum::http::Method;
use serde_json::json;

use super::{assert_problem, Bed};

#[derive(Clone, Copy, Debug)]
enum Vis {
    Private,
    SharedWithOth,
    Public,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Owner,
    Other,
    OtherAdmin,
    Agent,
    BadToken,
    NoToken,
}

#[derive(Clone, Copy, Debug)]
enum Act {
    List,
    Show,
    Load,
    Delete,
    Share,
    Update,
    UpdateFromNode,
    Derive,
}

const ACTS: [Act; 8] =
    [Act::List, Act::Show, Act::Load, Act::Delete, Act::Share, Act::Update, Act::UpdateFromNode, Act::Derive];

/// For List: 200 = listed, 0 = answered 200 but not in the list.
const HIDDEN: u16 = 0;

/// Expected status of each act, in `ACTS` order.
fn expected(vis: Vis, who: Who) -> [u16; 8] {
    match (who, vis) {
        (Who::Owner, _) => [200, 200, 202, 200, 200, 200, 202, 202],
        (Who::Other | Who::OtherAdmin, Vis::Private) => [HIDDEN, 404, 404, 404, 404, 404, 404, 404],
        // Readable: may load and derive, never change or delete.
        (Who::Other | Who::OtherAdmin, Vis::SharedWithOth | Vis::Public) => [200, 200, 202, 403, 403, 403, 403, 202],
        (Who::Agent, _) => [403; 8],
        (Who::BadToken | Who::NoToken, _) => [401; 8],
    }
}

fn setup(vis: Vis) -> (Bed, String) {
    let bed = Bed::new();
    match vis {
        Vis::Private => {}
        Vis::SharedWithOth => {
            let a = bed.call(Method::POST, "/v1/images/img/share", Some(&bed.own), Some(json!({"project": "oth"})));
            assert_eq!(a.status, 200, "{}", a.text);
            assert_eq!(a.body["visibility"], "shared");
        }
        Vis::Public => {
            let a = bed.call(Method::POST, "/v1/images/img/share", Some(&bed.own), Some(json!({"public": true})));
            assert_eq!(a.status, 200, "{}", a.text);
            assert_eq!(a.body["visibility"], "public");
        }
    }
    // An agent token of project own's: a wipe job (which holds no image)
    // on a third node.
    bed.node(&bed.own.clone(), "pc-agent", "52:54:00:00:00:09");
    bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-agent"]}));
    let agent = bed.agent_token("52:54:00:00:00:09");
    (bed, agent)
}

fn act(bed: &Bed, token: Option<&str>, node: &str, a: Act) -> super::Answer {
    let t = token;
    match a {
        Act::List => bed.call(Method::GET, "/v1/images", t, None),
        Act::Show => bed.call(Method::GET, "/v1/images/img", t, None),
        Act::Load => {
            bed.call(Method::POST, "/v1/jobs", t, Some(json!({"kind": "reload", "nodes": [node], "image": "img"})))
        }
        Act::Delete => bed.call(Method::DELETE, "/v1/images/img", t, None),
        Act::Share => bed.call(Method::POST, "/v1/images/img/share", t, Some(json!({"project": "third"}))),
        Act::Update => bed.call(Method::PATCH, "/v1/images/img", t, Some(json!({"description": "changed"}))),
        Act::UpdateFromNode => bed.call(Method::POST, "/v1/images/img/update", t, Some(json!({"node": node}))),
        Act::Derive => bed.call(
            Method::POST,
            "/v1/images",
            t,
            Some(json!({"name": format!("mine-{node}"), "node": node, "base": "img"})),
        ),
    }
}

#[test]
fn image_permission_matrix_holds_for_every_caller_visibility_and_action() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for vis in [Vis::Private, Vis::SharedWithOth, Vis::Public] {
        for who in [Who::Owner, Who::Other, Who::OtherAdmin, Who::Agent, Who::BadToken, Who::NoToken] {
            for (i, a) in ACTS.iter().enumerate() {
                // A fresh bed per case: one action's effect (a delete, a
                // busy node) never leaks into the next.
                let (bed, agent) = setup(vis);
                let bad = "shoal_0000000000000000000000000000000000000000000000000000000000000000".to_string();
                let (token, node) = match who {
                    Who::Owner => (Some(bed.own.clone()), "pc-own"),
                    Who::Other => (Some(bed.oth.clone()), "pc-oth"),
                    Who::OtherAdmin => (Some(bed.adm.clone()), "pc-oth"),
                    Who::Agent => (Some(agent), "pc-own"),
                    Who::BadToken => (Some(bad), "pc-own"),
                    Who::NoToken => (None, "pc-own"),
                };
                let want = expected(vis, who)[i];
                let ans = act(&bed, token.as_deref(), node, *a);
                cases += 1;
                let got = match a {
                    Act::List if ans.status == 200 => {
                        let listed = ans.body.as_array().is_some_and(|l| l.iter().any(|i| i["name"] == "img"));
                        if listed {
                            200
                        } else {
                            HIDDEN
                        }
                    }
                    _ => ans.status.as_u16(),
                };
                if got != want {
                    failures.push(format!("{vis:?} {who:?} {a:?}: want {want}, got {got}: {}", ans.text));
                } else if got >= 400 {
                    assert_problem(&ans, got);
                }
            }
        }
    }
    assert_eq!(cases, 3 * 6 * 8);
    assert!(failures.is_empty(), "{} of {cases} cases wrong:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn unsharing_takes_read_access_away_again() {
    let (bed, _) = setup(Vis::SharedWithOth);
    assert_eq!(bed.call(Method::GET, "/v1/images/img", Some(&bed.oth), None).status, 200);
    let a = bed.call(Method::POST, "/v1/images/img/unshare", Some(&bed.own), Some(json!({"project": "oth"})));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["visibility"], "private");
    assert_problem(&bed.call(Method::GET, "/v1/images/img", Some(&bed.oth), None), 404);
    // Public, then not: back to private.
    bed.call(Method::POST, "/v1/images/img/share", Some(&bed.own), Some(json!({"public": true})));
    assert_eq!(bed.call(Method::GET, "/v1/images/img", Some(&bed.oth), None).status, 200);
    let a = bed.call(Method::POST, "/v1/images/img/unshare", Some(&bed.own), Some(json!({"public": true})));
    assert_eq!(a.body["visibility"], "private", "{}", a.text);
}

#[test]
fn nodes_and_jobs_of_another_project_are_not_found_but_an_admin_sees_them() {
    let bed = Bed::new();
    assert_problem(&bed.call(Method::GET, "/v1/nodes/pc-own", Some(&bed.oth), None), 404);
    assert_eq!(bed.call(Method::GET, "/v1/nodes/pc-own", Some(&bed.adm), None).status, 200);
    let listed = bed.call(Method::GET, "/v1/nodes", Some(&bed.oth), None).body;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let job = bed.job(&bed.own, json!({"kind": "wipe", "nodes": ["pc-own"]}));
    assert_problem(&bed.call(Method::GET, &format!("/v1/jobs/{job}"), Some(&bed.oth), None), 404);
    assert_problem(&bed.call(Method::POST, &format!("/v1/jobs/{job}/cancel"), Some(&bed.oth), None), 404);
    assert_eq!(bed.call(Method::GET, &format!("/v1/jobs/{job}"), Some(&bed.adm), None).status, 200);
    // Reloading another project's node is refused as if it did not exist.
    let a = bed.call(Method::POST, "/v1/jobs", Some(&bed.oth), Some(json!({"kind": "wipe", "nodes": ["pc-own"]})));
    assert_problem(&a, 404);
}

#[test]
fn agent_tokens_reach_only_their_own_node() {
    let (bed, agent) = setup(Vis::Private);
    assert_eq!(bed.call(Method::GET, "/v1/agent/52:54:00:00:00:09/task", Some(&agent), None).status, 200);
    assert_problem(&bed.call(Method::GET, "/v1/agent/52:54:00:00:00:01/task", Some(&agent), None), 403);
    assert_problem(&bed.call(Method::GET, "/v1/agent/52:54:00:00:00:09/task", Some(&bed.own), None), 403);
    assert_problem(&bed.call(Method::GET, "/v1/agent/52:54:00:00:00:09/task", None, None), 401);
    assert_problem(&bed.call(Method::GET, "/v1/nodes", Some(&agent), None), 403);
}
