//! Network boot from the control plane's catalog: [`CatalogNodes`] is the
//! boot service's [`NodeCatalog`] when `shoal server` runs without a
//! nodes file. Nodes are registered through the API; a node in a job
//! boots the agent with a token the catalog issues, and a menu choice
//! becomes a reload job, so both run through the agent endpoints.

use std::net::Ipv4Addr;
use std::sync::Arc;

use shoal_pxe::dhcp::Mac;
use shoal_pxe::ipxe::Word;

use super::nodes::{BootDecision, Node, NodeCatalog, MENU_TIMEOUT_SECS};
use crate::catalog::boot::{BootNode, BootView};
use crate::catalog::Catalog;

/// The catalog, as network boot asks it.
pub struct CatalogNodes {
    catalog: Arc<Catalog>,
}

impl CatalogNodes {
    pub fn new(catalog: Arc<Catalog>) -> CatalogNodes {
        CatalogNodes { catalog }
    }
}

/// A catalog node in the boot service's terms. Names, images and disks
/// that cannot go into a script are refused here (the catalog's grammar
/// is narrower, so this is a guard, not a filter users meet).
fn node(n: BootNode) -> Option<Node> {
    let word = |s: &str| Word::new(s).ok();
    let (boot, images) = match n.boot {
        BootView::Local => (BootDecision::Local, Vec::new()),
        BootView::Job { .. } => (BootDecision::Job, Vec::new()),
        BootView::Menu(images) => {
            (BootDecision::Menu, images.iter().filter_map(|i| word(&format!("{}:{}", i.name, i.version))).collect())
        }
    };
    Some(Node {
        name: n.name.as_str().parse().ok()?,
        mac: n.mac,
        ip: n.ip,
        boot,
        images,
        menu_default: None,
        menu_timeout_secs: MENU_TIMEOUT_SECS,
        disk: word(&n.disk)?,
    })
}

impl NodeCatalog for CatalogNodes {
    fn by_mac(&self, mac: Mac) -> Option<Node> {
        match self.catalog.boot_node(mac) {
            Ok(n) => n.and_then(node),
            Err(e) => {
                tracing::warn!(%mac, "boot: reading the catalog: {e}");
                None
            }
        }
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.catalog.ip_reserved(ip).unwrap_or_else(|e| {
            tracing::warn!(%ip, "boot: reading the catalog: {e}");
            // Safer to keep an address from the pool than to hand out a
            // node's.
            true
        })
    }

    fn all(&self) -> Vec<Node> {
        Vec::new()
    }

    fn agent_token(&self, node: &Node) -> Result<Option<String>, String> {
        match self.catalog.issue_agent_token(node.mac) {
            Ok(Some((job, token))) => {
                tracing::info!(node = %node.name, job = %job.0, "boot: agent token issued for the node's job");
                Ok(Some(token.expose().to_string()))
            }
            Ok(None) => Err(format!("node {} is in no job", node.name)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn menu_choice(&self, node: &Node, image: &str) -> Result<Option<String>, String> {
        let (job, token) = self.catalog.menu_reload(node.mac, image).map_err(|e| e.to_string())?;
        tracing::info!(node = %node.name, job = %job.0, image, "boot: menu choice became a reload job");
        Ok(Some(token.expose().to_string()))
    }
}
