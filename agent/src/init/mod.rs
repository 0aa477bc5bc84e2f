//! The agent as PID 1 in the initramfs.
//!
//! The kernel runs `/init` (the static `shoal-agent`) with the console as
//! stdin, stdout and stderr. In order, [`run`]:
//!
//! 1. installs a panic hook that logs and reboots (a PID 1 that exits or
//!    unwinds out of `main` panics the kernel);
//! 2. mounts proc, sys, devtmpfs, and tmpfs on /run and /tmp ([`system`]);
//! 3. reads the kernel command line ([`cmdline`]) and logs to the console
//!    with the time since boot ([`console`]);
//! 4. loads the initramfs's kernel modules in the builder's order;
//! 5. waits for NICs, brings up the one named by `BOOTIF=` (or each in
//!    turn) and gets an address with its own DHCP client ([`dhcp`],
//!    [`link`]), configured over rtnetlink ([`netlink`]);
//! 6. runs the tasks a [`task::TaskSource`] gives (today: the one on the
//!    command line) and reports their outcome;
//! 7. reboots; or powers off (`shoal.after=poweroff`); or, with
//!    `shoal.debug=1` and busybox in the initramfs, runs a shell first. A
//!    failure is logged, then the node reboots after a pause.
//!
//! It never returns, and refuses to run unless it is PID 1.

pub mod cmdline;
pub mod console;
pub mod dhcp;
pub mod link;
pub mod netlink;
pub mod system;
pub mod task;

use std::time::Duration;

use cmdline::{After, BootParams};
use task::{CmdlineTasks, Context, Outcome, TaskSource};

/// How long drivers get to show a NIC.
const NIC_WAIT: Duration = Duration::from_secs(15);
/// How long DHCP gets, over all NICs.
const DHCP_DEADLINE: Duration = Duration::from_secs(60);
/// How long to wait for the kernel's random number generator before
/// going on (and blocking in the first call that needs it).
const RNG_WAIT: Duration = Duration::from_secs(120);
/// How long a failure stays on the console before the reboot.
const FAILURE_PAUSE: Duration = Duration::from_secs(10);

/// Runs the node. Never returns.
pub fn run() -> ! {
    if std::process::id() != 1 {
        eprintln!("shoal-agent init: runs only as PID 1, in the initramfs");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        let t = console::uptime();
        eprintln!("[{:5}.{:06}] shoal-agent: PANIC: {info}", t.as_secs(), t.subsec_micros());
        eprintln!("shoal-agent: rebooting in {} s", FAILURE_PAUSE.as_secs());
        nix::unistd::sync();
        std::thread::sleep(FAILURE_PAUSE);
        let e = system::power(After::Reboot);
        eprintln!("shoal-agent: reboot: {e}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }));
    let failed_mounts = system::mount_filesystems();
    console::attach();
    let parsed = std::fs::read_to_string("/proc/cmdline").unwrap_or_default().parse::<BootParams>();
    console::init_logging(parsed.as_ref().is_ok_and(|p| p.debug));
    tracing::info!("shoal-agent {} running as PID 1", env!("CARGO_PKG_VERSION"));
    for (target, e) in failed_mounts {
        tracing::warn!("mounting {target}: {e}");
    }
    match parsed {
        Ok(p) => {
            let ok = boot(&p);
            finish(&p, ok)
        }
        Err(e) => {
            tracing::error!("kernel command line: {e}");
            finish(&BootParams::default(), false)
        }
    }
}

/// Everything between the command line and the end. `false` on failure
/// (already logged).
fn boot(p: &BootParams) -> bool {
    for k in &p.unknown {
        tracing::warn!("unknown parameter {k} ignored");
    }
    let m = system::load_modules();
    tracing::info!(loaded = m.loaded, already = m.already, failed = m.failed.len(), "kernel modules");
    for (name, e) in &m.failed {
        tracing::debug!("module {name}: {e}");
    }
    // DHCP (dhcproto draws its default transaction id) and the session
    // (receiver id) need random numbers; without RDRAND or virtio-rng the
    // kernel may take minutes to have them, so say why we wait.
    if !system::rng_ready() {
        tracing::warn!("waiting for the kernel's random number generator (no RDRAND or virtio-rng?)");
        if system::wait_for_rng(RNG_WAIT) {
            tracing::info!("random number generator ready");
        } else {
            tracing::warn!("random number generator still not ready after {} s: going on", RNG_WAIT.as_secs());
        }
    }
    let mut tasks = CmdlineTasks::new(p.task.clone());
    let Some(mut task) = tasks.next_task() else {
        tracing::warn!("nothing to do: no shoal.task= on the kernel command line");
        return true;
    };
    let Some(server) = p.server.as_deref() else {
        // cmdline refuses a task without a server; kept as a guard.
        tracing::error!("no shoal.server= on the kernel command line");
        return false;
    };
    let lease = match link::wait_for_nics(p.bootif, NIC_WAIT).and_then(|nics| link::bring_up(&nics, DHCP_DEADLINE)) {
        Ok((nic, lease)) => {
            tracing::info!(
                "{}: {}/{} router {} (DHCP server {}, lease {} s)",
                nic.name,
                lease.addr,
                lease.prefix_len(),
                lease.router.map_or("none".to_string(), |r| r.to_string()),
                lease.server,
                lease.lease_secs.map_or("?".to_string(), |s| s.to_string()),
            );
            lease
        }
        Err(e) => {
            tracing::error!("network: {}", task::chain(&e));
            return false;
        }
    };
    tracing::info!("disks: {}", system::disks().join(", "));
    if let Some(node) = &p.node {
        tracing::info!("node {} (token {})", node.as_str(), if p.token.is_some() { "given" } else { "absent" });
    }
    let ctx = Context { server, addr: lease.addr };
    let mut ok = true;
    loop {
        let outcome = task::run(&task, &ctx);
        tasks.report(&task, &outcome);
        if let Outcome::Failed(_) = outcome {
            ok = false;
            break;
        }
        match tasks.next_task() {
            Some(t) => task = t,
            None => break,
        }
    }
    if let Some(kib) = system::peak_rss_kib() {
        tracing::info!("peak memory (VmHWM): {kib} KiB");
    }
    ok
}

/// The shell, the reboot or the power-off. Never returns.
fn finish(p: &BootParams, ok: bool) -> ! {
    let mut after = p.after;
    if p.debug {
        tracing::info!("shoal.debug: starting a shell (exit it to go on)");
        if !system::shell() {
            tracing::warn!("shoal.debug: this initramfs has no busybox, so no shell");
        }
    } else if !ok {
        // A reboot brings the node back to its boot decision, which may retry.
        after = After::Reboot;
        tracing::error!("the task failed: rebooting in {} s", FAILURE_PAUSE.as_secs());
        std::thread::sleep(FAILURE_PAUSE);
    }
    tracing::info!("{}", if after == After::Poweroff { "powering off" } else { "rebooting" });
    let e = system::power(after);
    tracing::error!("{after:?}: {e}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
