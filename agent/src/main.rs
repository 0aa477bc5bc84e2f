//! `shoal-agent`: the node side of Shoal. `load` loads an image from a
//! Shoal server onto a disk, partition or file, and also runs outside the
//! initramfs. As PID 1 (the initramfs's /init, or `shoal-agent init`) it
//! boots the node and runs its task: see `shoal_agent::init`.
//!
//! Exit status: 0 success, 1 error, 2 bad arguments.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use shoal_agent::deploy::FreePolicy;
use shoal_agent::load::{load, LoadConfig};

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

fn main() -> ExitCode {
    // The kernel runs /init with no arguments (or whatever it did not
    // understand on its command line): PID 1 does not parse them.
    if std::process::id() == 1 {
        shoal_agent::init::run();
    }
    let cli = Cli::parse();
    let a = match cli.command {
        Command::Load(a) => a,
        Command::Init => shoal_agent::init::run(),
    };
    // Colour only on a terminal: logs piped to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(ansi).with_target(false).init();
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
        Err(e) => {
            let mut msg = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                msg += &format!(": {c}");
                cur = c.source();
            }
            eprintln!("shoal-agent: {msg}");
            ExitCode::from(1)
        }
    }
}
