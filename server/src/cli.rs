//! Command-line arguments. Raw arguments become a validated config here,
//! before any I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Shoal reimages fleets of machines over the network.
///
/// Exit status: 0 on success, 1 on an error, 2 on bad arguments, 3 when an
/// image or a target fails verification.
#[derive(Parser, Debug)]
#[command(name = "shoal", version, max_term_width = 100)]
pub struct Cli {
    /// Where images, chunks and keys live.
    #[arg(long, global = true, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,

    /// Print results as JSON on stdout (progress bars are turned off).
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// The server's control API, e.g. http://10.0.0.1:4870, for the
    /// commands that use it (node, job, status, image share/unshare, and
    /// image delete when set).
    #[arg(long, global = true, env = "SHOAL_URL", value_name = "URL")]
    pub url: Option<String>,

    /// Log lines on stderr as text or as JSON objects (one per line).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// A project API token for --url (see `shoal token create`).
    #[arg(long, global = true, env = "SHOAL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture, deploy and inspect images.
    #[command(subcommand)]
    Image(ImageCommand),

    /// Print the server's manifest-signing public key (hex), for agents'
    /// --key and other servers' trusted keys.
    Key,

    /// Run the imaging server: serve images to nodes over HTTP and
    /// multicast sessions and, with --dhcp, boot them from the network
    /// (DHCP, TFTP and iPXE scripts). Runs until SIGINT or SIGTERM.
    Server(Box<ServerArgs>),

    /// Build what nodes boot.
    #[command(subcommand)]
    Initramfs(InitramfsCommand),

    /// Projects in the catalog (on the catalog file in --data-dir: run it
    /// on the server).
    #[command(subcommand)]
    Project(crate::client::args::ProjectCommand),

    /// API tokens (on the catalog file in --data-dir: run it on the server).
    #[command(subcommand)]
    Token(crate::client::args::TokenCommand),

    /// Register, list and reload nodes (through the API: --url, --token).
    #[command(subcommand)]
    Node(crate::client::args::NodeCommand),

    /// Show, list and cancel jobs (through the API: --url, --token).
    #[command(subcommand)]
    Job(crate::client::args::JobCommand),

    /// Nodes and jobs by state, and the images the project sees (through
    /// the API: --url, --token).
    Status,
}

#[derive(Subcommand, Debug)]
pub enum InitramfsCommand {
    /// Build the agent initramfs: the static shoal-agent as /init, the
    /// server's public key, and the kernel's NIC and disk modules with
    /// their dependencies (zstd-compressed newc cpio, reproducible).
    Build(InitramfsArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("kernel").required(true).args(["kernel_version", "modules_dir"])))]
pub struct InitramfsArgs {
    /// Kernel version whose modules to take from /lib/modules/VERSION.
    #[arg(long, value_name = "VERSION")]
    pub kernel_version: Option<String>,
    /// The kernel's modules directory (holding modules.dep).
    #[arg(long, value_name = "DIR")]
    pub modules_dir: Option<PathBuf>,
    /// The statically linked shoal-agent.
    #[arg(long, value_name = "PATH")]
    pub agent: PathBuf,
    /// File holding the server's public key, as `shoal key` prints it.
    #[arg(long, value_name = "PUBKEYFILE")]
    pub key: PathBuf,
    /// The archive to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A static busybox, for the debug shell (`shoal.debug=1`).
    #[arg(long, value_name = "PATH")]
    pub busybox: Option<PathBuf>,
    /// Another module to include, besides the common NIC and disk drivers.
    /// Repeatable.
    #[arg(long, value_name = "NAME")]
    pub module: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address and port for the HTTP API.
    #[arg(long, default_value = "0.0.0.0:4870")]
    pub listen: std::net::SocketAddr,
    /// Address of the interface multicast sessions use (default: the
    /// kernel's choice by route).
    #[arg(long, default_value = "0.0.0.0")]
    pub mcast_iface: std::net::Ipv4Addr,
    /// First multicast group; each concurrent image takes the next one.
    #[arg(long, default_value = "239.192.77.0")]
    pub group_base: std::net::Ipv4Addr,
    /// UDP port of the first multicast session; each concurrent image takes
    /// the next one.
    #[arg(long, default_value_t = 4871)]
    pub mcast_port: u16,
    /// Multicast TTL (1 keeps sessions on the local segment).
    #[arg(long, default_value_t = 1)]
    pub ttl: u32,
    /// Ceiling on each session's send rate, in megabits per second.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate_mbit: u64,
    /// Seconds without requests after which a session ends.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_secs: u64,
    /// Also serve the metadata service (EC2 and NoCloud paths; see
    /// README.md, "First boot") on this address, e.g.
    /// 169.254.169.254:80; it is always on the --listen port too.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metadata_listen: Option<std::net::SocketAddr>,
    /// What the metadata service answers for
    /// placement/availability-zone.
    #[arg(long, default_value = "shoal")]
    pub metadata_zone: String,
    #[command(flatten)]
    pub boot: BootArgs,
    #[command(flatten)]
    pub jobs: JobArgs,
}

