use std::net::Ipv4Addr;

use super::*;
use crate::catalog::agent::Report;
use crate::catalog::boot::{BootDecision, BootDecisions};
use crate::catalog::jobs::{NewJob, ReloadRequest};
use crate::catalog::nodes::{NewNode, Power};
use crate::catalog::{Caller, Mac, PowerDriver};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@desk";
const IMG: &str = "0123456789abcdef0123456789abcdef";

struct Bed {
    _dir: tempfile::TempDir,
    cat: Catalog,
    own: ProjectCaller,
    oth: ProjectCaller,
}

fn caller(cat: &Catalog, project: &str) -> ProjectCaller {
    let n = Name::parse(project).unwrap();
    cat.create_project(&n).unwrap();
    let t = cat.create_token(&n, None, false).unwrap();
    match cat.authenticate(Some(t.expose())).unwrap() {
        Caller::Project(p) => p,
        Caller::Agent(_) => unreachable!("a project token"),
    }
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open_in(dir.path()).unwrap();
    let own = caller(&cat, "own");
    let oth = caller(&cat, "oth");
    cat.with_conn(|c| {
        c.execute(
            "INSERT INTO images (id, name, version, arch, stamp, created, description, author, owner, visibility)
             VALUES (?1, 'img', '1', 'x86_64', '', 1000, '', 'me', (SELECT id FROM projects WHERE name = 'own'), 'private')",
            [IMG],
        )?;
        Ok(())
    })
    .unwrap();
    for (who, name, mac, ip) in [(&own, "pc1", "52:54:00:00:00:01", 11), (&oth, "pc2", "52:54:00:00:00:02", 12)] {
        cat.register_node(
            who,
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
    Bed { _dir: dir, cat, own, oth }
}

const PC1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const PC2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);

fn verify(password: &str, hash: &str) -> bool {
    use sha_crypt::{PasswordHashRef, PasswordVerifier, ShaCrypt};
    let h = PasswordHashRef::new(hash).unwrap();
    ShaCrypt::SHA512.verify_password(password.as_bytes(), h).is_ok()
}

#[test]
fn a_node_without_an_instance_is_not_served() {
    let b = bed();
    assert_eq!(b.cat.metadata_view(PC1).unwrap(), None);
    assert_eq!(b.cat.metadata_view(Ipv4Addr::new(10, 0, 0, 99)).unwrap(), None);
}

#[test]
fn the_initial_password_is_handed_out_once_as_a_hash_of_what_the_owner_saw() {
    let b = bed();
    let issued = b.cat.new_instance(&b.own, "pc1").unwrap();
    assert_eq!(issued.initial_password.len(), 16);
    let stored: String =
        b.cat.with_conn(|c| Ok(c.query_row("SELECT password_hash FROM node_instances", [], |r| r.get(0))?)).unwrap();
    assert!(stored.starts_with("$6$") && !stored.contains(&issued.initial_password));
    let PasswordFetch::Hash(h) = b.cat.take_initial_password(PC1).unwrap() else { panic!("no hash") };
    assert!(verify(&issued.initial_password, &h));
    assert!(!verify("wrong", &h));
    assert!(matches!(b.cat.take_initial_password(PC1).unwrap(), PasswordFetch::Served(_)));
    let left: Option<String> =
        b.cat.with_conn(|c| Ok(c.query_row("SELECT password_hash FROM node_instances", [], |r| r.get(0))?)).unwrap();
    assert_eq!(left, None, "the hash is forgotten once served");
}

#[test]
fn passwords_and_instance_ids_differ_per_instance() {
    let b = bed();
    let one = b.cat.new_instance(&b.own, "pc1").unwrap();
    let two = b.cat.new_instance(&b.own, "pc1").unwrap();
    assert_ne!(one.instance_id, two.instance_id);
    assert_ne!(one.initial_password, two.initial_password);
    assert!(two.instance_id.starts_with("i-") && two.instance_id.len() == 19);
    assert_eq!(b.cat.metadata_view(PC1).unwrap().unwrap().instance_id, two.instance_id);
}

#[test]
fn another_project_can_neither_set_nor_read_a_nodes_metadata() {
    let b = bed();
    let u = MetadataUpdate { ssh_keys: Some(vec![KEY.into()]), ..Default::default() };
    assert!(matches!(b.cat.set_node_metadata(&b.oth, "pc1", &u), Err(CatalogError::NotFound { .. })));
    assert!(matches!(b.cat.node_metadata(&b.oth, "pc1"), Err(CatalogError::NotFound { .. })));
    assert!(matches!(b.cat.new_instance(&b.oth, "pc1"), Err(CatalogError::NotFound { .. })));
    b.cat.set_node_metadata(&b.own, "pc1", &u).unwrap();
    assert_eq!(b.cat.node_metadata(&b.own, "pc1").unwrap().ssh_keys, vec![KEY.to_string()]);
}

#[test]
fn bad_keys_and_user_data_are_refused() {
    let b = bed();
    let set = |u: MetadataUpdate| b.cat.set_node_metadata(&b.own, "pc1", &u);
    for k in
        ["", "ssh-ed25519", "ssh-foo AAAAAAAAAAAAAAAAAAAA", "ssh-rsa AAAA\nssh-rsa BBBB", "ssh-rsa not*base64*at*all!"]
    {
        assert!(
            matches!(
                set(MetadataUpdate { ssh_keys: Some(vec![k.into()]), ..Default::default() }),
                Err(CatalogError::Invalid(_))
            ),
            "{k:?}"
        );
    }
    let big = "#!/bin/sh\n".to_string() + &"x".repeat(MAX_USER_DATA);
    for ud in [big, "#!/bin/sh\n\0binary".into(), "\u{1b}[31m".into()] {
        assert!(matches!(
            set(MetadataUpdate { user_data: Some(Some(ud)), ..Default::default() }),
            Err(CatalogError::Invalid(_))
        ));
    }
    assert!(matches!(
        set(MetadataUpdate { ephemeral_disk: Some(Some("/etc/passwd/../x".into())), ..Default::default() }),
        Err(CatalogError::Invalid(_))
    ));
    // Nothing was written by the refusals; a null removes user-data.
    set(MetadataUpdate { user_data: Some(Some("#!/bin/sh\necho hi\n".into())), ..Default::default() }).unwrap();
    let m = set(MetadataUpdate { user_data: Some(None), ..Default::default() }).unwrap();
    assert_eq!(m, NodeMetadata::default());
}

#[test]
fn tokens_are_bound_to_their_node_and_instance_and_expire() {
    let b = bed();
    b.cat.new_instance(&b.own, "pc1").unwrap();
    b.cat.new_instance(&b.oth, "pc2").unwrap();
    let t1 = b.cat.issue_metadata_token(PC1, 60).unwrap();
    assert!(b.cat.metadata_token_valid(PC1, t1.expose()).unwrap());
    assert!(!b.cat.metadata_token_valid(PC2, t1.expose()).unwrap(), "pc2 cannot use pc1's token");
    assert!(!b.cat.metadata_token_valid(PC1, "shoal_forged").unwrap());
    assert!(matches!(b.cat.issue_metadata_token(PC1, 0), Err(CatalogError::Invalid(_))));
    assert!(matches!(b.cat.issue_metadata_token(PC1, MAX_TOKEN_TTL + 1), Err(CatalogError::Invalid(_))));
    b.cat.with_conn(|c| Ok(c.execute("UPDATE metadata_tokens SET expires = 1", [])?)).unwrap();
    assert!(!b.cat.metadata_token_valid(PC1, t1.expose()).unwrap(), "an expired token");
    let t2 = b.cat.issue_metadata_token(PC1, 60).unwrap();
    b.cat.new_instance(&b.own, "pc1").unwrap();
    assert!(!b.cat.metadata_token_valid(PC1, t2.expose()).unwrap(), "a token of an earlier instance");
}

#[test]
fn a_successful_reload_makes_its_pending_instance_current() {
    let b = bed();
    let old = b.cat.new_instance(&b.own, "pc1").unwrap();
    let job = b
        .cat
        .create_job(
            &b.own,
            &NewJob::Reload(ReloadRequest {
                nodes: vec![Name::parse("pc1").unwrap()],
                image: Some(IMG.into()),
                first_boot: None,
            }),
        )
        .unwrap();
    let issued = b.cat.prepare_reload(&b.own, &job).unwrap();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].state, "pending");
    // Still the old instance until the agent reports success.
    assert_eq!(b.cat.metadata_view(PC1).unwrap().unwrap().instance_id, old.instance_id);
    let BootDecision::Agent { token, .. } = b.cat.decide(Mac::parse("52:54:00:00:00:01").unwrap()).unwrap() else {
        panic!("agent boot")
    };
    let Caller::Agent(agent) = b.cat.authenticate(Some(token.expose())).unwrap() else { panic!("agent") };
    b.cat.agent_task(&agent, "52:54:00:00:00:01").unwrap();
    let ok = Report { ok: true, message: String::new(), log: String::new() };
    b.cat.agent_report(&agent, "52:54:00:00:00:01", &ok).unwrap();
    let v = b.cat.metadata_view(PC1).unwrap().unwrap();
    assert_eq!(v.instance_id, issued[0].instance_id);
    assert_eq!(v.image.as_deref(), Some(IMG));
    let PasswordFetch::Hash(h) = b.cat.take_initial_password(PC1).unwrap() else { panic!("hash") };
    assert!(verify(&issued[0].initial_password, &h));
}

#[test]
fn first_boot_checkin_is_recorded_once_per_instance() {
    let b = bed();
    let i = b.cat.new_instance(&b.own, "pc1").unwrap();
    let pc1 = Name::parse("pc1").unwrap();
    assert_eq!(b.cat.first_boot_checked_in(&pc1, &i.instance_id).unwrap(), None);
    assert!(b.cat.record_metadata_fetch(&pc1, &i.instance_id).unwrap());
    assert!(!b.cat.record_metadata_fetch(&pc1, &i.instance_id).unwrap());
    assert!(b.cat.first_boot_checked_in(&pc1, &i.instance_id).unwrap().is_some());
    assert!(!b.cat.record_metadata_fetch(&Name::parse("pc2").unwrap(), &i.instance_id).unwrap());
}
