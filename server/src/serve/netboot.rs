//! Network boot for `shoal server`: the command line turned into the pxe
//! crate's DHCP and TFTP configurations and the boot service's settings,
//! all checked before any I/O ([`Netboot::from_args`], then
//! [`Netboot::check_nodes`] once the nodes file is read); the built-in
//! TFTP root; and the boot files the HTTP API serves.
//!
//! What DHCP hands out, by client (see `shoal_pxe::dhcp::policy`):
//!
//! | client                       | gets                                     |
//! |------------------------------|------------------------------------------|
//! | BIOS PXE ROM (arch 0)        | `undionly.kpxe` over TFTP                |
//! | UEFI x64 PXE (arch 7, 9)     | `ipxe.efi` over TFTP                     |
//! | UEFI x64 HTTP boot (arch 16) | `http://SERVER:PORT/boot/ipxe.efi`       |
//! | iPXE (user class "iPXE")     | `http://SERVER:PORT/boot/{mac}.ipxe`     |
//!
//! Other architectures get nothing: there is no iPXE binary for them here.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use shoal_pxe::dhcp::{self, BootConfig, ClientArch, ConfigError, FullConfig, PoolRange, UnknownClients};
use shoal_pxe::ipxe::{Retry, ScriptError, Url, Word};
use shoal_pxe::tftp;

use super::boot::BootSettings;
use super::nodes::{NodeCatalog, NodesError};
use crate::cli::{BootArgs, DhcpMode, Unknown};

/// TFTP names of the iPXE binaries, as the DHCP boot files say.
pub const BIOS_FILE: &str = "undionly.kpxe";
pub const EFI_FILE: &str = "ipxe.efi";

/// Why the network boot settings were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetbootError {
    /// no address to advertise
    #[error("--dhcp and --tftp-listen need --server-ip (or a --listen address other than 0.0.0.0)")]
    NoServerIp,
    /// dhcp settings the pxe crate refuses
    #[error("dhcp settings")]
    Dhcp(#[from] ConfigError),
    /// full-mode settings given without full mode
    #[error("--pool, --router and --dns only apply to --dhcp full")]
    NotFull,
    /// --pool is not FIRST-LAST
    #[error("--pool {0:?} is not FIRST-LAST (two addresses)")]
    Pool(String),
    /// an agent kernel argument cannot go into a script
    #[error("--agent-cmdline")]
    AgentArg(#[source] ScriptError),
    /// the server address does not make a url
    #[error("server url")]
    Url(#[source] ScriptError),
    /// the nodes file cannot be read
    #[error("reading nodes file {path}")]
    NodesRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// the nodes file is refused
    #[error("nodes file {path}")]
    Nodes {
        path: PathBuf,
        #[source]
        source: NodesError,
    },
    /// a node's decision needs the agent, which is not configured
    #[error("node {0} needs the agent: give --agent-kernel and --agent-initrd")]
    NeedsAgent(String),
    /// a node's fixed address is not on the served subnet
    #[error("node {node}: address {ip} is not on {server}'s subnet or is the server's")]
    OffSubnet { node: String, ip: Ipv4Addr, server: Ipv4Addr },
    /// the built-in tftp root could not be filled
    #[error("preparing tftp root {path}")]
    TftpRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where TFTP files come from.
#[derive(Debug, Clone)]
pub enum TftpRoot {
    /// The operator's directory, served as it is.
    Dir(PathBuf),
    /// `dir` is filled at start with `bios` and `efi` under their TFTP names.
    Builtin { dir: PathBuf, bios: PathBuf, efi: PathBuf },
}

/// Files the HTTP API serves under /boot.
#[derive(Debug, Clone, Default)]
pub struct BootFiles {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub efi: Option<PathBuf>,
}

/// The validated network boot settings.
#[derive(Debug, Clone)]
pub struct Netboot {
    /// The boot service's settings; `None` when there is no address to put
    /// in URLs (then /boot answers 404).
    pub boot: Option<BootSettings>,
    pub nodes: Option<PathBuf>,
    pub dhcp: Option<(dhcp::Config, dhcp::ServerOptions)>,
    pub tftp: Option<(SocketAddr, TftpRoot)>,
    pub files: BootFiles,
}

impl Netboot {
    /// Checks the arguments; touches nothing.
    pub fn from_args(a: &BootArgs, listen: SocketAddr, data_dir: &Path) -> Result<Netboot, NetbootError> {
        let listen_ip = match listen {
            SocketAddr::V4(v4) if !v4.ip().is_unspecified() => Some(*v4.ip()),
            _ => None,
        };
        let server_ip = a.server_ip.or(listen_ip);
        let wants_tftp = a.dhcp != DhcpMode::Off || a.tftp_listen.is_some();
        if wants_tftp && server_ip.is_none() {
            return Err(NetbootError::NoServerIp);
        }
        let unknown = match a.unknown {
            Unknown::Ignore => UnknownClients::Ignore,
            Unknown::Menu => UnknownClients::Menu,
        };
        let boot = match server_ip {
            Some(ip) => {
                let base = Url::new(format!("http://{ip}:{}", listen.port())).map_err(NetbootError::Url)?;
                let agent_args = a
                    .agent_cmdline
                    .split_whitespace()
                    .map(Word::new)
                    .collect::<Result<_, _>>()
                    .map_err(NetbootError::AgentArg)?;
                let retry = Retry { attempts: a.boot_retries, delay_secs: a.boot_retry_secs };
                Some(BootSettings { base, agent: a.agent_kernel.is_some(), agent_args, unknown, retry })
            }
            None => None,
        };
        let dhcp = match (a.dhcp, server_ip) {
            (DhcpMode::Off, _) | (_, None) => None,
            (mode, Some(ip)) => Some(dhcp_config(a, mode, ip, unknown, listen.port(), data_dir)?),
        };
        if a.dhcp != DhcpMode::Full && (a.pool.is_some() || !a.router.is_empty() || !a.dns.is_empty()) {
            return Err(NetbootError::NotFull);
        }
        let tftp = wants_tftp.then(|| {
            let listen = a.tftp_listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 69)));
            let root = match &a.tftp_root {
                Some(dir) => TftpRoot::Dir(dir.clone()),
                None => {
                    TftpRoot::Builtin { dir: data_dir.join("tftp"), bios: a.ipxe_bios.clone(), efi: a.ipxe_efi.clone() }
                }
            };
            (listen, root)
        });
        let files =
            BootFiles { kernel: a.agent_kernel.clone(), initrd: a.agent_initrd.clone(), efi: Some(a.ipxe_efi.clone()) };
        Ok(Netboot { boot, nodes: a.nodes.clone(), dhcp, tftp, files })
    }

    /// Checks the registered nodes against the settings: the agent is
    /// there for every node that needs it, and in full mode every fixed
    /// address is on the served subnet.
    pub fn check_nodes(&self, catalog: &dyn NodeCatalog) -> Result<(), NetbootError> {
        for node in catalog.all() {
            if node.needs_agent() && self.files.kernel.is_none() {
                return Err(NetbootError::NeedsAgent(node.name.to_string()));
            }
            let Some((cfg, _)) = &self.dhcp else { continue };
            let dhcp::Mode::Full(full) = &cfg.mode else { continue };
            let mask = u32::from(full.netmask);
            let server = cfg.server_ip;
            let Some(ip) = node.ip else { continue };
            if u32::from(ip) & mask != u32::from(server) & mask || ip == server {
                return Err(NetbootError::OffSubnet { node: node.name.to_string(), ip, server });
            }
        }
        Ok(())
    }

    /// The TFTP server's configuration, filling the built-in root first.
    pub fn tftp_config(&self) -> Result<Option<tftp::ServerConfig>, NetbootError> {
        let Some((listen, root)) = &self.tftp else { return Ok(None) };
        let dir = match root {
            TftpRoot::Dir(dir) => dir.clone(),
            TftpRoot::Builtin { dir, bios, efi } => {
                let err = |source| NetbootError::TftpRoot { path: dir.clone(), source };
                fs::create_dir_all(dir).map_err(err)?;
                install(bios, &dir.join(BIOS_FILE)).map_err(err)?;
                install(efi, &dir.join(EFI_FILE)).map_err(err)?;
                dir.clone()
            }
        };
        let mut cfg = tftp::ServerConfig::new(dir);
        cfg.listen = *listen;
        Ok(Some(cfg))
    }
}

