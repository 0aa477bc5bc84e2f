//! The registered nodes, until the control plane's catalog exists: a TOML
//! file given to `shoal server --nodes`, read once at start.
//!
//! ```toml
//! menu_timeout_secs = 30          # optional, for every node's menu
//!
//! [[node]]
//! name = "pc1"
//! mac = "52:54:00:12:34:56"
//! ip = "10.0.0.21"                # its fixed address (full DHCP)
//! boot = "reload debian12"        # local | reload IMAGE | capture NAME | wipe | menu
//! images = ["debian12", "ubuntu24"]  # what its menu offers
//! menu_default = "debian12"       # optional; else the local disk
//! disk = "/dev/vda"               # the agent's target; default /dev/sda
//! ```
//!
//! **API boundary.** The boot service asks a [`NodeCatalog`] about a MAC
//! and nothing else; [`NodeTable`] is today's implementation and the SQLite
//! catalog replaces it without touching the boot service.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Deserialize;
use shoal_pxe::dhcp::Mac;
use shoal_pxe::ipxe::Word;

/// The default menu timeout.
pub const MENU_TIMEOUT_SECS: u32 = 30;
/// The disk the agent works on unless a node names another.
pub const DEFAULT_DISK: &str = "/dev/sda";

/// A node's name: a hostname label (letters, digits, `-`, `.`, `_`; at most
/// 63), usable in DHCP option 12 and iPXE scripts alike.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(Word);

impl NodeName {
    pub fn as_word(&self) -> &Word {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NodesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        match Word::new(s) {
            Ok(w) if ok => Ok(NodeName(w)),
            _ => Err(NodesError::Name(s.to_owned())),
        }
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeName({})", self.0)
    }
}

/// What a node does the next time it boots from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    Local,
    /// Load this image (id, name or name:version).
    Reload(Word),
    /// Capture the disk into an image of this name.
    Capture(Word),
    Wipe,
    Menu,
    /// Run the node's job in the catalog: the agent asks the server what
    /// it is, with the token the catalog issues.
    Job,
}

impl FromStr for BootDecision {
    type Err = NodesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NodesError::Decision(s.to_owned());
        let words: Vec<&str> = s.split_whitespace().collect();
        let word = |w: &str| Word::new(w).map_err(|_| err());
        match words.as_slice() {
            ["local"] => Ok(BootDecision::Local),
            ["wipe"] => Ok(BootDecision::Wipe),
            ["menu"] => Ok(BootDecision::Menu),
            ["reload", image] => Ok(BootDecision::Reload(word(image)?)),
            ["capture", name] => Ok(BootDecision::Capture(word(name)?)),
            _ => Err(err()),
        }
    }
}

/// One registered node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: NodeName,
    pub mac: Mac,
    /// Its fixed address; without one, full DHCP gives it a pool address.
    pub ip: Option<Ipv4Addr>,
    pub boot: BootDecision,
    /// Images its menu offers, in order.
    pub images: Vec<Word>,
    /// What its menu picks after the timeout: one of `images`, or the
    /// local disk when `None`.
    pub menu_default: Option<Word>,
    pub menu_timeout_secs: u32,
    /// The disk the agent loads, captures or wipes: a `/dev/` path.
    pub disk: Word,
}

impl Node {
    /// Whether its decision needs the agent kernel served: an agent
    /// action, or a menu with images to load.
    pub fn needs_agent(&self) -> bool {
        match self.boot {
            BootDecision::Local => false,
            BootDecision::Menu => !self.images.is_empty(),
            _ => true,
        }
    }
}

