//! What an operator chooses: the mode, the network options, the boot file
//! for each client architecture, what to do with unknown machines.
//!
//! A [`Config`] is checked once with [`Config::validate`] before anything
//! runs; the responder refuses an invalid one.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::packet::ClientArch;

/// Full DHCP service, or proxyDHCP beside a site DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Registered nodes get their fixed address; unknown ones an address
    /// from the pool, if there is one.
    Full(FullConfig),
    /// Answers PXE clients with boot information only; never an address.
    Proxy,
}

/// The network a full-mode server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullConfig {
    pub netmask: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Option 51; T1 and T2 are half and seven eighths of it.
    pub lease_time: Duration,
    /// Addresses for machines the boot policy does not know.
    pub pool: Option<PoolRange>,
}

/// An inclusive range of addresses for the dynamic pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl PoolRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    pub fn len(&self) -> u32 {
        u32::from(self.last).saturating_sub(u32::from(self.first)).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

/// What boot firmware is told to load. Strings are templates: `{mac}`
/// becomes the client's MAC (`aa:bb:cc:dd:ee:ff`) and `{server}` the
/// server's address; anything else, iPXE's own `${...}` included, is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// For PXE ROMs and UEFI, by option 93. An `http://` or `https://`
    /// entry is a URL for UEFI HTTP boot; anything else a TFTP path.
    pub files: BTreeMap<ClientArch, String>,
    /// For iPXE (user class "iPXE") on a registered node: its script.
    pub script_url: String,
    /// For iPXE on an unknown machine when [`UnknownClients::Menu`].
    pub menu_url: String,
}

impl Default for BootConfig {
    fn default() -> Self {
        let files = [
            (ClientArch::BIOS, "undionly.kpxe"),
            (ClientArch::EFI_IA32, "ipxe-i386.efi"),
            (ClientArch::EFI_BC, "ipxe.efi"),
            (ClientArch::EFI_X64, "ipxe.efi"),
            (ClientArch::EFI_ARM64, "ipxe-arm64.efi"),
            (ClientArch::EFI_X64_HTTP, "http://{server}/boot/ipxe.efi"),
            (ClientArch::EFI_ARM64_HTTP, "http://{server}/boot/ipxe-arm64.efi"),
        ];
        BootConfig {
            files: files.into_iter().map(|(a, f)| (a, f.to_owned())).collect(),
            script_url: "http://{server}/boot/{mac}.ipxe".to_owned(),
            menu_url: "http://{server}/boot/menu.ipxe".to_owned(),
        }
    }
}

/// What to do with a MAC the boot policy does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownClients {
    /// Silence (full mode: an address from the pool, but no boot file).
    #[default]
    Ignore,
    /// Boot it into iPXE and the menu script. In full mode only with a
    /// pool, since the machine needs an address first.
    Menu,
}

/// A token bucket per MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Datagrams a MAC may send at once.
    pub burst: u32,
    /// Datagrams a MAC may send per second, sustained.
    pub per_second: u32,
    /// MACs tracked at once; beyond it, new MACs are refused until old
    /// buckets refill and are forgotten.
    pub max_clients: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { burst: 20, per_second: 4, max_clients: 4096 }
    }
}

/// UDP ports. Tests move them off the privileged ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Where servers listen and relays are answered: 67.
    pub server: u16,
    /// Where clients listen: 68.
    pub client: u16,
    /// The PXE boot server port, proxy mode only: 4011.
    pub proxy: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports { server: 67, client: 68, proxy: 4011 }
    }
}

/// Everything the responder needs to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our address: option 54, and `{server}` in templates.
    pub server_ip: Ipv4Addr,
    /// `siaddr`: where the TFTP server is. Usually `server_ip`.
    pub next_server: Ipv4Addr,
    pub mode: Mode,
    pub boot: BootConfig,
    pub unknown: UnknownClients,
    pub rate_limit: RateLimit,
    pub ports: Ports,
}

impl Config {
    /// Full mode with default boot files, ports and limits.
    pub fn full(server_ip: Ipv4Addr, full: FullConfig) -> Self {
        Config::new(server_ip, Mode::Full(full))
    }

