//! Locking the accounts of `/etc/shadow` (and `/etc/passwd`, where old
//! systems keep hashes): every password an image would carry to each node
//! it is loaded onto becomes `!`.

/// Whether the password field of a shadow or passwd line lets someone log
/// in: a hash, or empty (no password at all). `x` (in shadow elsewhere),
/// `*` and `!`-prefixed fields are already locked.
fn usable(field: &str) -> bool {
    !(field == "x" || field.starts_with('!') || field.starts_with('*'))
}

/// Rewrites the lines of a shadow or passwd file so that every account
/// with a usable password is locked (`!`). Everything else, comments,
/// malformed lines and the line endings included, is kept as it was.
/// Returns the new text and the accounts locked, in file order.
pub fn lock_passwords(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut locked = Vec::new();
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut fields = body.splitn(3, ':');
        let (name, pass, rest) = (fields.next(), fields.next(), fields.next());
        match (name, pass) {
            (Some(name), Some(pass)) if !name.is_empty() && !name.starts_with('#') && usable(pass) => {
                out.push_str(name);
                out.push_str(":!");
                if let Some(rest) = rest {
                    out.push(':');
                    out.push_str(rest);
                }
                out.push_str(end);
                locked.push(name.to_string());
            }
            _ => out.push_str(line),
        }
    }
    (out, locked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: &str = "\
root:$6$salt$hashhashhash:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
alice:$y$j9T$abc$def:19000:0:99999:7:::
bob:!$6$old$locked:19000:0:99999:7:::
carol::19000:0:99999:7:::
sshd:!:19000::::::
# a comment:$6$x
broken
";

    #[test]
    fn hashes_and_empty_passwords_are_locked_and_nothing_else_changes() {
        let (text, locked) = lock_passwords(SHADOW);
        assert_eq!(locked, ["root", "alice", "carol"]);
        let want = SHADOW
            .replace("root:$6$salt$hashhashhash:", "root:!:")
            .replace("alice:$y$j9T$abc$def:", "alice:!:")
            .replace("carol::", "carol:!:");
        assert_eq!(text, want);
    }

    #[test]
    fn a_locked_file_is_left_as_it_is() {
        let (once, _) = lock_passwords(SHADOW);
        let (twice, locked) = lock_passwords(&once);
        assert_eq!(twice, once);
        assert!(locked.is_empty());
    }

    #[test]
    fn passwd_lines_keep_shadowed_accounts_and_lock_inline_hashes() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nold:$1$ab$cd:1000:1000::/home/old:/bin/sh";
        let (text, locked) = lock_passwords(passwd);
        assert_eq!(locked, ["old"]);
        assert_eq!(text, "root:x:0:0:root:/root:/bin/sh\nold:!:1000:1000::/home/old:/bin/sh");
    }

    #[test]
    fn crlf_and_a_missing_final_newline_survive() {
        let (text, locked) = lock_passwords("a:h:1\r\nb:*:2");
        assert_eq!(locked, ["a"]);
        assert_eq!(text, "a:!:1\r\nb:*:2");
    }
}
