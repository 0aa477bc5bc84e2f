//! iPXE scripts, rendered from a typed boot decision: the agent (reload,
//! capture, wipe), the local disk, or a menu of images.
//!
//! Rendering is pure: [`Script::render`] turns a [`Script`] into text and
//! does nothing else. The server decides what a node gets, issues its
//! agent token and serves the text over HTTP.
//!
//! **Injection.** iPXE's script language has no quoting: a line is split
//! at whitespace, a token starting with `#` begins a comment, the tokens
//! `||`, `&&` and `;` chain commands, and `${...}` anywhere in a token is
//! replaced by a setting. Anything interpolated into a script is therefore
//! one of the types here, which refuse all of that when they are made:
//!
//! - [`Word`]: one token of letters, digits and `._-:+@=,/` (image names,
//!   node names, tokens, kernel arguments);
//! - [`Url`]: an `http://` or `https://` URL of URL-safe characters, none
//!   of them whitespace, `$`, `{`, `}`, `;`, `|`, `#`, quotes or `\`.
//!
//! An image name that is not a [`Word`] cannot be put in a script at all;
//! the caller leaves it out (and says so) rather than escaping it.
//!
//! Every download (kernel, initrd, a chained script) sits in a retry loop
//! bounded by [`Retry`]; when it is exhausted the node reboots rather than
//! falling through to whatever is on its disk.

use std::fmt;

mod script;

pub use script::{Agent, AgentAction, AgentBoot, Menu, MenuDefault, MenuEntry, Retry, Script, MAX_CMDLINE};

/// The kernel command line parameters the agent reads (its
/// `init::cmdline`). The agent endpoints that check the token come with
/// the control plane.
pub mod cmdline {
    /// The NIC the node booted from, pxelinux's way: `01-aa-bb-cc-dd-ee-ff`.
    pub const BOOTIF: &str = "BOOTIF";
    /// The server's base URL (`http://10.0.0.1:4870`).
    pub const SERVER: &str = "shoal.server";
    /// The node's name in the catalog.
    pub const NODE: &str = "shoal.node";
    /// `load`, `capture` or `wipe`.
    pub const TASK: &str = "shoal.task";
    /// The image to load, or the name to capture under.
    pub const IMAGE: &str = "shoal.image";
    /// The disk the task works on (`/dev/sda`).
    pub const TARGET: &str = "shoal.target";
    /// The one-time agent token.
    pub const TOKEN: &str = "shoal.token";
}

/// Longest [`Word`] or [`Url`]: long enough for any name or URL we make,
/// short enough that a kernel command line of a few stays under 2 KiB.
pub const MAX_LEN: usize = 255;

/// Why a string cannot be put into a script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// a word is empty, too long, starts with `#` or holds a character iPXE would interpret
    #[error("{0:?} is not a plain word (letters, digits, ._-:+@=,/; at most 255)")]
    Word(String),
    /// a url is not http(s) or holds a character iPXE would interpret
    #[error("{0:?} is not a plain http or https url")]
    Url(String),
    /// the agent's kernel command line would be longer than linux takes
    #[error("kernel command line of {0} bytes is longer than 2047")]
    CommandLine(usize),
}

/// One iPXE token that expands to itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Word(String);

impl Word {
    pub fn new(s: impl Into<String>) -> Result<Word, ScriptError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:+@=,/".contains(&b));
        if ok {
            Ok(Word(s))
        } else {
            Err(ScriptError::Word(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Word({:?})", self.0)
    }
}

/// An `http://` or `https://` URL that iPXE reads as one literal token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Url(String);

impl Url {
    pub fn new(s: impl Into<String>) -> Result<Url, ScriptError> {
        let s = s.into();
        let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
        let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
            && s.len() <= MAX_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:/?=&%@+,!*()[]".contains(&b));
        if ok {
            Ok(Url(s))
        } else {
            Err(ScriptError::Url(s))
        }
    }

    /// This URL with `segment` appended as one more path segment,
    /// percent-encoding anything but unreserved characters, `:` and `@`.
    pub fn join(&self, segment: &str) -> Result<Url, ScriptError> {
        let mut out = self.0.trim_end_matches('/').to_owned();
        out.push('/');
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        Url::new(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Url({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_refuse_everything_ipxe_would_interpret() {
        for good in ["debian12", "ubuntu-24.04:3", "a=b", "console=ttyS0,115200n8", "pc1.rack2", "x/y@z+1"] {
            assert_eq!(Word::new(good).map(|w| w.to_string()), Ok(good.to_owned()));
        }
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            "",
            "two words",
            "tab\there",
            "line\nkernel http://evil/",
            "${net0/mac}",
            "$x",
            "{x}",
            "#comment",
            "a||b",
            "a&&b",
            ";",
            "quote\"",
            "it's",
            "back\\slash",
            "nul\0",
            "é",
            long.as_str(),
        ] {
            assert!(Word::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn urls_must_be_http_and_plain() {
        for good in ["http://10.0.0.1:4870", "https://boot.example/x?mac=02:00:00:00:00:01&y=1"] {
            assert!(Url::new(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x/",
            "http://",
            "http:///path",
            "tftp://10.0.0.1/x",
            "http://x/${a}",
            "http://x/a b",
            "http://x/a\nchain http://evil/",
            "http://x/#frag",
            "http://x/a;b",
            "http://x/a|b",
            "http://x/'",
        ] {
            assert!(Url::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn join_percent_encodes_the_segment() {
        let base = Url::new("http://10.0.0.1:4870/boot/").expect("valid");
        assert_eq!(
            base.join("debian 12${x}").expect("valid").as_str(),
            "http://10.0.0.1:4870/boot/debian%2012%24%7Bx%7D"
        );
        assert_eq!(base.join("a:b/c").expect("valid").as_str(), "http://10.0.0.1:4870/boot/a:b%2Fc");
    }
}
