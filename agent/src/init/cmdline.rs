//! The kernel command line: what the node is to do, and where its server
//! is. Parsed once, before any network or disk I/O, into [`BootParams`].
//!
//! ```text
//! BOOTIF=01-52-54-00-12-34-56     the NIC to use (pxelinux form); else each in turn
//! shoal.server=http://10.0.0.1:4870
//! shoal.node=pc17 shoal.token=TOKEN
//! shoal.task=load shoal.image=ID shoal.target=/dev/vda [shoal.partition=N]
//! shoal.task=capture shoal.name=NAME shoal.target=/dev/vda [shoal.partition=N]
//!     [shoal.scrub=0] [shoal.scrub-keep=CATEGORY,...]   scrubbing is on by default
//! shoal.task=wipe shoal.wipe=discard|zero shoal.target=/dev/vda
//! (no shoal.task)                 ask the server for the node's task with
//!                                 shoal.token; shoal.target is its disk
//! shoal.after=reboot|poweroff     what to do when the task is done (default reboot)
//! shoal.debug=1                   drop to the busybox shell instead
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::task::Task;
use crate::scrub::{Category, ScrubConfig};
use crate::wipe::WipeMode;

pub use shoal_proto::Mac;

/// The node's name in the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The one-time token the control plane issued for this boot. Never
/// printed: `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(String);

impl AgentToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentToken({} bytes)", self.0.len())
    }
}

/// What to do once the task is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum After {
    #[default]
    Reboot,
    Poweroff,
}

