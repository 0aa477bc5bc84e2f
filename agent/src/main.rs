//! `shoal-agent`: the node side of Shoal. `load` loads an image from a
//! Shoal server onto a disk, partition or file; `capture` captures a disk
//! or partition to a server (scrubbing it first); `wipe` discards or zeroes
//! a disk. All three also run outside the initramfs. As PID 1 (the initramfs's /init, or `shoal-agent init`) it
//! boots the node and runs its task: see `shoal_agent::init`.
//!
//! Exit status: 0 success, 1 error, 2 bad arguments.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use shoal_agent::capture::Progress;
use shoal_agent::deploy::FreePolicy;
use shoal_agent::load::{load, LoadConfig};
use shoal_agent::scrub::{Category, ScrubConfig};
use shoal_agent::upload::{capture_to_server, UploadConfig};
use shoal_agent::wipe::{wipe, WipeMode};

/// The Shoal node agent.
#[derive(Parser, Debug)]
#[command(name = "shoal-agent", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load an image from a Shoal server's multicast session.
    ///
    /// Fetches the signed manifest over HTTP, skips windows DEST already
    /// holds, receives the rest from the image's multicast session
    /// (falling back to HTTP when no multicast arrives), verifies every
    /// chunk before writing it, and prints a report.
    Load(LoadArgs),

    /// Capture a disk, a partition or an image file to a Shoal server.
    ///
    /// SCRUBS THE SOURCE FIRST, WRITING TO IT: each ext2/3/4 filesystem
    /// being captured is mounted read-write on a private directory, and its
    /// SSH host keys, shell histories, logs (truncated), machine-id,
    /// cloud-init instance state and password hashes (locked with `!`) are
    /// removed; a list of what was scrubbed is printed. Use --no-scrub to
    /// capture the source untouched, --scrub-keep to spare a category.
    /// Only chunks the server lacks are uploaded; the server checks and
    /// signs the manifest and gives the image its id. The server's upload
    /// routes are unauthenticated until the control plane adds tokens.
    Capture(CaptureArgs),

    /// Wipe a whole disk (or file): discard every block, or zero it.
    ///
    /// DESTROYS EVERYTHING ON DEST, partition table included, without
    /// asking. `discard` is fast but what reads back afterwards is up to
    /// the device (and a device without discard is refused); `zero` makes
    /// every byte read back as zero.
    Wipe(WipeArgs),

    /// Run a node's task as the initramfs agent would, outside it.
    ///
    /// Acts on a kernel command line as a boot script gives it: the task
    /// it names (`shoal.task=`), or else, with `shoal.token=`, the node's
    /// job from the server, sending heartbeats and a final report with the
    /// log. No mounts, modules or DHCP: the network must already be up.
    /// For simulated nodes, and to try a boot script's line by hand.
    Run(RunArgs),

    /// Boot the node as PID 1 in the initramfs: mount, load modules, DHCP,
    /// run the task from the kernel command line, then reboot. Refuses to
    /// run as any other PID. (PID 1 runs this whatever its arguments.)
    Init,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Free {
    /// Leave free space as it is (fastest).
    Leave,
    /// Make free space read as zeros.
    Zero,
    /// Discard (TRIM) free space.
    Discard,
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// The server's base URL, e.g. http://10.0.0.1:4870.
    #[arg(long)]
    server: String,
    /// Image id or name.
    #[arg(long)]
    image: String,
    /// Disk, partition or file to write; /dev/null decompresses and
    /// discards every chunk (for measurements).
    dest: PathBuf,
    /// Write into this partition of DEST (see `shoal image deploy`).
    #[arg(long, short)]
    partition: Option<u32>,
    /// Check each chunk's hash and write nothing (no decompression either):
    /// for protocol measurements. DEST must exist.
    #[arg(long)]
    verify_only: bool,
    /// What to do with the free space of filesystems in the image.
    #[arg(long, value_enum, default_value = "leave")]
    free: Free,
    /// The server's signing key (hex). Without it the key the server
    /// reports is trusted, with a warning.
    #[arg(long)]
    key: Option<shoal_proto::KeyId>,
    /// Seconds without multicast data before rejoining, then HTTP.
    #[arg(long, default_value_t = 5)]
    fallback_secs: u64,
    /// Address of the interface to receive multicast on.
    #[arg(long, default_value = "0.0.0.0")]
    iface: Ipv4Addr,
    /// Decompression and write threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The kernel command line to act on (BOOTIF=, shoal.server=, ...).
    #[arg(long)]
    cmdline: String,
    /// Work on this disk or file instead of the line's shoal.target.
    #[arg(long)]
    target: Option<PathBuf>,
    /// The server's signing key (hex), which the initramfs would carry.
    #[arg(long)]
    key: shoal_proto::KeyId,
}

