//! The OpenAPI 3 document, generated from the route table
//! ([`super::routes`]), so it lists exactly the routes the router serves.

use std::collections::BTreeMap;

use axum::Json;
use serde_json::{json, Map, Value};

use super::{routes, Auth, Route};

/// The names of a path's `{parameters}`, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

fn param_doc(name: &str) -> &'static str {
    match name {
        "image" => "Image id (32 hex digits), NAME (the newest of that name) or NAME:VERSION",
        "node" => "Node name",
        "job" => "Job id",
        "project" => "Project name",
        "mac" => "The node's MAC address, aa:bb:cc:dd:ee:ff",
        _ => "",
    }
}

fn operation(r: &Route) -> Value {
    let mut op = Map::new();
    op.insert("summary".into(), json!(r.summary));
    op.insert(
        "operationId".into(),
        json!(format!("{}{}", r.method.as_str().to_lowercase(), r.path.replace(['/', '{', '}', '.', '-'], "_"))),
    );
    let params: Vec<Value> = path_params(r.path)
        .into_iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "description": param_doc(p), "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(body) = r.body {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "description": body,
                   "content": {"application/json": {"schema": {"type": "object"}}}}),
        );
    }
    match r.auth {
        Auth::None => op.insert("security".into(), json!([])),
        Auth::Project => op.insert("security".into(), json!([{"projectToken": []}])),
        Auth::Agent => op.insert("security".into(), json!([{"agentToken": []}])),
    };
    let problem = json!({"description": "a problem document",
                         "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let mut responses = Map::new();
    responses.insert(r.ok.to_string(), json!({"description": "success"}));
    if r.auth != Auth::None {
        for code in ["400", "401", "403", "404", "409"] {
            responses.insert(code.into(), problem.clone());
        }
    }
    responses.insert("default".into(), problem);
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The document for `routes`.
pub fn document_for(routes: &[Route]) -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for r in routes {
        paths.entry(r.path).or_default().insert(r.method.as_str().to_lowercase(), operation(r));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Shoal control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Images, nodes and jobs of a Shoal imaging server. Errors are RFC 9457 problem \
                documents. Jobs are recorded and answered with 202; their execution is not part of this server yet."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "projectToken": {"type": "http", "scheme": "bearer",
                                 "description": "A project's API token (`shoal token create`)"},
                "agentToken": {"type": "http", "scheme": "bearer",
                               "description": "A node's one-time agent token, from its kernel command line"}
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"}, "title": {"type": "string"},
                        "status": {"type": "integer"}, "detail": {"type": "string"}
                    }
                }
            }
        }
    })
}

/// The document for this server's routes.
pub fn document() -> Value {
    document_for(&routes())
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
