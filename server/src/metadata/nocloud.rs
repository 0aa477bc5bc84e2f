//! NoCloud files (`meta-data`, `user-data`, `vendor-data`,
//! `network-config`) under the per-node prefix `/nocloud/{node}/`, as a
//! pure function of the node's view. cloud-init reads them with
//! `ds=nocloud;s=http://SERVER/nocloud/NODE/`.

use crate::catalog::metadata::NodeView;

/// The NoCloud files.
pub const FILES: &[&str] = &["meta-data", "user-data", "vendor-data", "network-config"];

/// `meta-data`: YAML with the instance-id (new each reload, so
/// cloud-init runs its per-instance modules again) and the hostname.
/// Names and instance-ids hold no character YAML would read specially.
pub fn meta_data(v: &NodeView) -> String {
    let mut s = format!("instance-id: {}\nlocal-hostname: {}\nhostname: {}\n", v.instance_id, v.node, v.node);
    if !v.meta.ssh_keys.is_empty() {
        s += "public-keys:\n";
        for k in &v.meta.ssh_keys {
            // Keys are checked to hold no control characters or quotes
            // that would end a single-quoted scalar ('' escapes one).
            s += &format!("  - '{}'\n", k.replace('\'', "''"));
        }
    }
    s
}

/// `user-data`: the owner's, or empty (NoCloud wants the file to exist).
pub fn user_data(v: &NodeView) -> String {
    v.meta.user_data.clone().unwrap_or_default()
}

/// `vendor-data`: cloud-config that sets root's initial password, given
/// its hash (only on the one fetch that takes it), and mounts the
/// ephemeral disk.
pub fn vendor_data(v: &NodeView, password_hash: Option<&str>) -> String {
    let mut s = String::from("#cloud-config\n");
    if let Some(h) = password_hash {
        // A crypt hash is `$6$`, then [./0-9A-Za-z$=] only.
        s += &format!(
            "chpasswd:\n  expire: false\n  users:\n    - name: root\n      password: '{h}'\n      type: hash\n"
        );
    }
    if let Some(d) = &v.meta.ephemeral_disk {
        s += &format!("mounts:\n  - ['{d}', /mnt, auto, 'defaults,nofail', '0', '2']\n");
    }
    s
}

/// `network-config`: DHCP on every Ethernet interface (the node's fixed
/// address comes from Shoal's DHCP).
pub fn network_config() -> String {
    "version: 2\nethernets:\n  wired:\n    match:\n      name: \"e*\"\n    dhcp4: true\n".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::metadata::NodeMetadata;
    use crate::catalog::Name;

    fn view() -> NodeView {
        NodeView {
            node: Name::parse("pc7").unwrap(),
            ip: "10.0.0.7".parse().unwrap(),
            instance_id: "i-0123456789abcdef0".into(),
            image: None,
            meta: NodeMetadata {
                ssh_keys: vec!["ssh-ed25519 AAAA me@desk".into()],
                user_data: None,
                ephemeral_disk: Some("/dev/vdb".into()),
                imdsv2_required: false,
            },
        }
    }

    #[test]
    fn meta_data_names_the_instance_host_and_keys() {
        let m = meta_data(&view());
        assert!(m.contains("instance-id: i-0123456789abcdef0\n"));
        assert!(m.contains("local-hostname: pc7\n"));
        assert!(m.contains("  - 'ssh-ed25519 AAAA me@desk'\n"));
    }

    #[test]
    fn vendor_data_carries_the_password_hash_only_when_given() {
        let v = view();
        assert!(vendor_data(&v, Some("$6$salt$hash")).contains("password: '$6$salt$hash'"));
        let without = vendor_data(&v, None);
        assert!(without.starts_with("#cloud-config\n") && !without.contains("chpasswd"));
        assert!(without.contains("/dev/vdb"));
        assert_eq!(user_data(&v), "");
    }
}
