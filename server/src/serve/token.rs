//! One-time agent tokens. Each agent script rendered for a node carries a
//! fresh random token on the kernel command line; the server keeps only
//! its BLAKE3 hash, with the node and the action, in memory.
//!
//! A node holds at most one live token: rendering a new agent script for
//! it replaces the old one (the node only ever runs the newest script).
//! [`AgentTokens::redeem`] checks and consumes a token; the agent
//! endpoints that call it come with the control plane, so today tokens
//! are issued and recorded but nothing accepts them yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use shoal_pxe::ipxe::Word;

use super::nodes::NodeName;

/// Random bytes in a token (printed as hex).
const TOKEN_BYTES: usize = 32;

/// What was issued to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    hash: blake3::Hash,
    /// What the agent was booted to do (`reload debian12`, `wipe`, …).
    pub action: String,
    pub at: SystemTime,
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for an agent token: {0}")]
pub struct TokenError(String);

/// The live tokens, by node.
#[derive(Debug, Default)]
pub struct AgentTokens {
    live: Mutex<HashMap<NodeName, Issued>>,
}

impl AgentTokens {
    /// A fresh token for `node`, replacing any it had.
    pub fn issue(&self, node: &NodeName, action: String, now: SystemTime) -> Result<Word, TokenError> {
        let mut raw = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut raw).map_err(|e| TokenError(e.to_string()))?;
        let text = hex::encode(raw);
        let hash = blake3::hash(text.as_bytes());
        self.lock().insert(node.clone(), Issued { hash, action, at: now });
        // invariant: hex digits are a Word.
        Ok(Word::new(text).expect("hex is a word"))
    }

    /// Whether `token` is `node`'s live token; if so it is used up.
    pub fn redeem(&self, node: &NodeName, token: &str) -> Option<Issued> {
        let mut live = self.lock();
        // blake3::Hash compares in constant time.
        let matches = live.get(node).is_some_and(|i| i.hash == blake3::hash(token.as_bytes()));
        if matches {
            live.remove(node)
        } else {
            None
        }
    }

    /// What `node` was last issued, if it is still live.
    pub fn live(&self, node: &NodeName) -> Option<Issued> {
        self.lock().get(node).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeName, Issued>> {
        // A panic while holding the lock leaves a consistent map: every
        // update is one insert or remove.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeName {
        s.parse().expect("valid name")
    }

    #[test]
    fn token_is_random_hex_and_only_its_hash_is_kept() {
        let tokens = AgentTokens::default();
        let a = tokens.issue(&node("pc1"), "wipe".into(), SystemTime::UNIX_EPOCH).expect("random");
        assert_eq!(a.as_str().len(), 2 * TOKEN_BYTES);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        let kept = format!("{:?}", tokens.live.lock().expect("unpoisoned"));
        assert!(!kept.contains(a.as_str()), "the token itself is stored: {kept}");
        let b = tokens.issue(&node("pc2"), "wipe".into(), SystemTime::UNIX_EPOCH).expect("random");
        assert_ne!(a, b);
    }

    #[test]
    fn token_redeems_once_for_its_own_node_only() {
        let tokens = AgentTokens::default();
        let t = tokens.issue(&node("pc1"), "reload debian12".into(), SystemTime::UNIX_EPOCH).expect("random");
        assert!(tokens.redeem(&node("pc2"), t.as_str()).is_none());
        assert!(tokens.redeem(&node("pc1"), "0000").is_none());
        let issued = tokens.redeem(&node("pc1"), t.as_str()).expect("live token");
        assert_eq!(issued.action, "reload debian12");
        assert!(tokens.redeem(&node("pc1"), t.as_str()).is_none(), "redeemed twice");
    }

    #[test]
    fn a_new_script_replaces_the_old_token() {
        let tokens = AgentTokens::default();
        let old = tokens.issue(&node("pc1"), "wipe".into(), SystemTime::UNIX_EPOCH).expect("random");
        let new = tokens.issue(&node("pc1"), "wipe".into(), SystemTime::UNIX_EPOCH).expect("random");
        assert!(tokens.redeem(&node("pc1"), old.as_str()).is_none());
        assert!(tokens.redeem(&node("pc1"), new.as_str()).is_some());
    }
}
