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
//! 6. runs the tasks a [`task::TaskSource`] gives and reports their
//!    outcome: the one on the command line (`shoal.task=`), or else the
//!    node's job from the server, asked with `shoal.token=`
//!    ([`server_tasks`], which also sends heartbeats);
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
pub mod server_tasks;
pub mod system;
pub mod task;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use cmdline::{After, BootParams, Mac};
use shoal_proto::KeyId;
use task::{CmdlineTasks, Context, Outcome, TaskSource};

use crate::capture::Progress;

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
    if p.task.is_none() && p.token.is_none() {
        tracing::warn!("nothing to do: neither shoal.task= nor shoal.token= on the kernel command line");
        return true;
    }
    let Some(server) = p.server.as_deref() else {
        tracing::error!("no shoal.server= on the kernel command line");
        return false;
    };
    let lease = match link::wait_for_nics(p.bootif, NIC_WAIT).and_then(|nics| link::bring_up(&nics, DHCP_DEADLINE)) {
        Ok((nic, lease)) => {
            let mac = nic.mac;
            tracing::info!(
                "{}: {}/{} router {} (DHCP server {}, lease {} s)",
                nic.name,
                lease.addr,
                lease.prefix_len(),
                lease.router.map_or("none".to_string(), |r| r.to_string()),
                lease.server,
                lease.lease_secs.map_or("?".to_string(), |s| s.to_string()),
            );
            (lease, mac)
        }
        Err(e) => {
            tracing::error!("network: {}", task::chain(&e));
            return false;
        }
    };
    let (lease, mac) = lease;
    tracing::info!("disks: {}", system::disks().join(", "));
    let ok = run_tasks(p, server, lease.addr, None, p.bootif.unwrap_or(mac), None);
    if let Some(kib) = system::peak_rss_kib() {
        tracing::info!("peak memory (VmHWM): {kib} KiB");
    }
    ok
}

/// Runs the command line's task, or else the node's job from the server,
/// once the network is up; `false` if one failed (already logged and
/// reported). `mac` is the node's boot NIC, `target` overrides the disk
/// (`shoal-agent run --target`), `key` the initramfs's server key.
/// PID 1 and `shoal-agent run` share it.
pub fn run_tasks(
    p: &BootParams,
    server: &str,
    addr: Ipv4Addr,
    key: Option<KeyId>,
    mac: Mac,
    target: Option<PathBuf>,
) -> bool {
    if let Some(node) = &p.node {
        tracing::info!("node {} (token {})", node.as_str(), if p.token.is_some() { "given" } else { "absent" });
    }
    let progress = std::sync::Arc::new(Progress::default());
    let retarget = |t: task::Task| match (&target, t) {
        (Some(d), task::Task::Load { image, partition, .. }) => {
            task::Task::Load { image, target: d.clone(), partition }
        }
        (Some(d), task::Task::Capture { partition, name, version, scrub, .. }) => {
            task::Task::Capture { target: d.clone(), partition, name, version, scrub }
        }
        (Some(d), task::Task::Wipe { mode, .. }) => task::Task::Wipe { target: d.clone(), mode },
        (None, t) => t,
    };
    let mut tasks: Box<dyn TaskSource> = match (&p.task, &p.token) {
        (Some(t), _) => Box::new(CmdlineTasks::new(Some(t.clone()))),
        (None, Some(token)) => {
            let Some(disk) = target.clone().or_else(|| p.target.clone()) else {
                tracing::error!("no shoal.target= on the kernel command line: which disk is the job's?");
                return false;
            };
            Box::new(server_tasks::ServerTasks::new(server, mac, token.clone(), disk, std::sync::Arc::clone(&progress)))
        }
        (None, None) => {
            tracing::warn!("nothing to do: neither shoal.task= nor shoal.token=");
            return true;
        }
    };
    let ctx = Context { server, addr, key, progress: &progress };
    let mut ok = true;
    while let Some(task) = tasks.next_task().map(retarget) {
        let outcome = task::run(&task, &ctx);
        tasks.report(&task, &outcome);
        if let Outcome::Failed(_) = outcome {
            ok = false;
            break;
        }
    }
    if let Some(why) = tasks.failure() {
        tracing::error!("no task: {why}");
        ok = false;
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