#[derive(clap::Args, Debug)]
struct CaptureArgs {
    /// The server's base URL, e.g. http://10.0.0.1:4870.
    #[arg(long)]
    server: String,
    /// The image's name.
    #[arg(long)]
    name: String,
    /// Version label.
    #[arg(long, default_value = "1")]
    version: String,
    /// Free text describing the image.
    #[arg(long, default_value = "")]
    description: String,
    /// Disk, partition or image file to capture.
    source: PathBuf,
    /// Capture only this partition of SOURCE (repeat for several).
    #[arg(long, short)]
    partition: Vec<u32>,
    /// Do not scrub: capture SOURCE exactly as it is, writing nothing to it.
    #[arg(long)]
    no_scrub: bool,
    /// Keep this category when scrubbing (repeatable, or comma-separated):
    /// ssh-host-keys, shell-history, logs, machine-id, cloud-init, passwords.
    #[arg(long, value_name = "CATEGORY", value_delimiter = ',', conflicts_with = "no_scrub")]
    scrub_keep: Vec<Category>,
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = shoal_proto::chunk::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Compression threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Discard (TRIM) every block: fast; contents afterwards up to the device.
    Discard,
    /// Zero every block (BLKZEROOUT).
    Zero,
}

#[derive(clap::Args, Debug)]
struct WipeArgs {
    /// How to wipe.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Disk or file to wipe, whole.
    dest: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // The kernel runs /init with no arguments (or whatever it did not
    // understand on its command line): PID 1 does not parse them.
    if std::process::id() == 1 {
        shoal_agent::init::run();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Init => shoal_agent::init::run(),
        // As PID 1 logs: stamped lines, whose tail goes into the report.
        Command::Run(a) => {
            shoal_agent::init::console::init_logging(false);
            return run_cmd(a);
        }
        _ => {}
    }
    // Colour only on a terminal: logs piped to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(ansi).with_target(false).init();
    let a = match cli.command {
        Command::Load(a) => a,
        Command::Capture(a) => return capture_cmd(a),
        Command::Wipe(a) => return wipe_cmd(a),
        Command::Run(_) => unreachable!("handled above"),
        Command::Init => shoal_agent::init::run(),
    };
    let cfg = LoadConfig {
        server: a.server,
        image: a.image,
        dest: a.dest,
        partition: a.partition,
        key: a.key,
        verify_only: a.verify_only,
        free: match a.free {
            Free::Leave => FreePolicy::Leave,
            Free::Zero => FreePolicy::Zero,
            Free::Discard => FreePolicy::Discard,
        },
        fallback_after: Duration::from_secs(a.fallback_secs),
        iface: a.iface,
        workers: a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        progress: None,
    };
    match load(&cfg) {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "loaded {} chunks ({} already present, {} by multicast, {} over HTTP): {} bytes written, {} received, {} duplicate blocks, {} requests, {:.2} s",
                    r.chunks, r.chunks_present, r.chunks_multicast, r.chunks_http, r.bytes_written, r.bytes_received,
                    r.duplicate_blocks, r.requests_sent, r.elapsed.as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("shoal-agent: {}", shoal_agent::init::task::chain(e));
    ExitCode::from(1)
}

fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn capture_cmd(a: CaptureArgs) -> ExitCode {
    let cfg = UploadConfig {
        server: a.server,
        source: a.source,
        partitions: a.partition,
        name: a.name,
        version: a.version,
        description: a.description,
        author: std::env::var("USER").unwrap_or_default(),
        scrub: (!a.no_scrub).then_some(ScrubConfig { keep: a.scrub_keep }),
        level: a.level,
        workers: threads(a.threads),
    };
    match capture_to_server(&cfg, &Progress::default()) {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", shoal_agent::init::task::describe_upload(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn wipe_cmd(a: WipeArgs) -> ExitCode {
    let mode = match a.mode {
        Mode::Discard => WipeMode::Discard,
        Mode::Zero => WipeMode::Zero,
    };
    match wipe(&a.dest, mode, &Progress::default()) {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "wiped {} ({} bytes, {:?}) in {:.2} s",
                a.dest.display(),
                r.bytes,
                r.mode,
                r.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn run_cmd(a: RunArgs) -> ExitCode {
    use shoal_agent::init::cmdline::BootParams;
    let p: BootParams = match a.cmdline.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shoal-agent run: --cmdline: {e}");
            return ExitCode::from(2);
        }
    };
    let (Some(server), Some(mac)) = (p.server.clone(), p.bootif) else {
        eprintln!("shoal-agent run: --cmdline needs shoal.server= and BOOTIF=");
        return ExitCode::from(2);
    };
    // The address the kernel would send to the server from is the one to
    // receive multicast on.
    let addr = match local_addr_towards(&server) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shoal-agent run: finding the route to {server}: {e}");
            return ExitCode::from(1);
        }
    };
    if shoal_agent::init::run_tasks(&p, &server, addr, Some(a.key), mac, a.target) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// This host's address on the route to an `http://host:port` URL.
fn local_addr_towards(url: &str) -> std::io::Result<Ipv4Addr> {
    use std::net::ToSocketAddrs;
    let hostport = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
    let to =
        hostport.to_socket_addrs()?.find(|a| a.is_ipv4()).ok_or_else(|| std::io::Error::other("no IPv4 address"))?;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(to)?;
    match sock.local_addr()?.ip() {
        std::net::IpAddr::V4(v4) => Ok(v4),
        std::net::IpAddr::V6(_) => Err(std::io::Error::other("not IPv4")),
    }
}
