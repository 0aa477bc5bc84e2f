//! The OpenAPI document and the router come from one table; these walk
//! both and fail if they ever disagree.

use std::collections::BTreeSet;

use axum::http::Method;

use super::Bed;
use crate::api::openapi::{document, path_params};
use crate::api::routes;

/// A path with its parameters filled in with plausible values.
fn concrete(path: &str) -> String {
    path.replace("{image}", "img")
        .replace("{node}", "pc-own")
        .replace("{job}", "1")
        .replace("{project}", "own")
        .replace("{mac}", "52:54:00:00:00:01")
}

#[test]
fn every_route_in_the_table_is_served_and_nothing_else_is_documented() {
    let bed = Bed::new();
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            documented.insert((method.to_uppercase(), path.clone()));
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}: no summary");
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map_or(Vec::new(), |ps| ps.iter().map(|p| p["name"].as_str().unwrap()).collect());
            assert_eq!(declared, path_params(path), "{method} {path}: path parameters");
        }
    }
    let table: BTreeSet<(String, String)> =
        routes().iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(table.len(), routes().len(), "a route is in the table twice");
    assert_eq!(documented, table);
    // Walk the router: each documented operation reaches a handler (the
    // router's own 404 and 405 have empty bodies; handlers never do).
    for (method, path) in &documented {
        let m: Method = method.parse().unwrap();
        let a = bed.call(m, &concrete(path), None, None);
        assert!(!a.text.is_empty() && a.status != 405, "{method} {path} is documented but not routed: {}", a.status);
    }
}

#[test]
fn the_served_document_is_the_generated_one() {
    let bed = Bed::new();
    let a = bed.call(Method::GET, "/v1/openapi.json", None, None);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, document());
    assert_eq!(a.body["openapi"], "3.0.3");
    assert!(a.body["components"]["securitySchemes"]["projectToken"].is_object());
}
