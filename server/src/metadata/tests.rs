//! The metadata routes through the router, with the connection's source
//! address set as the server would: who may read what, IMDSv2, and the
//! one-time password.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::{router, MetadataState, TOKEN_HEADER, TTL_HEADER};
use crate::catalog::metadata::MetadataUpdate;
use crate::catalog::nodes::{NewNode, Power};
use crate::catalog::{Caller, Catalog, Name, PowerDriver, ProjectCaller};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@desk";

struct Bed {
    _dir: tempfile::TempDir,
    cat: Arc<Catalog>,
    own: ProjectCaller,
    password: String,
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let cat = Arc::new(Catalog::open_in(dir.path()).unwrap());
    let p = Name::parse("own").unwrap();
    cat.create_project(&p).unwrap();
    let t = cat.create_token(&p, None, false).unwrap();
    let Caller::Project(own) = cat.authenticate(Some(t.expose())).unwrap() else { unreachable!("project token") };
    for (name, mac, ip) in [("pc1", "52:54:00:00:00:01", 11), ("pc2", "52:54:00:00:00:02", 12)] {
        cat.register_node(
            &own,
            &NewNode {
                name: Name::parse(name).unwrap(),
                mac: mac.into(),
                node_type: Name::parse("pc").unwrap(),
                power: Power { driver: PowerDriver::Manual, address: String::new() },
                project: None,
                ip: Some(Ipv4Addr::new(10, 0, 0, ip)),
                disk: None,
            },
        )
        .unwrap();
    }
    let u = MetadataUpdate {
        ssh_keys: Some(vec![KEY.into()]),
        user_data: Some(Some("#!/bin/sh\necho pc1 > /tmp/who\n".into())),
        ..Default::default()
    };
    cat.set_node_metadata(&own, "pc1", &u).unwrap();
    let password = cat.new_instance(&own, "pc1").unwrap().initial_password;
    cat.new_instance(&own, "pc2").unwrap();
    Bed { _dir: dir, cat, own, password }
}

const PC1: [u8; 4] = [10, 0, 0, 11];
const PC2: [u8; 4] = [10, 0, 0, 12];

impl Bed {
    fn call(&self, method: Method, from: [u8; 4], path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from((from, 40000))));
        let app = router(MetadataState { catalog: Arc::clone(&self.cat), zone: "lab-a".into() });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        })
    }

    fn get(&self, from: [u8; 4], path: &str) -> (StatusCode, String) {
        self.call(Method::GET, from, path, &[])
    }
}

#[test]
fn each_node_reads_only_its_own_metadata_whatever_the_headers_say() {
    let b = bed();
    assert_eq!(b.get(PC1, "/latest/meta-data/local-hostname"), (StatusCode::OK, "pc1".into()));
    assert_eq!(b.get(PC2, "/2009-04-04/meta-data/hostname"), (StatusCode::OK, "pc2".into()));
    assert_eq!(b.get(PC1, "/latest/meta-data/public-keys/0/openssh-key"), (StatusCode::OK, KEY.into()));
    assert_eq!(b.get(PC2, "/latest/meta-data/public-keys/0/openssh-key").0, StatusCode::NOT_FOUND);
    assert_eq!(b.get(PC2, "/latest/user-data").0, StatusCode::NOT_FOUND, "no user-data is 404");
    // Forged headers change nothing: pc2 is still pc2.
    let forged = [("x-forwarded-for", "10.0.0.11"), ("x-real-ip", "10.0.0.11"), ("host", "10.0.0.11")];
    assert_eq!(b.call(Method::GET, PC2, "/latest/meta-data/hostname", &forged), (StatusCode::OK, "pc2".into()));
    // The NoCloud prefix does not choose the node either.
    assert_eq!(b.get(PC2, "/nocloud/pc1/user-data").0, StatusCode::NOT_FOUND);
    assert_eq!(b.get(PC2, "/nocloud/pc1/meta-data").0, StatusCode::NOT_FOUND);
    assert!(b.get(PC1, "/nocloud/pc1/user-data").1.starts_with("#!/bin/sh"));
    // An address no node has learns nothing.
    assert_eq!(b.get([10, 0, 0, 99], "/latest/meta-data/instance-id").0, StatusCode::NOT_FOUND);
}

