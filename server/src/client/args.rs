//! The command-line arguments of the control-plane commands (`shoal
//! project`, `token`, `node`, `job`, `image share`), validated by clap
//! with the catalog's own name grammar before anything is sent.

use clap::{Args, Subcommand, ValueEnum};

use crate::catalog::{Name, PowerDriver};

fn name(s: &str) -> Result<Name, String> {
    Name::parse(s).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Make a project (a bootstrap command: it opens the catalog file in
    /// --data-dir directly, so run it on the server).
    Create {
        #[arg(value_parser = name)]
        name: Name,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue an API token for a project and print it once; the catalog
    /// keeps only its hash. A bootstrap command on the catalog file in
    /// --data-dir.
    Create {
        #[arg(long, value_parser = name)]
        project: Name,
        /// The user the token is for (made if new).
        #[arg(long, value_parser = name)]
        user: Option<Name>,
        /// Admin tokens also manage every project's nodes and jobs (image
        /// rights still follow the token's project).
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Power {
    /// A BMC through ipmitool (address [USER@]HOST[:PORT]).
    Ipmi,
    /// A BMC's Redfish API (address http://BMC/redfish/v1/Systems/ID).
    Redfish,
    /// A QEMU VM's QMP unix socket (address: its path).
    Qmp,
    /// A person, told in the server's log.
    Manual,
    /// A program run as PROGRAM on|off|cycle|status NODE MAC (address: its
    /// absolute path).
    Command,
}

impl From<Power> for PowerDriver {
    fn from(p: Power) -> PowerDriver {
        match p {
            Power::Ipmi => PowerDriver::Ipmi,
            Power::Redfish => PowerDriver::Redfish,
            Power::Qmp => PowerDriver::Qmp,
            Power::Manual => PowerDriver::Manual,
            Power::Command => PowerDriver::Command,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BootChoice {
    /// Boot from the local disk.
    Local,
    /// Show the image menu at the console.
    Menu,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Register a node with the server.
    Register {
        #[arg(value_parser = name)]
        name: Name,
        /// Its boot NIC's MAC address, aa:bb:cc:dd:ee:ff.
        #[arg(long)]
        mac: String,
        /// Its node type (hardware class), e.g. pc3000.
        #[arg(long = "type", value_parser = name)]
        node_type: Name,
        /// How its power is switched.
        #[arg(long, value_enum, default_value = "manual")]
        power: Power,
        /// The BMC address, QMP socket or power program (see --power).
        #[arg(long, default_value = "")]
        power_address: String,
        /// Register it into this project (admin tokens only).
        #[arg(long, value_parser = name)]
        project: Option<Name>,
        /// Its fixed IPv4 address (DHCP gives it this one in full mode).
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// The disk its agent works on.
        #[arg(long, default_value = "/dev/sda")]
        disk: String,
    },
    /// List the project's nodes.
    List,
    /// Show one node.
    Show {
        #[arg(value_parser = name)]
        name: Name,
    },
    /// Reload nodes with an image: a reload job. The server marks each
    /// node's next boot as the agent, power-cycles it, follows its agent
    /// and marks it ready (or failed). Without --image, the project's
    /// default image. Prints each node's one-time initial password for
    /// its next instance (shown only here).
    Reload {
        #[arg(required = true, value_parser = name)]
        nodes: Vec<Name>,
        #[arg(long)]
        image: Option<String>,
        /// Wait for each node's first boot from its disk to check in
        /// (default: the server's --first-boot-wait).
        #[arg(long, overrides_with = "no_first_boot")]
        first_boot: bool,
        /// Do not wait for the first boot, whatever the server's default.
        #[arg(long)]
        no_first_boot: bool,
        /// Follow the job until it ends, as `shoal job watch` does.
        #[arg(long)]
        watch: bool,
    },
    /// Erase nodes' disks (a wipe job).
    Wipe {
        #[arg(required = true, value_parser = name)]
        nodes: Vec<Name>,
    },
    /// A node's first-boot metadata: SSH keys, user-data, ephemeral disk,
    /// IMDSv2 (see README.md, "First boot").
    #[command(subcommand)]
    Metadata(MetadataCommand),
    /// Start a new instance of a node reloaded outside Shoal's jobs (e.g.
    /// with `shoal image deploy`): a new instance-id, so first boot runs
    /// again, and a new one-time initial password, printed this once.
    Instance {
        #[arg(value_parser = name)]
        name: Name,
    },
    /// Set what a node's next network boot does.
    Boot {
        #[arg(value_parser = name)]
        name: Name,
        #[arg(value_enum)]
        boot: BootChoice,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Imdsv2 {
    /// Metadata requests must carry a token from PUT /latest/api/token.
    Required,
    /// Tokens are checked when sent, not required.
    Optional,
}

#[derive(Subcommand, Debug)]
pub enum MetadataCommand {
    /// Show a node's metadata.
    Show {
        #[arg(value_parser = name)]
        name: Name,
    },
    /// Change a node's metadata; what is not named stays as it is.
    Set {
        #[arg(value_parser = name)]
        name: Name,
        /// A file of SSH public keys, one a line (replaces the node's
        /// keys; repeatable, all files' keys are kept).
        #[arg(long, value_name = "FILE")]
        ssh_keys: Vec<std::path::PathBuf>,
        /// Remove every SSH key.
        #[arg(long, conflicts_with = "ssh_keys")]
        no_ssh_keys: bool,
        /// User-data: a script (starting `#!`) or `#cloud-config`; text, at
        /// most 16 KiB.
        #[arg(long, value_name = "FILE")]
        user_data: Option<std::path::PathBuf>,
        #[arg(long, conflicts_with = "user_data")]
        no_user_data: bool,
        /// A disk the node mounts at /mnt, e.g. /dev/vdb.
        #[arg(long, value_name = "DEV")]
        ephemeral_disk: Option<String>,
        #[arg(long, conflicts_with = "ephemeral_disk")]
        no_ephemeral_disk: bool,
        /// Whether metadata requests need an IMDSv2 token.
        #[arg(long, value_enum)]
        imdsv2: Option<Imdsv2>,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Show a job: state, each node's progress, history.
    Show { id: i64 },
    /// List the project's jobs, newest first.
    List,
    /// Cancel an unfinished job.
    Cancel { id: i64 },
    /// Follow a job until it ends: each node's state and progress, and
    /// its history as it is written. Exits 1 if the job failed or was
    /// cancelled.
    Watch {
        id: i64,
        /// Seconds between looks.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=600))]
        every: u64,
    },
}

/// `shoal image create --from-node NODE NAME`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The new image's name.
    #[arg(value_parser = name)]
    pub name: Name,
    /// The node whose disk to capture.
    #[arg(long, value_parser = name)]
    pub from_node: Name,
    /// The new image's version (default: the server's).
    #[arg(long)]
    pub version: Option<String>,
    /// The image this one derives from.
    #[arg(long)]
    pub base: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Follow the job until it ends.
    #[arg(long)]
    pub watch: bool,
}

/// `shoal image snapshot NODE IMAGE`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The node whose disk to capture.
    #[arg(value_parser = name)]
    pub node: Name,
    /// The image to update: id, NAME or NAME:VERSION (owned by the
    /// project).
    pub image: String,
    /// Follow the job until it ends.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("whom").required(true).args(["project", "public"])))]
pub struct ShareArgs {
    /// Image id, NAME or NAME:VERSION.
    pub image: String,
    /// The project to share with (read-only).
    #[arg(long, value_parser = name)]
    pub project: Option<Name>,
    /// Every project (read-only).
    #[arg(long)]
    pub public: bool,
}
