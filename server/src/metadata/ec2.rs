//! The EC2 metadata tree as a pure function of a node's view: the paths
//! cloud-init's EC2 data source and `shoal-agent firstboot` read, under
//! `/latest/` and `/2009-04-04/`.

use crate::catalog::metadata::NodeView;

/// The versions served; cloud-init asks for newer ones first and settles
/// on the oldest it knows (2009-04-04).
pub const VERSIONS: &[&str] = &["2009-04-04", "latest"];

/// What `GET /{version}/meta-data/{path}` answers, or `None` for 404.
/// A directory's listing names its children, subdirectories with a
/// trailing `/`, one a line.
pub fn meta_data(path: &str, v: &NodeView, zone: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    let keys = &v.meta.ssh_keys;
    match path.trim_end_matches('/') {
        "" => {
            let mut items = vec!["ami-id", "hostname", "instance-id", "local-hostname", "local-ipv4", "placement/"];
            if !keys.is_empty() {
                items.push("public-keys/");
            }
            if v.meta.ephemeral_disk.is_some() {
                items.push("block-device-mapping/");
            }
            items.sort_unstable();
            Some(items.join("\n"))
        }
        "ami-id" => Some(v.image.clone().unwrap_or_else(|| "unknown".into())),
        "instance-id" => Some(v.instance_id.clone()),
        "hostname" | "local-hostname" => Some(v.node.to_string()),
        "local-ipv4" => Some(v.ip.to_string()),
        "placement" => Some("availability-zone".into()),
        "placement/availability-zone" => Some(zone.to_string()),
        "block-device-mapping" => v.meta.ephemeral_disk.as_ref().map(|_| "ephemeral0".into()),
        "block-device-mapping/ephemeral0" => {
            v.meta.ephemeral_disk.as_ref().map(|d| d.trim_start_matches("/dev/").to_string())
        }
        "public-keys" if !keys.is_empty() => {
            Some((0..keys.len()).map(|i| format!("{i}=key{i}")).collect::<Vec<_>>().join("\n"))
        }
        p => {
            let rest = p.strip_prefix("public-keys/")?;
            let (index, leaf) = rest.split_once('/').unwrap_or((rest, ""));
            let key = keys.get(index.parse::<usize>().ok()?)?;
            match leaf {
                "" => Some("openssh-key".into()),
                "openssh-key" => Some(key.clone()),
                _ => None,
            }
        }
    }
}

/// The listing of `GET /{version}/`.
pub fn version_listing(v: &NodeView) -> String {
    if v.meta.user_data.is_some() {
        "meta-data/\nuser-data".into()
    } else {
        "meta-data/".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::metadata::NodeMetadata;
    use crate::catalog::Name;

    fn view(keys: &[&str], disk: Option<&str>) -> NodeView {
        NodeView {
            node: Name::parse("pc7").unwrap(),
            ip: "10.0.0.7".parse().unwrap(),
            instance_id: "i-0123456789abcdef0".into(),
            image: Some("ab12".into()),
            meta: NodeMetadata {
                ssh_keys: keys.iter().map(|k| k.to_string()).collect(),
                user_data: None,
                ephemeral_disk: disk.map(Into::into),
                imdsv2_required: false,
            },
        }
    }

    #[test]
    fn the_tree_answers_each_documented_path() {
        let v = view(&["ssh-ed25519 AAAA a", "ssh-rsa BBBB b"], Some("/dev/vdb"));
        let get = |p| meta_data(p, &v, "zone-a");
        assert_eq!(get("instance-id").as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(get("hostname").as_deref(), Some("pc7"));
        assert_eq!(get("local-hostname").as_deref(), Some("pc7"));
        assert_eq!(get("local-ipv4").as_deref(), Some("10.0.0.7"));
        assert_eq!(get("placement/availability-zone").as_deref(), Some("zone-a"));
        assert_eq!(get("public-keys/").as_deref(), Some("0=key0\n1=key1"));
        assert_eq!(get("public-keys/1/").as_deref(), Some("openssh-key"));
        assert_eq!(get("public-keys/0/openssh-key").as_deref(), Some("ssh-ed25519 AAAA a"));
        assert_eq!(get("block-device-mapping/ephemeral0").as_deref(), Some("vdb"));
        assert_eq!(get("ami-id").as_deref(), Some("ab12"));
        let listing = get("").unwrap();
        assert!(listing.lines().any(|l| l == "public-keys/") && listing.lines().any(|l| l == "instance-id"));
    }

    #[test]
    fn absent_things_are_not_found_and_not_listed() {
        let v = view(&[], None);
        let get = |p| meta_data(p, &v, "z");
        for p in
            ["public-keys/", "public-keys/0/openssh-key", "block-device-mapping/ephemeral0", "nope", "public-keys/x"]
        {
            assert_eq!(get(p), None, "{p}");
        }
        let listing = get("").unwrap();
        assert!(!listing.contains("public-keys") && !listing.contains("block-device"));
        assert_eq!(version_listing(&v), "meta-data/");
    }
}