    /// Proxy mode with default boot files, ports and limits.
    pub fn proxy(server_ip: Ipv4Addr) -> Self {
        Config::new(server_ip, Mode::Proxy)
    }

    fn new(server_ip: Ipv4Addr, mode: Mode) -> Self {
        Config {
            server_ip,
            next_server: server_ip,
            mode,
            boot: BootConfig::default(),
            unknown: UnknownClients::default(),
            rate_limit: RateLimit::default(),
            ports: Ports::default(),
        }
    }

    /// The pool, in full mode with one.
    pub fn pool(&self) -> Option<PoolRange> {
        match &self.mode {
            Mode::Full(full) => full.pool,
            Mode::Proxy => None,
        }
    }

    /// Refuses settings that would make the service hand out nonsense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server_ip.is_unspecified() || self.server_ip.is_broadcast() {
            return Err(ConfigError::ServerIp);
        }
        let templates = self.boot.files.values().chain([&self.boot.script_url, &self.boot.menu_url]);
        for t in templates {
            // The longest expansion: {mac} and {server} grow by at most 12
            // and 11 bytes each time they appear.
            let longest = t.len() + 12 * t.matches("{mac}").count() + 11 * t.matches("{server}").count();
            if t.is_empty() || longest > MAX_BOOT_FILE {
                return Err(ConfigError::BootFile(t.clone()));
            }
        }
        if self.rate_limit.burst == 0 || self.rate_limit.per_second == 0 || self.rate_limit.max_clients == 0 {
            return Err(ConfigError::RateLimit);
        }
        let Mode::Full(full) = &self.mode else { return Ok(()) };
        let mask = u32::from(full.netmask);
        if mask.leading_ones() + mask.trailing_zeros() != 32 || mask == 0 {
            return Err(ConfigError::Netmask(full.netmask));
        }
        let lease = full.lease_time.as_secs();
        if !(MIN_LEASE_SECS..=u64::from(u32::MAX - 1)).contains(&lease) {
            return Err(ConfigError::LeaseTime(full.lease_time));
        }
        if full.routers.len() > 16 || full.dns.len() > 16 || full.domain.as_ref().is_some_and(|d| d.len() > 255) {
            return Err(ConfigError::TooManyOptions);
        }
        if let Some(pool) = full.pool {
            let net = |ip: Ipv4Addr| u32::from(ip) & mask;
            let same_net = net(pool.first) == net(self.server_ip) && net(pool.last) == net(self.server_ip);
            if pool.is_empty() || !same_net || pool.len() > MAX_POOL || pool.contains(self.server_ip) {
                return Err(ConfigError::Pool(pool));
            }
        }
        Ok(())
    }
}

/// The longest boot file or URL we send: one option, no RFC 3396 splitting.
pub const MAX_BOOT_FILE: usize = 255;
/// The largest dynamic pool.
pub const MAX_POOL: u32 = 65536;
/// The shortest lease time: short enough for tests, long enough that
/// renewals are not a flood.
pub const MIN_LEASE_SECS: u64 = 10;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// the server address must be a unicast address
    #[error("server address must be a unicast address")]
    ServerIp,
    /// a boot file template is empty or could expand past 255 bytes
    #[error("boot file {0:?} is empty or longer than 255 bytes")]
    BootFile(String),
    /// the netmask is not a contiguous prefix
    #[error("netmask {0} is not a prefix")]
    Netmask(Ipv4Addr),
    /// the lease time is out of range
    #[error("lease time {0:?} is out of range")]
    LeaseTime(Duration),
    /// more routers, DNS servers or domain than a reply can carry
    #[error("too many routers or dns servers, or domain too long")]
    TooManyOptions,
    /// the pool is empty, too large, off the server's subnet or holds the server's address
    #[error("pool {}-{} is empty, too large, off the server's subnet or holds its address", .0.first, .0.last)]
    Pool(PoolRange),
    /// the rate limit allows nothing
    #[error("rate limit must allow at least one datagram")]
    RateLimit,
}