/// Copies `from` to `to` through a temporary file, so a running TFTP
/// transfer never reads half a binary.
fn install(from: &Path, to: &Path) -> io::Result<()> {
    let tmp = to.with_extension("tmp");
    fs::copy(from, &tmp).map_err(|e| io::Error::new(e.kind(), format!("copying {}: {e}", from.display())))?;
    fs::rename(&tmp, to)
}

fn dhcp_config(
    a: &BootArgs,
    mode: DhcpMode,
    server_ip: Ipv4Addr,
    unknown: UnknownClients,
    http_port: u16,
    data_dir: &Path,
) -> Result<(dhcp::Config, dhcp::ServerOptions), NetbootError> {
    let pool = a.pool.as_deref().map(parse_pool).transpose()?;
    let mut cfg = match mode {
        DhcpMode::Proxy => dhcp::Config::proxy(server_ip),
        _ => dhcp::Config::full(
            server_ip,
            FullConfig {
                netmask: a.netmask,
                routers: a.router.clone(),
                dns: a.dns.clone(),
                domain: None,
                lease_time: std::time::Duration::from_secs(a.lease_secs),
                pool,
            },
        ),
    };
    cfg.boot = boot_files(http_port);
    cfg.unknown = unknown;
    cfg.validate()?;
    let opts = dhcp::ServerOptions {
        interface: a.dhcp_iface.clone(),
        lease_file: pool.map(|_| data_dir.join("dhcp-leases")),
        ..dhcp::ServerOptions::default()
    };
    Ok((cfg, opts))
}

/// The boot file for each architecture we have an iPXE binary for, and
/// the script URL on our HTTP port.
fn boot_files(http_port: u16) -> BootConfig {
    let base = format!("http://{{server}}:{http_port}/boot");
    let files = [
        (ClientArch::BIOS, BIOS_FILE.to_owned()),
        (ClientArch::EFI_BC, EFI_FILE.to_owned()),
        (ClientArch::EFI_X64, EFI_FILE.to_owned()),
        (ClientArch::EFI_X64_HTTP, format!("{base}/{EFI_FILE}")),
    ];
    let script = format!("{base}/{{mac}}.ipxe");
    BootConfig { files: files.into_iter().collect(), script_url: script.clone(), menu_url: script }
}

fn parse_pool(s: &str) -> Result<PoolRange, NetbootError> {
    let err = || NetbootError::Pool(s.to_owned());
    let (first, last) = s.split_once('-').ok_or_else(err)?;
    Ok(PoolRange { first: first.trim().parse().map_err(|_| err())?, last: last.trim().parse().map_err(|_| err())? })
}

#[cfg(test)]
#[path = "netboot_tests.rs"]
mod tests;
