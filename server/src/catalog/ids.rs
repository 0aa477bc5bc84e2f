//! Identifiers and secrets of the catalog: the one name grammar
//! ([`Name`]), numeric ids ([`ProjectId`], [`JobId`]) and API tokens
//! ([`Secret`], of which only the hash, [`TokenHash`], is ever stored).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest name, in bytes.
pub const NAME_MAX: usize = 63;

/// A name of a project, user, image, node or node type.
///
/// **The grammar** (the one place it is defined): 1 to 63 characters,
/// lowercase ASCII letters, digits, `.`, `_` and `-`, starting with a letter
/// or digit. Names are safe in URLs, file names, kernel command lines and
/// iPXE scripts without quoting.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// Why a string is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {why} (names are 1-63 of a-z 0-9 . _ -, starting with a letter or digit)")]
pub struct NameError {
    pub name: String,
    pub why: &'static str,
}

impl Name {
    pub fn parse(s: &str) -> Result<Name, NameError> {
        let bad = |why| Err(NameError { name: s.chars().take(80).collect(), why });
        let Some(first) = s.chars().next() else { return bad("empty") };
        if s.len() > NAME_MAX {
            return bad("too long");
        }
        if !first.is_ascii_lowercase() && !first.is_ascii_digit() {
            return bad("must start with a lowercase letter or digit");
        }
        if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')) {
            return bad("only lowercase letters, digits, '.', '_' and '-' are allowed");
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::parse(s)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! int_id {
    ($(#[$doc:meta])* $t:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $t(pub i64);

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $t {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<$t, Self::Err> {
                s.parse().map($t)
            }
        }
    };
}

int_id!(
    /// A project's row id.
    ProjectId
);
int_id!(
    /// A job's id, as the API and the CLI show it.
    JobId
);

/// The prefix every token carries, so a leaked one is recognisable.
const TOKEN_PREFIX: &str = "shoal_";

/// An API or agent token in the clear: shown once to whoever asked for it,
/// never stored. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// 32 bytes from the OS's random number generator.
    pub fn generate() -> Result<Secret, getrandom::Error> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b)?;
        Ok(Secret(format!("{TOKEN_PREFIX}{}", hex::encode(b))))
    }

    /// A token as presented by a client.
    pub fn presented(s: &str) -> Secret {
        Secret(s.trim().to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the catalog keeps. Tokens carry 256 random bits, so a fast
    /// hash is enough: there is nothing to brute-force.
    pub fn hash(&self) -> TokenHash {
        TokenHash(*blake3::hash(self.0.as_bytes()).as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The BLAKE3 of a token: all the catalog knows of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_grammar_accepts_ordinary_names_and_refuses_the_rest() {
        for ok in ["pc1", "ubuntu24-std", "a", "0day", "img_v1.2", &"x".repeat(63)] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "Upper", "a b", "a/b", "a:b", "ü", "../x", &"x".repeat(64)] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_random_and_hashes_hide_them() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.hash(), Secret::presented(a.expose()).hash());
        assert!(!format!("{a:?}").contains(&a.expose()[6..]));
    }
}