/// Everything the agent takes from the kernel command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootParams {
    pub bootif: Option<Mac>,
    /// The server's base URL.
    pub server: Option<String>,
    pub node: Option<NodeId>,
    pub token: Option<AgentToken>,
    pub debug: bool,
    pub after: After,
    /// The task the command line names, if any.
    pub task: Option<Task>,
    /// `shoal.target=`: the task's disk, and without `shoal.task` the
    /// disk for the task the server gives.
    pub target: Option<PathBuf>,
    /// `shoal.*` keys this agent does not know (logged, not fatal).
    pub unknown: Vec<String>,
}

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmdlineError {
    /// a value that does not parse
    #[error("{key}={value}: {why}")]
    Invalid { key: &'static str, value: String, why: &'static str },
    /// a task without a parameter it needs
    #[error("shoal.task={task} needs {missing}")]
    Missing { task: String, missing: &'static str },
}

/// Splits the command line into words as the kernel does: on whitespace,
/// except inside double quotes, which are dropped.
fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn invalid(key: &'static str, value: &str, why: &'static str) -> CmdlineError {
    CmdlineError::Invalid { key, value: value.to_string(), why }
}

impl FromStr for BootParams {
    type Err = CmdlineError;

    fn from_str(cmdline: &str) -> Result<BootParams, CmdlineError> {
        let mut p = BootParams::default();
        let (mut task, mut image, mut target, mut partition) = (None, None, None, None);
        let (mut name, mut wipe, mut scrub, mut keep) = (None, None, true, Vec::new());
        for w in words(cmdline) {
            let (key, value) = w.split_once('=').unwrap_or((&w, ""));
            match key {
                "BOOTIF" => {
                    // pxelinux: the ARP hardware type (01, Ethernet), then the MAC.
                    let mac = value.strip_prefix("01-").and_then(Mac::parse);
                    p.bootif = Some(mac.ok_or_else(|| invalid("BOOTIF", value, "not 01-aa-bb-cc-dd-ee-ff"))?);
                }
                "shoal.server" => {
                    // The agent is built without TLS (ureq's default features
                    // are off): manifests are signed, chunks hashed.
                    if !value.starts_with("http://") {
                        return Err(invalid("shoal.server", value, "not an http:// URL"));
                    }
                    p.server = Some(value.trim_end_matches('/').to_string());
                }
                "shoal.node" => {
                    let ok = (1..=64).contains(&value.len())
                        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                    if !ok {
                        return Err(invalid("shoal.node", value, "not 1-64 of [A-Za-z0-9._-]"));
                    }
                    p.node = Some(NodeId(value.to_string()));
                }
                "shoal.token" => {
                    if !(1..=256).contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(invalid("shoal.token", "(redacted)", "not 1-256 printable characters"));
                    }
                    p.token = Some(AgentToken(value.to_string()));
                }
                "shoal.debug" => p.debug = matches!(value, "" | "1" | "yes" | "true"),
                "shoal.after" => {
                    p.after = match value {
                        "reboot" => After::Reboot,
                        "poweroff" => After::Poweroff,
                        _ => return Err(invalid("shoal.after", value, "not reboot or poweroff")),
                    }
                }
                "shoal.task" => task = Some(value.to_string()),
                "shoal.image" => image = Some(value.to_string()),
                "shoal.target" => {
                    if !value.starts_with("/dev/") {
                        return Err(invalid("shoal.target", value, "not a /dev path"));
                    }
                    target = Some(PathBuf::from(value));
                }
                "shoal.partition" => {
                    partition = Some(value.parse().map_err(|_| invalid("shoal.partition", value, "not a number"))?);
                }
                "shoal.name" => {
                    let ok = (1..=128).contains(&value.len())
                        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                    if !ok {
                        return Err(invalid("shoal.name", value, "not 1-128 of [A-Za-z0-9._-]"));
                    }
                    name = Some(value.to_string());
                }
                "shoal.wipe" => {
                    wipe = Some(value.parse::<WipeMode>().map_err(|why| invalid("shoal.wipe", value, why))?);
                }
                "shoal.scrub" => {
                    scrub = match value {
                        "" | "1" | "yes" | "on" => true,
                        "0" | "no" | "off" => false,
                        _ => return Err(invalid("shoal.scrub", value, "not 0 or 1")),
                    }
                }
                "shoal.scrub-keep" => {
                    for c in value.split(',').filter(|c| !c.is_empty()) {
                        let c = c
                            .parse::<Category>()
                            .map_err(|_| invalid("shoal.scrub-keep", value, "not a scrub category"))?;
                        keep.push(c);
                    }
                }
                k if k.starts_with("shoal.") => p.unknown.push(k.to_string()),
                _ => {}
            }
        }
        p.target = target.clone();
        let Some(kind) = task else { return Ok(p) };
        let missing = |what| CmdlineError::Missing { task: kind.clone(), missing: what };
        if !["load", "capture", "wipe"].contains(&kind.as_str()) {
            return Err(invalid("shoal.task", &kind, "not a task this agent runs (load, capture, wipe)"));
        }
        let target = target.ok_or_else(|| missing("shoal.target"));
        if p.server.is_none() {
            return Err(missing("shoal.server"));
        }
        p.task = Some(match kind.as_str() {
            "load" => {
                let image = image.filter(|i| !i.is_empty()).ok_or_else(|| missing("shoal.image"))?;
                Task::Load { image, target: target?, partition }
            }
            "capture" => {
                let name = name.ok_or_else(|| missing("shoal.name"))?;
                let scrub = scrub.then_some(ScrubConfig { keep });
                Task::Capture { target: target?, partition, name, version: None, scrub }
            }
            "wipe" => {
                let mode = wipe.ok_or_else(|| missing("shoal.wipe"))?;
                Task::Wipe { target: target?, mode }
            }
            other => return Err(invalid("shoal.task", other, "not a task this agent runs")),
        });
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "console=ttyS0 BOOTIF=01-52-54-00-AB-cd-0f shoal.server=http://10.99.0.1:4870/ \
        shoal.node=pc17 shoal.token=s3cr3t shoal.task=load shoal.image=img shoal.target=/dev/vda quiet";

    #[test]
    fn a_load_line_gives_the_task_and_the_server() {
        let p: BootParams = LINE.parse().unwrap();
        assert_eq!(p.bootif, Some(Mac([0x52, 0x54, 0, 0xab, 0xcd, 0x0f])));
        assert_eq!(p.server.as_deref(), Some("http://10.99.0.1:4870"));
        assert_eq!(p.node.as_ref().map(NodeId::as_str), Some("pc17"));
        assert_eq!(p.token.as_ref().map(AgentToken::expose), Some("s3cr3t"));
        assert_eq!(p.task, Some(Task::Load { image: "img".into(), target: "/dev/vda".into(), partition: None }));
        assert_eq!((p.debug, p.after), (false, After::Reboot));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let p: BootParams = LINE.parse().unwrap();
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let e = "shoal.token=bad\u{7f}".parse::<BootParams>().unwrap_err();
        assert!(!e.to_string().contains("bad"));
    }

    #[test]
    fn quoted_values_and_flags_parse_as_the_kernel_splits_them() {
        let p: BootParams = "\"shoal.image=a b\" shoal.debug shoal.after=poweroff shoal.x=1".parse().unwrap();
        assert!(p.debug);
        assert_eq!(p.after, After::Poweroff);
        assert_eq!(p.unknown, ["shoal.x"]);
        assert_eq!(words("a \"b c\"  d"), ["a", "b c", "d"]);
    }

    #[test]
    fn no_task_is_not_an_error() {
        let p: BootParams = "console=ttyS0 shoal.server=http://s".parse().unwrap();
        assert_eq!(p.task, None);
    }

    #[test]
    fn bad_or_incomplete_lines_are_refused_with_the_key() {
        for (line, key) in [
            ("BOOTIF=52-54-00-12-34-56", "BOOTIF"),
            ("BOOTIF=01-52-54-00-12-34", "BOOTIF"),
            ("BOOTIF=01-52-54-00-12-34-56-78", "BOOTIF"),
            ("shoal.server=10.0.0.1", "shoal.server"),
            ("shoal.server=https://s", "shoal.server"),
            ("shoal.node=a/b", "shoal.node"),
            ("shoal.after=halt", "shoal.after"),
            ("shoal.target=vda", "shoal.target"),
            ("shoal.task=erase", "shoal.task"),
            ("shoal.wipe=shred", "shoal.wipe"),
            ("shoal.scrub=maybe", "shoal.scrub"),
            ("shoal.scrub-keep=logs,keys", "shoal.scrub-keep"),
            ("shoal.name=a/b", "shoal.name"),
            ("shoal.partition=x", "shoal.partition"),
        ] {
            match line.parse::<BootParams>() {
                Err(CmdlineError::Invalid { key: k, .. }) => assert_eq!(k, key, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        let e = "shoal.task=load shoal.image=i shoal.target=/dev/sda".parse::<BootParams>().unwrap_err();
        assert_eq!(e, CmdlineError::Missing { task: "load".into(), missing: "shoal.server" });
        let e = "shoal.server=http://s shoal.task=load shoal.target=/dev/sda".parse::<BootParams>().unwrap_err();
        assert_eq!(e, CmdlineError::Missing { task: "load".into(), missing: "shoal.image" });
    }

    #[test]
    fn capture_and_wipe_lines_give_their_tasks() {
        let base = "shoal.server=http://s shoal.target=/dev/vda";
        let p: BootParams = format!("{base} shoal.task=capture shoal.name=web-1 shoal.partition=2").parse().unwrap();
        let scrub = Some(ScrubConfig::default());
        assert_eq!(
            p.task,
            Some(Task::Capture {
                target: "/dev/vda".into(),
                partition: Some(2),
                name: "web-1".into(),
                version: None,
                scrub
            })
        );
        let p: BootParams =
            format!("{base} shoal.task=capture shoal.name=n shoal.scrub-keep=logs,passwords").parse().unwrap();
        let scrub = Some(ScrubConfig { keep: vec![Category::Logs, Category::Passwords] });
        let want = Task::Capture { target: "/dev/vda".into(), partition: None, name: "n".into(), version: None, scrub };
        assert_eq!(p.task, Some(want));
        let p: BootParams = format!("{base} shoal.task=capture shoal.name=n shoal.scrub=0").parse().unwrap();
        assert!(matches!(p.task, Some(Task::Capture { scrub: None, .. })));
        let p: BootParams = format!("{base} shoal.task=wipe shoal.wipe=zero").parse().unwrap();
        assert_eq!(p.task, Some(Task::Wipe { target: "/dev/vda".into(), mode: WipeMode::Zero }));
        let e = format!("{base} shoal.task=wipe").parse::<BootParams>().unwrap_err();
        assert_eq!(e, CmdlineError::Missing { task: "wipe".into(), missing: "shoal.wipe" });
        let e = format!("{base} shoal.task=capture").parse::<BootParams>().unwrap_err();
        assert_eq!(e, CmdlineError::Missing { task: "capture".into(), missing: "shoal.name" });
    }

    #[test]
    fn macs_parse_with_colons_or_dashes() {
        assert_eq!(Mac::parse("52:54:00:12:34:56"), Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        assert_eq!(Mac::parse("52-54-00-12-34-56").map(|m| m.to_string()).as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(Mac::parse("5254.0012.3456"), None);
        assert_eq!(Mac::parse("52:54:00:12:34:5"), None);
    }
}
