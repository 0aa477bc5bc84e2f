//! The boot service: what a node gets when it network-boots. It answers
//! the DHCP service's questions (as a `shoal_pxe::dhcp::BootPolicy`) and
//! renders each node's iPXE script from its boot decision, issuing the
//! one-time agent token that goes on the agent's command line.
//!
//! Scripts, by decision (rendered by `shoal_pxe::ipxe`):
//!
//! | decision                 | script                                      |
//! |--------------------------|---------------------------------------------|
//! | `local`                  | boot the local disk                         |
//! | `reload`/`capture`/`wipe`| the agent, with a fresh token               |
//! | `menu`                   | the node's images; each chains `load_script`|
//! | unregistered, `menu`     | a menu with no images (local, ask again)    |
//! | unregistered, `ignore`   | nothing ([`BootError::UnknownMac`])         |
//!
//! Every registered node is told to boot from the network, even when its
//! decision is `local`: the script then sends it to its disk, so changing a
//! decision never waits for a DHCP lease or firmware setting.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::SystemTime;

use shoal_pxe::dhcp::{BootPolicy, Mac, NodeBoot, UnknownClients};
use shoal_pxe::ipxe::{
    Agent, AgentAction, AgentBoot, Menu, MenuDefault, MenuEntry, Retry, Script, ScriptError, Url, Word,
};

use super::nodes::{BootDecision, Node, NodeCatalog};
use super::token::{AgentTokens, TokenError};

/// URL paths the boot service hands out, below the server's base URL.
pub mod paths {
    pub const KERNEL: &str = "boot/agent/kernel";
    pub const INITRD: &str = "boot/agent/initrd";
}

/// How scripts are made: where things are, and how patient nodes are.
#[derive(Debug, Clone)]
pub struct BootSettings {
    /// The HTTP server as nodes reach it: `http://10.0.0.1:4870`.
    pub base: Url,
    /// Whether an agent kernel and initramfs are served; without them only
    /// `local` and image-less menus can be answered.
    pub agent: bool,
    /// Kernel arguments for the agent, before Shoal's own.
    pub agent_args: Vec<Word>,
    pub unknown: UnknownClients,
    pub retry: Retry,
}

/// Why a script was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// the mac is not registered and unknown machines are ignored
    #[error("no node has mac {0}")]
    UnknownMac(Mac),
    /// the image is not one this node's menu offers
    #[error("node {node} may not load {image}")]
    NotAllowed { node: String, image: String },
    /// the node needs the agent but none is configured
    #[error("node {0} needs the agent, but no --agent-kernel and --agent-initrd are configured")]
    NoAgent(String),
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// the catalog could not be read or refused the boot
    #[error("catalog: {0}")]
    Catalog(String),
}

/// Decisions into scripts.
pub struct BootService {
    catalog: Arc<dyn NodeCatalog>,
    tokens: AgentTokens,
    settings: BootSettings,
}

impl BootService {
    pub fn new(catalog: Arc<dyn NodeCatalog>, settings: BootSettings) -> BootService {
        BootService { catalog, tokens: AgentTokens::default(), settings }
    }

    pub fn tokens(&self) -> &AgentTokens {
        &self.tokens
    }

    /// The script for the machine with this MAC.
    pub fn script(&self, mac: Mac) -> Result<String, BootError> {
        let retry = self.settings.retry;
        let Some(node) = self.catalog.by_mac(mac) else {
            if self.settings.unknown != UnknownClients::Menu {
                return Err(BootError::UnknownMac(mac));
            }
            let menu = Menu {
                node: None,
                mac,
                entries: Vec::new(),
                default: MenuDefault::Local,
                timeout_secs: super::nodes::MENU_TIMEOUT_SECS,
                again: self.script_url(mac)?,
            };
            return Ok(Script::Menu(menu).render(retry));
        };
        let script = match &node.boot {
            BootDecision::Local => Script::Local { node: Some(node.name.as_word().clone()), mac },
            BootDecision::Reload(image) => self.agent(&node, AgentAction::Reload(image.clone()))?,
            BootDecision::Capture(name) => self.agent(&node, AgentAction::Capture(name.clone()))?,
            BootDecision::Wipe => self.agent(&node, AgentAction::Wipe)?,
            BootDecision::Job => self.agent(&node, AgentAction::Job)?,
            BootDecision::Menu => Script::Menu(self.menu(&node)?),
        };
        Ok(script.render(retry))
    }

