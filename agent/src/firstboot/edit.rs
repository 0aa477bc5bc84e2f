//! The text edits first boot makes to an installed system's files, as
//! pure functions of the old contents, so they are tested without a
//! system to edit.

/// Why a file could not be edited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    #[error("/etc/shadow has no entry for {0}")]
    NoSuchUser(String),
    #[error("the password hash is not a crypt hash")]
    BadHash,
}

/// `shadow` with `user`'s password field set to `hash` and its last
/// change to `today` (days since the epoch); every other line unchanged.
pub fn shadow_with_hash(shadow: &str, user: &str, hash: &str, today: u64) -> Result<String, EditError> {
    // A crypt hash is `$id$...` over [./0-9A-Za-z$=]: no `:` or newline
    // that would break the file.
    if !hash.starts_with('$') || !hash.bytes().all(|b| b.is_ascii_alphanumeric() || b"$./=".contains(&b)) {
        return Err(EditError::BadHash);
    }
    let mut found = false;
    let mut out = String::with_capacity(shadow.len() + hash.len());
    for line in shadow.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 3 && fields[0] == user {
            found = true;
            let day = today.to_string();
            fields[1] = hash;
            fields[2] = &day;
            out += &fields.join(":");
        } else {
            out += line;
        }
        out.push('\n');
    }
    if !found {
        return Err(EditError::NoSuchUser(user.into()));
    }
    Ok(out)
}

/// `existing` authorized_keys with each of `keys` appended unless already
/// there.
pub fn authorized_keys_with(existing: &str, keys: &[String]) -> String {
    let mut out = existing.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for k in keys {
        let k = k.trim();
        if !k.is_empty() && !existing.lines().any(|l| l.trim() == k) {
            out += k;
            out.push('\n');
        }
    }
    out
}

/// `hosts` with `127.0.1.1` naming `hostname` (Debian's convention).
pub fn hosts_with(hosts: &str, hostname: &str) -> String {
    let entry = format!("127.0.1.1\t{hostname}");
    let mut replaced = false;
    let mut out = String::new();
    for line in hosts.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            if !replaced {
                out += &entry;
                out.push('\n');
                replaced = true;
            }
        } else {
            out += line;
            out.push('\n');
        }
    }
    if !replaced {
        out += &entry;
        out.push('\n');
    }
    out
}

/// `fstab` with `dev` mounted at /mnt (nofail, so a missing disk does not
/// stop the boot), unless some line already mounts `dev`.
pub fn fstab_with(fstab: &str, dev: &str) -> String {
    let mut out = fstab.to_string();
    if fstab.lines().any(|l| l.split_whitespace().next() == Some(dev)) {
        return out;
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out += &format!("{dev}\t/mnt\tauto\tdefaults,nofail\t0\t2\n");
    out
}

/// Whether user-data is a script to run (it starts with `#!`).
pub fn is_script(user_data: &[u8]) -> bool {
    user_data.starts_with(b"#!")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: &str = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";

    #[test]
    fn the_hash_replaces_only_roots_password_and_dates_the_change() {
        let s = shadow_with_hash(SHADOW, "root", "$6$salt$abc./", 20000).unwrap();
        assert_eq!(s, "root:$6$salt$abc./:20000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n");
    }

    #[test]
    fn a_hash_that_could_break_the_file_is_refused() {
        for bad in ["plain", "$6$a:b", "$6$a\nroot::0:::::", ""] {
            assert!(matches!(shadow_with_hash(SHADOW, "root", bad, 1), Err(EditError::BadHash)), "{bad:?}");
        }
        assert!(matches!(shadow_with_hash(SHADOW, "nobody", "$6$x$y", 1), Err(EditError::NoSuchUser(_))));
    }

    #[test]
    fn keys_are_added_once() {
        let keys = vec!["ssh-ed25519 AAAA a".to_string(), "ssh-rsa BBBB b".to_string()];
        let once = authorized_keys_with("ssh-ed25519 AAAA a", &keys);
        assert_eq!(once, "ssh-ed25519 AAAA a\nssh-rsa BBBB b\n");
        assert_eq!(authorized_keys_with(&once, &keys), once);
    }

    #[test]
    fn hosts_gets_one_line_for_the_new_name() {
        let h = hosts_with("127.0.0.1\tlocalhost\n127.0.1.1\told\n127.0.1.1\told2\n", "pc7");
        assert_eq!(h, "127.0.0.1\tlocalhost\n127.0.1.1\tpc7\n");
        assert_eq!(hosts_with("", "pc7"), "127.0.1.1\tpc7\n");
    }

    #[test]
    fn fstab_gains_the_ephemeral_disk_once() {
        let f = fstab_with("UUID=x / ext4 defaults 0 1", "/dev/vdb");
        assert_eq!(f, "UUID=x / ext4 defaults 0 1\n/dev/vdb\t/mnt\tauto\tdefaults,nofail\t0\t2\n");
        assert_eq!(fstab_with(&f, "/dev/vdb"), f);
    }
}
