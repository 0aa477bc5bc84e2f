//! The three scripts a node can get, and their text.
//!
//! - [`Script::Agent`]: download the agent kernel and initramfs and boot
//!   them with a command line naming the NIC, the server, the node, the
//!   task, its disk and a one-time token (see [`super::cmdline`]).
//! - [`Script::Local`]: boot the first local disk. On BIOS,
//!   `sanboot --no-describe --drive 0x80` (the disk's boot sector, without
//!   publishing an iBFT/ACPI table); on UEFI, `exit 1`, which hands control
//!   back to the firmware's boot manager, and a failure status makes it
//!   try the next boot option instead of stopping at its menu. If sanboot
//!   fails on BIOS, `exit 1` too.
//! - [`Script::Menu`]: an iPXE menu of images this node may load, the
//!   local disk and "ask the server again", with a timeout and a default.
//!   Picking an image chains the URL the server gave for it (an agent
//!   script), with `--replace` so that a chained script that exits ends
//!   the boot attempt instead of coming back here.
//!
//! Each download is in a loop: `shoal-tries` counts failures; after
//! [`Retry::attempts`] of them the node says so and reboots.

use std::fmt::Write;

use super::{cmdline, ScriptError, Url, Word};
use crate::dhcp::Mac;

/// The longest kernel command line x86 Linux takes.
pub const MAX_CMDLINE: usize = 2048;

/// How often and how patiently downloads are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Failed attempts before giving up (then the node reboots).
    pub attempts: u32,
    /// Seconds between attempts.
    pub delay_secs: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 5, delay_secs: 5 }
    }
}

/// What the agent is booted to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAction {
    /// Write this image to the disk.
    Reload(Word),
    /// Capture the disk into an image of this name.
    Capture(Word),
    /// Erase the disk.
    Wipe,
    /// Whatever the node's job is: the agent asks the server for its task
    /// with the token (no `shoal.task` on the command line).
    Job,
}

impl AgentAction {
    fn describe(&self) -> String {
        match self {
            AgentAction::Reload(image) => format!("reload {image}"),
            AgentAction::Capture(name) => format!("capture as {name}"),
            AgentAction::Wipe => "wipe".to_owned(),
            AgentAction::Job => "run its job".to_owned(),
        }
    }
}

/// Where the agent runs and what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBoot<'a> {
    pub node: &'a Word,
    pub mac: Mac,
    /// The server's base URL.
    pub server: &'a Url,
    pub token: &'a Word,
    /// The disk the task works on.
    pub target: &'a Word,
    pub kernel: Url,
    pub initrd: Url,
    /// Kernel arguments before Shoal's own (console settings and the like).
    pub args: &'a [Word],
}

/// The agent boot of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    node: Word,
    mac: Mac,
    action: AgentAction,
    kernel: Url,
    initrd: Url,
    cmdline: String,
}

impl Agent {
    /// The agent doing `action`: `b.kernel` and `b.initrd` are
    /// downloaded, and the kernel gets `b.args` followed by Shoal's
    /// parameters (see [`cmdline`]).
    pub fn new(action: AgentAction, b: AgentBoot<'_>) -> Result<Agent, ScriptError> {
        let mut line = String::from("initrd=shoal-initrd");
        for a in b.args {
            let _ = write!(line, " {a}");
        }
        let (task, image) = match &action {
            AgentAction::Reload(image) => (Some("load"), Some(image)),
            AgentAction::Capture(name) => (Some("capture"), Some(name)),
            AgentAction::Wipe => (Some("wipe"), None),
            AgentAction::Job => (None, None),
        };
        let bootif = b.mac.to_string().replace(':', "-");
        let _ = write!(line, " {}=01-{bootif} {}={}", cmdline::BOOTIF, cmdline::SERVER, b.server);
        let _ = write!(line, " {}={}", cmdline::NODE, b.node);
        if let Some(task) = task {
            let _ = write!(line, " {}={task}", cmdline::TASK);
        }
        if let Some(image) = image {
            let _ = write!(line, " {}={image}", cmdline::IMAGE);
        }
        let _ = write!(line, " {}={} {}={}", cmdline::TARGET, b.target, cmdline::TOKEN, b.token);
        if line.len() >= MAX_CMDLINE {
            return Err(ScriptError::CommandLine(line.len()));
        }
        Ok(Agent { node: b.node.clone(), mac: b.mac, action, kernel: b.kernel, initrd: b.initrd, cmdline: line })
    }

    /// The kernel command line, as the script passes it.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
}

/// One image in a menu, and the script that loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuEntry {
    pub image: Word,
    pub url: Url,
}

/// What a menu picks when nobody chooses in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuDefault {
    Local,
    /// The entry at this index; out of range means [`MenuDefault::Local`].
    Entry(usize),
}

/// A menu for manual reimaging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    /// The node's name; `None` for a machine the catalog does not know.
    pub node: Option<Word>,
    pub mac: Mac,
    pub entries: Vec<MenuEntry>,
    pub default: MenuDefault,
    pub timeout_secs: u32,
    /// The node's own script, for "ask the server again".
    pub again: Url,
}

/// A node's boot script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    Agent(Agent),
    Local { node: Option<Word>, mac: Mac },
    Menu(Menu),
}