#[test]
fn another_nodes_token_is_refused_and_a_required_token_is_enforced() {
    let b = bed();
    let ttl = [(TTL_HEADER, "60")];
    let (st, t2) = b.call(Method::PUT, PC2, "/latest/api/token", &ttl);
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        b.call(Method::GET, PC1, "/latest/meta-data/hostname", &[(TOKEN_HEADER, &t2)]).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(b.call(Method::GET, PC2, "/latest/meta-data/hostname", &[(TOKEN_HEADER, &t2)]).1, "pc2");
    b.cat
        .set_node_metadata(&b.own, "pc2", &MetadataUpdate { imdsv2_required: Some(true), ..Default::default() })
        .unwrap();
    assert_eq!(b.get(PC2, "/latest/meta-data/hostname").0, StatusCode::UNAUTHORIZED);
    assert_eq!(b.call(Method::GET, PC2, "/latest/meta-data/hostname", &[(TOKEN_HEADER, &t2)]).1, "pc2");
    b.cat.with_conn(|c| Ok(c.execute("UPDATE metadata_tokens SET expires = 1", [])?)).unwrap();
    assert_eq!(
        b.call(Method::GET, PC2, "/latest/meta-data/hostname", &[(TOKEN_HEADER, &t2)]).0,
        StatusCode::UNAUTHORIZED,
        "an expired token"
    );
}

#[test]
fn token_puts_need_a_ttl_and_no_proxy() {
    let b = bed();
    assert_eq!(b.call(Method::PUT, PC1, "/latest/api/token", &[]).0, StatusCode::BAD_REQUEST);
    for bad in ["0", "21601", "-1", "x"] {
        assert_eq!(b.call(Method::PUT, PC1, "/latest/api/token", &[(TTL_HEADER, bad)]).0, StatusCode::BAD_REQUEST);
    }
    let via_proxy = [(TTL_HEADER, "60"), ("x-forwarded-for", "10.0.0.11")];
    assert_eq!(b.call(Method::PUT, PC1, "/latest/api/token", &via_proxy).0, StatusCode::FORBIDDEN);
    assert_eq!(b.call(Method::PUT, [10, 9, 9, 9], "/latest/api/token", &[(TTL_HEADER, "60")]).0, StatusCode::NOT_FOUND);
}

#[test]
fn the_password_hash_is_fetched_once_and_matches_what_the_owner_saw() {
    let b = bed();
    assert_eq!(b.get(PC2, "/shoal/v1/initial-password").0, StatusCode::OK, "pc2 takes its own");
    let (st, hash) = b.get(PC1, "/shoal/v1/initial-password");
    assert_eq!(st, StatusCode::OK);
    use sha_crypt::{PasswordHashRef, PasswordVerifier, ShaCrypt};
    assert!(ShaCrypt::SHA512.verify_password(b.password.as_bytes(), PasswordHashRef::new(&hash).unwrap()).is_ok());
    assert_eq!(b.get(PC1, "/shoal/v1/initial-password").0, StatusCode::GONE);
    assert!(!b.get(PC1, "/nocloud/pc1/vendor-data").1.contains("chpasswd"), "nor through vendor-data");
}

#[test]
fn the_first_fetch_is_the_first_boot_checkin() {
    let b = bed();
    let pc1 = Name::parse("pc1").unwrap();
    let (_, id) = b.get(PC2, "/latest/meta-data/instance-id");
    assert!(b.cat.first_boot_checked_in(&Name::parse("pc2").unwrap(), &id).unwrap().is_some());
    let id1 = b.cat.metadata_view(Ipv4Addr::new(10, 0, 0, 11)).unwrap().unwrap().instance_id;
    assert_eq!(b.cat.first_boot_checked_in(&pc1, &id1).unwrap(), None);
    b.get(PC1, "/nocloud/pc1/meta-data");
    assert!(b.cat.first_boot_checked_in(&pc1, &id1).unwrap().is_some());
}
