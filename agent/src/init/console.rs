//! Logging to the console with the time since boot, in the kernel's
//! `[   1.234567]` form, so the agent's lines line up with dmesg's and a
//! serial log shows how long each step took from kernel start.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::sync::Mutex;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Time since the kernel started (CLOCK_BOOTTIME).
pub fn uptime() -> Duration {
    clock_gettime(ClockId::CLOCK_BOOTTIME).map(Duration::from).unwrap_or_default()
}

struct Uptime;

impl FormatTime for Uptime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let t = uptime();
        write!(w, "[{:5}.{:06}] shoal-agent:", t.as_secs(), t.subsec_micros())
    }
}

/// Points stdin, stdout and stderr at /dev/console (the kernel does so
/// before running init only if the initramfs has /dev/console; after
/// devtmpfs is mounted it is always there).
pub fn attach() {
    let Ok(console) = OpenOptions::new().read(true).write(true).open("/dev/console") else { return };
    let _ = nix::unistd::dup2_stdin(&console);
    let _ = nix::unistd::dup2_stdout(&console);
    let _ = nix::unistd::dup2_stderr(&console);
}

/// The most of the log [`tail`] keeps for the report.
pub const TAIL_BYTES: usize = 256 << 10;

static TAIL: Mutex<VecDeque<u8>> = Mutex::new(VecDeque::new());

/// The last [`TAIL_BYTES`] of what was logged, for the server's report.
pub fn tail() -> String {
    let t = TAIL.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b) = t.as_slices();
    let mut v = Vec::with_capacity(t.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    String::from_utf8_lossy(&v).into_owned()
}

/// Writes a log line to stderr and keeps it in the tail.
struct Tee;

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        {
            let mut t = TAIL.lock().unwrap_or_else(|e| e.into_inner());
            t.extend(buf.iter().copied());
            let over = t.len().saturating_sub(TAIL_BYTES);
            t.drain(..over);
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs to stderr (the console) with uptime stamps, at `debug` when
/// asked on the command line, keeping the [`tail`] for the report.
pub fn init_logging(debug: bool) {
    let level = if debug { tracing::Level::DEBUG } else { tracing::Level::INFO };
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Tee)
        .with_timer(Uptime)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level)
        .try_init();
}