impl Script {
    /// The script's text.
    pub fn render(&self, retry: Retry) -> String {
        let mut s = String::from("#!ipxe\n");
        match self {
            Script::Agent(a) => agent(&mut s, a, retry),
            Script::Local { node, mac } => {
                let _ = writeln!(s, "# Shoal: {}: boot from the local disk", who(node.as_ref(), *mac));
                let _ = writeln!(s, "echo Shoal: {}: booting from the local disk", who(node.as_ref(), *mac));
                local(&mut s);
            }
            Script::Menu(m) => menu(&mut s, m, retry),
        }
        s
    }
}

fn who(node: Option<&Word>, mac: Mac) -> String {
    match node {
        Some(n) => format!("node {n} ({mac})"),
        None => format!("unregistered machine {mac}"),
    }
}

fn agent(s: &mut String, a: &Agent, retry: Retry) {
    let what = a.action.describe();
    let who = who(Some(&a.node), a.mac);
    let _ = writeln!(s, "# Shoal: {who}: {what}");
    let _ = writeln!(s, "# The token on the kernel command line is good for one agent run.");
    let _ = writeln!(s, "echo Shoal: {who}: {what}");
    let _ = writeln!(s, "clear shoal-tries");
    let _ = writeln!(s, ":fetch");
    let _ = writeln!(s, "kernel --name shoal-kernel {} {} || goto retry", a.kernel, a.cmdline);
    let _ = writeln!(s, "initrd --name shoal-initrd {} || goto retry", a.initrd);
    let _ = writeln!(s, "boot || goto retry");
    retry_block(s, "retry", "fetch", &["shoal-kernel", "shoal-initrd"], retry);
}

fn local(s: &mut String) {
    let _ = writeln!(s, "iseq ${{platform}} efi && exit 1 ||");
    let _ = writeln!(s, "sanboot --no-describe --drive 0x80 ||");
    let _ = writeln!(s, "exit 1");
}

fn menu(s: &mut String, m: &Menu, retry: Retry) {
    let who = who(m.node.as_ref(), m.mac);
    let _ = writeln!(s, "# Shoal: {who}: menu");
    let _ = writeln!(s, ":menu");
    let _ = writeln!(s, "menu Shoal: {who}");
    if m.entries.is_empty() {
        let _ = writeln!(s, "item --gap No images may be loaded onto this machine.");
    } else {
        let _ = writeln!(s, "item --gap Load an image (erases the disk):");
    }
    for (i, e) in m.entries.iter().enumerate() {
        let _ = writeln!(s, "item image{i} {}", e.image);
    }
    let _ = writeln!(s, "item --gap Or:");
    let _ = writeln!(s, "item local Boot from the local disk");
    let _ = writeln!(s, "item again Ask the server again");
    let default = match m.default {
        MenuDefault::Entry(i) if i < m.entries.len() => format!("image{i}"),
        _ => "local".to_owned(),
    };
    let timeout_ms = u64::from(m.timeout_secs) * 1000;
    let _ = writeln!(s, "choose --timeout {timeout_ms} --default {default} shoal-choice || goto local");
    let _ = writeln!(s, "goto ${{shoal-choice}}");
    for (i, e) in m.entries.iter().enumerate() {
        let _ = writeln!(s, ":image{i}");
        let _ = writeln!(s, "echo Shoal: loading {}", e.image);
        let _ = writeln!(s, "set shoal-url {}", e.url);
        let _ = writeln!(s, "goto chain");
    }
    let _ = writeln!(s, ":again");
    let _ = writeln!(s, "set shoal-url {}", m.again);
    let _ = writeln!(s, "goto chain");
    let _ = writeln!(s, ":local");
    let _ = writeln!(s, "echo Shoal: booting from the local disk");
    local(s);
    let _ = writeln!(s, ":chain");
    let _ = writeln!(s, "clear shoal-tries");
    let _ = writeln!(s, ":chain-try");
    let _ = writeln!(s, "chain --replace --autofree ${{shoal-url}} || goto chain-retry");
    retry_block(s, "chain-retry", "chain-try", &[], retry);
}

/// `label`: count a failure, drop what the attempt downloaded (`images`),
/// then wait and go back to `again`, or give up and reboot.
fn retry_block(s: &mut String, label: &str, again: &str, images: &[&str], retry: Retry) {
    let attempts = retry.attempts.max(1);
    let delay = retry.delay_secs;
    let _ = writeln!(s, ":{label}");
    for image in images {
        let _ = writeln!(s, "imgfree {image} ||");
    }
    let _ = writeln!(s, "inc shoal-tries");
    let _ = writeln!(s, "iseq ${{shoal-tries}} {attempts} && goto {label}-give-up ||");
    let _ = writeln!(s, "echo Shoal: download failed, attempt ${{shoal-tries}} of {attempts}, retrying in {delay} s");
    let _ = writeln!(s, "sleep {delay}");
    let _ = writeln!(s, "goto {again}");
    let _ = writeln!(s, ":{label}-give-up");
    let _ = writeln!(s, "echo Shoal: giving up after {attempts} failed downloads, rebooting in 30 s");
    let _ = writeln!(s, "sleep 30");
    let _ = writeln!(s, "reboot");
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