/// Where the boot service learns about nodes.
pub trait NodeCatalog: Send + Sync {
    /// The node with this MAC, if it is registered.
    fn by_mac(&self, mac: Mac) -> Option<Node>;
    /// Whether `ip` is a registered node's fixed address.
    fn is_reserved(&self, ip: Ipv4Addr) -> bool;
    /// Every node, for start-up checks (a catalog that changes at run
    /// time may answer none).
    fn all(&self) -> Vec<Node>;
    /// The one-time agent token for `node`'s boot when this catalog keeps
    /// tokens itself (the control plane's does); `None` lets the boot
    /// service issue one of its own.
    fn agent_token(&self, _node: &Node) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// A choice of `image` from `node`'s menu, when this catalog records
    /// it (as a job): the token for the agent that runs it. `None` lets
    /// the boot service check the menu and issue a token itself.
    fn menu_choice(&self, _node: &Node, _image: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// Why a nodes file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodesError {
    /// the file is not valid TOML of the expected shape
    #[error("not a nodes file")]
    Syntax(#[from] toml::de::Error),
    /// a node name is not a hostname label
    #[error("node name {0:?} must be 1-63 letters, digits, '-', '.' or '_'")]
    Name(String),
    /// a mac is malformed
    #[error(transparent)]
    Mac(#[from] shoal_pxe::dhcp::ParseMacError),
    /// a boot decision does not parse
    #[error("boot {0:?} is not local, reload IMAGE, capture NAME, wipe or menu")]
    Decision(String),
    /// an image name holds characters a boot script cannot carry
    #[error("image {0:?} must be letters, digits and ._-:+@=,/ only")]
    Image(String),
    /// two nodes share a name, a mac or an address
    #[error("node {node}: {what} {value} is used by another node")]
    Duplicate { node: String, what: &'static str, value: String },
    /// a disk is not a plain /dev path
    #[error("disk {0:?} must be a /dev/ path of letters, digits and ._-/")]
    Disk(String),
    /// a menu default is not among the node's images
    #[error("node {0}: menu_default is not one of its images")]
    MenuDefault(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    menu_timeout_secs: Option<u32>,
    #[serde(default)]
    node: Vec<NodeRepr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRepr {
    name: String,
    mac: String,
    ip: Ipv4Addr,
    boot: String,
    #[serde(default)]
    images: Vec<String>,
    menu_default: Option<String>,
    disk: Option<String>,
}

/// The nodes of a nodes file, by MAC.
#[derive(Debug, Default)]
pub struct NodeTable {
    by_mac: HashMap<Mac, Node>,
}

impl NodeTable {
    /// Parses and checks a nodes file's text.
    pub fn parse(text: &str) -> Result<NodeTable, NodesError> {
        let file: FileRepr = toml::from_str(text)?;
        let timeout = file.menu_timeout_secs.unwrap_or(MENU_TIMEOUT_SECS);
        let mut table = NodeTable::default();
        let (mut names, mut ips) = (HashSet::new(), HashSet::new());
        for n in file.node {
            let image = |s: &String| Word::new(s.as_str()).map_err(|_| NodesError::Image(s.clone()));
            let node = Node {
                name: n.name.parse()?,
                mac: n.mac.parse()?,
                ip: Some(n.ip),
                boot: n.boot.parse()?,
                images: n.images.iter().map(image).collect::<Result<_, _>>()?,
                menu_default: n.menu_default.as_ref().map(image).transpose()?,
                menu_timeout_secs: timeout,
                disk: disk(n.disk.as_deref().unwrap_or(DEFAULT_DISK))?,
            };
            let dup = |what, value: String| NodesError::Duplicate { node: n.name.clone(), what, value };
            if node.menu_default.as_ref().is_some_and(|d| !node.images.contains(d)) {
                return Err(NodesError::MenuDefault(n.name));
            }
            if !names.insert(node.name.clone()) {
                return Err(dup("name", n.name.clone()));
            }
            if !ips.insert(n.ip) {
                return Err(dup("address", n.ip.to_string()));
            }
            if table.by_mac.contains_key(&node.mac) {
                return Err(dup("mac", node.mac.to_string()));
            }
            table.by_mac.insert(node.mac, node);
        }
        Ok(table)
    }
}

fn disk(s: &str) -> Result<Word, NodesError> {
    let plain = s.starts_with("/dev/") && !s.contains("/../") && !s.ends_with("/..");
    match Word::new(s) {
        Ok(w) if plain => Ok(w),
        _ => Err(NodesError::Disk(s.to_owned())),
    }
}

impl NodeCatalog for NodeTable {
    fn by_mac(&self, mac: Mac) -> Option<Node> {
        self.by_mac.get(&mac).cloned()
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.by_mac.values().any(|n| n.ip == Some(ip))
    }

    fn all(&self) -> Vec<Node> {
        let mut all: Vec<Node> = self.by_mac.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
menu_timeout_secs = 12

[[node]]
name = "pc1"
mac = "52:54:00:12:34:56"
ip = "10.0.0.21"
boot = "reload debian12:3"
images = ["debian12:3", "ubuntu24"]
menu_default = "ubuntu24"

[[node]]
name = "pc2"
mac = "52-54-00-12-34-57"
ip = "10.0.0.22"
boot = "local"
disk = "/dev/vda"
"#;

    #[test]
    fn nodes_file_parses_into_nodes_by_mac() {
        let t = NodeTable::parse(FILE).expect("valid");
        let pc1 = t.by_mac("52:54:00:12:34:56".parse().expect("mac")).expect("pc1");
        assert_eq!(pc1.name.to_string(), "pc1");
        assert_eq!(pc1.boot, BootDecision::Reload(Word::new("debian12:3").expect("word")));
        assert_eq!(pc1.menu_default.as_ref().map(Word::as_str), Some("ubuntu24"));
        assert_eq!(pc1.menu_timeout_secs, 12);
        assert_eq!(pc1.disk.as_str(), "/dev/sda");
        let pc2 = t.by_mac("52:54:00:12:34:57".parse().expect("mac")).expect("pc2");
        assert_eq!(pc2.disk.as_str(), "/dev/vda");
        assert!(t.is_reserved(Ipv4Addr::new(10, 0, 0, 22)));
        assert!(!t.is_reserved(Ipv4Addr::new(10, 0, 0, 23)));
        assert_eq!(t.all().len(), 2);
    }

    #[test]
    fn boot_decisions_parse_and_refuse_the_rest() {
        assert_eq!("wipe".parse::<BootDecision>().ok(), Some(BootDecision::Wipe));
        assert_eq!("  menu ".parse::<BootDecision>().ok(), Some(BootDecision::Menu));
        assert!(matches!("capture gold".parse(), Ok(BootDecision::Capture(_))));
        for bad in ["", "reload", "reload a b", "boot", "reload ${x}", "capture #x", "Local"] {
            assert!(bad.parse::<BootDecision>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nodes_file_refuses_duplicates_bad_names_and_injections() {
        let second = FILE.replace("name = \"pc2\"", "name = \"pc1\"");
        assert!(matches!(NodeTable::parse(&second), Err(NodesError::Duplicate { what: "name", .. })));
        let same_mac = FILE.replace("52-54-00-12-34-57", "52:54:00:12:34:56");
        assert!(matches!(NodeTable::parse(&same_mac), Err(NodesError::Duplicate { what: "mac", .. })));
        let same_ip = FILE.replace("10.0.0.22", "10.0.0.21");
        assert!(matches!(NodeTable::parse(&same_ip), Err(NodesError::Duplicate { what: "address", .. })));
        let image = FILE.replace("\"ubuntu24\"]", "\"x\\nchain http://evil/\"]");
        assert!(matches!(NodeTable::parse(&image), Err(NodesError::Image(_))));
        let name = FILE.replace("name = \"pc2\"", "name = \"pc 2\"");
        assert!(matches!(NodeTable::parse(&name), Err(NodesError::Name(_))));
        let disk = FILE.replace("/dev/vda", "sda");
        assert!(matches!(NodeTable::parse(&disk), Err(NodesError::Disk(_))));
        let default = FILE.replace("menu_default = \"ubuntu24\"", "menu_default = \"other\"");
        assert!(matches!(NodeTable::parse(&default), Err(NodesError::MenuDefault(_))));
        let unknown_key = FILE.replace("boot = \"local\"", "boot = \"local\"\ncolour = \"red\"");
        assert!(matches!(NodeTable::parse(&unknown_key), Err(NodesError::Syntax(_))));
        assert!(matches!(NodeTable::parse("[[node]]\nname = 1"), Err(NodesError::Syntax(_))));
    }
}