/// The job runner: how nodes are power-cycled and timed out (see
/// README.md, "The control plane").
#[derive(Args, Debug)]
#[command(next_help_heading = "Jobs")]
pub struct JobArgs {
    /// Seconds from a power cycle to the agent taking its task before the
    /// node is cycled again.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub agent_timeout_secs: u64,
    /// Power cycles after the first before a node that never reaches its
    /// agent is marked failed.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub power_retries: u32,
    /// Seconds without a heartbeat after which a working agent's node
    /// is marked failed.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub heartbeat_timeout_secs: u64,
    /// Reloads wait for each node's first boot from its disk to check in
    /// with the metadata service before it is ready (a job may say
    /// otherwise with "first_boot").
    #[arg(long)]
    pub first_boot_wait: bool,
    /// Seconds from the agent's report to the first-boot check-in before
    /// the node is marked failed.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub first_boot_timeout_secs: u64,
    /// Seconds from the agent's report without a check-in after which the
    /// node is power-cycled into its disk (once), for agents that do not
    /// reboot by themselves.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reboot_after_secs: u64,
    /// Seconds one power command (QMP, ipmitool, Redfish, a power
    /// program) may take.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub power_timeout_secs: u64,
    /// The BMC user for ipmi nodes whose power address names none.
    #[arg(long, value_name = "USER")]
    pub ipmi_user: Option<String>,
    /// The RMCP+ cipher suite ipmitool uses (-C), e.g. 3 or 17; without
    /// it ipmitool asks each BMC first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=17))]
    pub ipmi_cipher: Option<u8>,
    /// A file whose first line is the BMC password for ipmi nodes (given
    /// to ipmitool through its environment, never its arguments).
    #[arg(long, value_name = "FILE")]
    pub ipmi_password_file: Option<PathBuf>,
    /// A file holding USER:PASSWORD for redfish nodes (HTTP basic auth).
    #[arg(long, value_name = "FILE")]
    pub redfish_credentials: Option<PathBuf>,
    /// POST a JSON document per job event (job, node, state, message) to
    /// this http:// URL, with retries; a failing webhook never holds up a
    /// job.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DhcpMode {
    /// No DHCP service (the site's DHCP server points nodes elsewhere).
    Off,
    /// Addresses for registered nodes (and the --pool), with boot files.
    Full,
    /// proxyDHCP beside the site's DHCP server: boot information only.
    Proxy,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Unknown {
    /// Machines not in --nodes get no boot file.
    Ignore,
    /// Machines not in --nodes get iPXE and a menu (local disk or ask
    /// again); in full mode only with a --pool.
    Menu,
}

/// Network boot: DHCP, TFTP and the iPXE scripts at
/// /boot/{mac}.ipxe (see README.md, "Network boot").
#[derive(Args, Debug)]
#[command(next_help_heading = "Network boot")]
pub struct BootArgs {
    /// Registered nodes: a TOML file of [[node]] tables with name, mac, ip,
    /// boot (local, reload IMAGE, capture NAME, wipe or menu) and images.
    #[arg(long, value_name = "FILE")]
    pub nodes: Option<PathBuf>,
    /// DHCP service.
    #[arg(long, value_enum, default_value = "off")]
    pub dhcp: DhcpMode,
    /// Serve DHCP on this interface only.
    #[arg(long, value_name = "IFACE")]
    pub dhcp_iface: Option<String>,
    /// This server's address on the boot network: the DHCP server id, the
    /// TFTP next-server and the host in iPXE URLs (default: the --listen
    /// address, unless it is 0.0.0.0).
    #[arg(long)]
    pub server_ip: Option<std::net::Ipv4Addr>,
    /// Full DHCP: the subnet mask handed out.
    #[arg(long, default_value = "255.255.255.0")]
    pub netmask: std::net::Ipv4Addr,
    /// Full DHCP: a default router to hand out (repeatable).
    #[arg(long)]
    pub router: Vec<std::net::Ipv4Addr>,
    /// Full DHCP: a DNS server to hand out (repeatable).
    #[arg(long)]
    pub dns: Vec<std::net::Ipv4Addr>,
    /// Full DHCP: addresses for machines not in --nodes, as FIRST-LAST;
    /// leases are kept in DATA_DIR/dhcp-leases.
    #[arg(long, value_name = "FIRST-LAST")]
    pub pool: Option<String>,
    /// Full DHCP: lease time in seconds.
    #[arg(long, default_value_t = 3600)]
    pub lease_secs: u64,
    /// What machines not in --nodes get.
    #[arg(long, value_enum, default_value = "ignore")]
    pub unknown: Unknown,
    /// Where TFTP listens (default 0.0.0.0:69 when --dhcp is on; when
    /// given, TFTP runs even with --dhcp off).
    #[arg(long, value_name = "ADDR:PORT")]
    pub tftp_listen: Option<std::net::SocketAddr>,
    /// Directory served over TFTP, which must hold undionly.kpxe and
    /// ipxe.efi (default: DATA_DIR/tftp, filled at start from --ipxe-bios
    /// and --ipxe-efi).
    #[arg(long, value_name = "DIR")]
    pub tftp_root: Option<PathBuf>,
    /// iPXE for BIOS PXE ROMs, served as undionly.kpxe.
    #[arg(long, value_name = "PATH", default_value = "/usr/lib/ipxe/undionly.kpxe")]
    pub ipxe_bios: PathBuf,
    /// iPXE for x86-64 UEFI, served as ipxe.efi over TFTP and at
    /// /boot/ipxe.efi for UEFI HTTP boot.
    #[arg(long, value_name = "PATH", default_value = "/usr/lib/ipxe/ipxe.efi")]
    pub ipxe_efi: PathBuf,
    /// The agent's kernel, served at /boot/agent/kernel.
    #[arg(long, value_name = "PATH", requires = "agent_initrd")]
    pub agent_kernel: Option<PathBuf>,
    /// The agent's initramfs, served at /boot/agent/initrd.
    #[arg(long, value_name = "PATH", requires = "agent_kernel")]
    pub agent_initrd: Option<PathBuf>,
    /// Kernel arguments for the agent, before Shoal's own (BOOTIF,
    /// shoal.server, shoal.node, shoal.task, shoal.image, shoal.target,
    /// shoal.token).
    #[arg(long, value_name = "ARGS", default_value = "console=tty0 console=ttyS0,115200")]
    pub agent_cmdline: String,
    /// Failed downloads a booting node retries before it reboots.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub boot_retries: u32,
    /// Seconds a booting node waits between retries.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=600))]
    pub boot_retry_secs: u32,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Capture a disk, a partition or an image file into the store.
    ///
    /// Reads only allocated data: the partition table (MBR or GPT), the
    /// blocks ext2/3/4 filesystems have in use, the header of swap areas,
    /// and, everywhere else, whatever is not zero. A sparse file's holes are
    /// skipped without being read.
    Capture(CaptureArgs),