    /// The agent script loading `image` onto the machine with this MAC,
    /// for a choice from its menu: only images the menu offers.
    pub fn load_script(&self, mac: Mac, image: &str) -> Result<String, BootError> {
        let node = self.catalog.by_mac(mac).ok_or(BootError::UnknownMac(mac))?;
        if !self.settings.agent {
            return Err(BootError::NoAgent(node.name.to_string()));
        }
        if let Some(token) = self.catalog.menu_choice(&node, image).map_err(BootError::Catalog)? {
            let token = Word::new(token).map_err(BootError::Script)?;
            return Ok(self.render_agent(&node, AgentAction::Job, &token)?.render(self.settings.retry));
        }
        let not_allowed = || BootError::NotAllowed { node: node.name.to_string(), image: image.to_owned() };
        let image = node.images.iter().find(|i| i.as_str() == image).ok_or_else(not_allowed)?;
        Ok(self.agent(&node, AgentAction::Reload(image.clone()))?.render(self.settings.retry))
    }

    /// `/boot/{mac}.ipxe`: what DHCP hands to iPXE.
    pub fn script_url(&self, mac: Mac) -> Result<Url, ScriptError> {
        self.settings.base.join("boot")?.join(&format!("{mac}.ipxe"))
    }

    /// `/boot/{mac}/load/{image}`: a menu choice.
    fn load_url(&self, mac: Mac, image: &Word) -> Result<Url, ScriptError> {
        self.settings.base.join("boot")?.join(&mac.to_string())?.join("load")?.join(image.as_str())
    }

    fn agent(&self, node: &Node, action: AgentAction) -> Result<Script, BootError> {
        if !self.settings.agent {
            return Err(BootError::NoAgent(node.name.to_string()));
        }
        let describe = match &action {
            AgentAction::Reload(i) => format!("reload {i}"),
            AgentAction::Capture(n) => format!("capture {n}"),
            AgentAction::Wipe => "wipe".to_owned(),
            AgentAction::Job => "its job".to_owned(),
        };
        let token = match self.catalog.agent_token(node).map_err(BootError::Catalog)? {
            Some(t) => Word::new(t)?,
            None => self.tokens.issue(&node.name, describe.clone(), SystemTime::now())?,
        };
        tracing::info!(node = %node.name, mac = %node.mac, action = %describe, "boot: agent token issued");
        self.render_agent(node, action, &token)
    }

    fn render_agent(&self, node: &Node, action: AgentAction, token: &Word) -> Result<Script, BootError> {
        let base = &self.settings.base;
        let agent = Agent::new(
            action,
            AgentBoot {
                node: node.name.as_word(),
                mac: node.mac,
                server: base,
                token,
                target: &node.disk,
                kernel: Url::new(format!("{base}/{}", paths::KERNEL))?,
                initrd: Url::new(format!("{base}/{}", paths::INITRD))?,
                args: &self.settings.agent_args,
            },
        )?;
        Ok(Script::Agent(agent))
    }

    fn menu(&self, node: &Node) -> Result<Menu, BootError> {
        if !node.images.is_empty() && !self.settings.agent {
            return Err(BootError::NoAgent(node.name.to_string()));
        }
        let entries = node
            .images
            .iter()
            .map(|image| Ok(MenuEntry { image: image.clone(), url: self.load_url(node.mac, image)? }))
            .collect::<Result<Vec<_>, ScriptError>>()?;
        let default = match &node.menu_default {
            Some(d) => node.images.iter().position(|i| i == d).map_or(MenuDefault::Local, MenuDefault::Entry),
            None => MenuDefault::Local,
        };
        Ok(Menu {
            node: Some(node.name.as_word().clone()),
            mac: node.mac,
            entries,
            default,
            timeout_secs: node.menu_timeout_secs,
            again: self.script_url(node.mac)?,
        })
    }
}

impl BootPolicy for BootService {
    fn lookup(&self, mac: Mac) -> Option<NodeBoot> {
        let node = self.catalog.by_mac(mac)?;
        Some(NodeBoot { ip: node.ip, hostname: Some(node.name.to_string()), network_boot: true })
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.catalog.is_reserved(ip)
    }
}

#[cfg(test)]
#[path = "boot_tests.rs"]
mod tests;
