//! Reading an os-release file (`/etc/os-release`, os-release(5)) into the
//! name capture records as a partition's operating system.
//!
//! Only parsing lives here; finding the file on a filesystem is the
//! filesystem reader's job (`ext4::os_release`). The file is untrusted: the
//! result is cleaned to printable text and bounded.

const OS_NAME_MAX: usize = 200;

/// The OS name an os-release file gives, cleaned for display.
pub fn os_name(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let (mut pretty, mut name, mut version, mut id) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let slot = match key.trim_end() {
            "PRETTY_NAME" => &mut pretty,
            "NAME" => &mut name,
            "VERSION_ID" => &mut version,
            "ID" => &mut id,
            _ => continue,
        };
        if let Some(value) = unquote(value.trim_start()).map(|v| printable(&v)).filter(|v| !v.is_empty()) {
            *slot = Some(value);
        }
    }
    let name = name.map(|name| match version {
        Some(version) => format!("{name} {version}"),
        None => name,
    });
    let chosen = pretty.or(name).or(id)?;
    Some(chosen.chars().take(OS_NAME_MAX).collect::<String>().trim_end().to_string())
}

/// A shell-style value: single quotes literal, double quotes with `\"`,
/// `\\`, `` \` `` and `\$` escapes, a backslash outside quotes escaping the
/// next character. `None` if a quote is unterminated.
fn unquote(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        c @ ('"' | '\\' | '`' | '$') => out.push(c),
                        c => out.extend(['\\', c]),
                    },
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    Some(out)
}

/// `s` without control, format (bidi, zero width) or replacement
/// characters, trimmed.
fn printable(s: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}')
            || matches!(c, '\u{FEFF}' | '\u{FFFD}' | '\u{AD}')
    };
    s.chars().filter(|&c| !hidden(c)).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted_and_cleaned() {
        let name = |text: &str| os_name(text.as_bytes());
        assert_eq!(name("# comment\nPRETTY_NAME='Single $quoted'\n").as_deref(), Some("Single $quoted"));
        assert_eq!(name(r#"PRETTY_NAME="A \"b\" \\ \$x \n""#).as_deref(), Some(r#"A "b" \ $x \n"#));
        assert_eq!(name("NAME=Arch\\ Linux\nID=arch").as_deref(), Some("Arch Linux"));
        assert_eq!(name("ID=alpine\nVERSION_ID=3.20").as_deref(), Some("alpine"));
        assert_eq!(name("PRETTY_NAME=\"\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"").as_deref(), Some("Ubuntu 24.04"));
        assert_eq!(name("PRETTY_NAME=\"unterminated\nID=x").as_deref(), Some("x"));
        assert_eq!(name("PRETTY_NAME=\"bell\x07 and\u{202E} bidi\u{200B}\"").as_deref(), Some("bell and bidi"));
        assert_eq!(name(&format!("PRETTY_NAME={}", "é".repeat(300))).unwrap().chars().count(), 200);
        assert_eq!(name("VERSION=1\n\n"), None);
        assert_eq!(os_name(b"PRETTY_NAME=\xff\xfeOS"), Some("OS".into()));
    }
}