    /// Build a bootable whole-disk image from a root filesystem tree.
    ///
    /// Makes a sparse disk of --size with an MBR and one bootable ext4
    /// partition filled from --rootfs (mkfs.ext4 -d), puts the kernel (and
    /// initrd) in its /boot, installs EXTLINUX (extlinux.conf boots the
    /// kernel with root=UUID=... and the console on ttyS0), writes
    /// syslinux's MBR boot code, and captures the disk into the store.
    /// Needs root (a loop mount), sfdisk, mkfs.ext4 and extlinux.
    Build(BuildArgs),

    /// Install `shoal-agent firstboot` into an image (for images without
    /// cloud-init), as a new version of it.
    ///
    /// Deploys the image to a scratch file in the store, mounts its root
    /// filesystem (the first ext2/3/4 filesystem holding /etc), copies
    /// --agent to /usr/local/sbin/shoal-agent, adds a hook that runs
    /// `shoal-agent firstboot --url URL` at boot (a systemd unit ordered
    /// before sshd and the gettys, or a line in /etc/rc.local), and
    /// captures the result as NAME, version --version (default
    /// VERSION+firstboot), derived from the original. Needs root (a loop
    /// mount).
    Customize(CustomizeArgs),

    /// Write an image onto a disk, a partition or a file.
    ///
    /// Nothing is written until every chunk is known to be present and the
    /// target is known to be large enough; each chunk is verified against
    /// the signed manifest before its bytes are written. A missing file
    /// target is created at the image's size.
    Deploy(DeployArgs),

    /// Check an image: its signature and every chunk's hashes.
    ///
    /// With --target, also check that a disk or file holds the image.
    Verify(VerifyArgs),

    /// Show an image's manifest.
    Info(ImageRef),

    /// List the images in the store, newest first.
    List,

    /// Import a raw, sparse or qcow2 (any format qemu-img reads) disk image
    /// file.
    Import(ImportArgs),

    /// Write an image out as a raw (sparse) or qcow2 file.
    Export(ExportArgs),

    /// Remove an image from the store. Its chunks are freed by `gc`.
    ///
    /// With --url (or SHOAL_URL) set, asks the server instead: the image
    /// leaves its catalog and store, if the token's project owns it.
    /// Without, removes it from the local store in --data-dir.
    Delete(ImageRef),

    /// Make a new image from a node's disk: a capture job on the server
    /// (through the API: --url, --token). The node's agent captures its
    /// disk and uploads it; follow it with `shoal job watch`.
    Create(crate::client::args::CreateArgs),

    /// Capture a new version of an image the project owns from a node's
    /// disk (through the API: --url, --token): a capture job.
    Snapshot(crate::client::args::SnapshotArgs),

    /// Share an image read-only with a project, or make it public
    /// (through the API: --url, --token; owner project only).
    Share(crate::client::args::ShareArgs),

    /// Stop sharing an image with a project, or make it not public
    /// (through the API: --url, --token; owner project only).
    Unshare(crate::client::args::ShareArgs),

    /// Remove chunks no image uses and leftovers of interrupted captures.
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct ImageRef {
    /// Image id (or 6+ leading digits of it), NAME (the newest of that
    /// name) or NAME:VERSION.
    pub image: String,
}

#[derive(Args, Debug, Clone)]
pub struct Describe {
    /// The image's name.
    #[arg(long, visible_alias = "out")]
    pub name: String,
    /// Version label.
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Free text describing the image.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Architecture the image runs on.
    #[arg(long, default_value = std::env::consts::ARCH)]
    pub arch: String,
    /// Build stamp (a build number or revision).
    #[arg(long, default_value = "")]
    pub stamp: String,
    /// Who made the image (default: $USER).
    #[arg(long, env = "USER", default_value = "")]
    pub author: String,
    /// The image this one derives from (id or name).
    #[arg(long)]
    pub base: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct Tuning {
    /// zstd compression level (1-19). Higher is smaller and slower.
    #[arg(long, default_value_t = shoal_proto::chunk::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Block device or file to capture.
    pub src: PathBuf,
    /// Capture only this partition (repeat for several: a combo image).
    #[arg(long, short)]
    pub partition: Vec<u32>,
    /// The operating system on partition N (the OSID), overriding what
    /// capture reads from its /etc/os-release. NAME alone names the one
    /// partition captured. Repeatable.
    #[arg(long, value_name = "[N=]NAME")]
    pub os: Vec<String>,
    #[command(flatten)]
    pub describe: Describe,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The root filesystem tree (becomes /).
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    /// The kernel to boot (copied to /boot/vmlinuz).
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,
    /// Its initrd (copied to /boot/initrd.img); it must find the root by
    /// UUID. Without one the kernel needs its disk and ext4 drivers built in.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Disk size: bytes, or with K, M, G or T (binary), at least 16M.
    #[arg(long, value_parser = crate::build::parse_size)]
    pub size: u64,
    /// More kernel parameters, after root= and console=.
    #[arg(long, default_value = "")]
    pub append: String,
    #[command(flatten)]
    pub describe: Describe,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Hook {
    /// /etc/systemd/system/shoal-firstboot.service, enabled.
    Systemd,
    /// A line in /etc/rc.local, before its `exit 0`.
    RcLocal,
}

#[derive(Args, Debug)]
pub struct CustomizeArgs {
    /// Image id or name.
    pub image: String,
    /// The shoal-agent to install: a static build runs on any x86-64
    /// distribution (built with RUSTFLAGS="-C target-feature=+crt-static").
    #[arg(long, value_name = "PATH")]
    pub agent: PathBuf,
    /// How first boot is started.
    #[arg(long, value_enum, default_value = "systemd")]
    pub hook: Hook,
    /// The metadata service the node asks.
    #[arg(long, default_value = "http://169.254.169.254")]
    pub url: String,
    /// The new version's label (default: the image's version + "+firstboot").
    #[arg(long)]
    pub version: Option<String>,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Free {
    /// Leave free space as the target had it (fastest).
    Leave,
    /// Make free space read as zeros.
    Zero,
    /// Discard (TRIM) free space; files get holes.
    Discard,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Image id or name.
    pub image: String,
    /// Disk, partition or file to write.
    pub dest: PathBuf,
    /// Write into this partition of DEST (or DEST itself if it has no
    /// partition table); from a whole-disk or multi-partition image, only
    /// this partition is written.
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// What to do with the free space of filesystems in the image.
    #[arg(long, value_enum, default_value = "leave")]
    pub free: Free,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Image id or name.
    pub image: String,
    /// Also check that this disk or file holds the image.
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// With --target: the partition of the target to check.
    #[arg(long, short, requires = "target")]
    pub partition: Option<u32>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Disk image file: raw, sparse, qcow2 or another format qemu-img reads.
    pub file: PathBuf,
    /// The image's name (default: the file name without its extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Version label.
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Free text describing the image.
    #[arg(long, default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// A sparse raw disk image.
    Raw,
    /// qcow2, through qemu-img.
    Qcow2,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Image id or name.
    pub image: String,
    /// File to create (must not exist).
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "raw")]
    pub format: ExportFormat,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Report what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
}
