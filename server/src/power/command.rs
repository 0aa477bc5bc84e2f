//! Power through programs: [`Command`] runs an operator's script (a site
//! with its own PDU or power tools), and [`run`] is how every driver that
//! shells out (this one, `ipmitool`) runs a child with a time-out.
//!
//! The script is the node's `power.address`, an absolute path, run as
//! `PROGRAM ACTION NODE MAC` with ACTION one of `on`, `off`, `cycle`,
//! `status`. Exit status 0 is success; for `status` the first word of
//! its output says `on` or `off` (anything else is unknown). The child
//! gets no shell, and is killed when the time-out passes.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command as Child, Stdio};
use std::time::{Duration, Instant};

use super::{Action, Power, PowerError, PowerState};
use crate::catalog::{Mac, Name};

/// Output kept from a child, per stream.
const MAX_OUTPUT: u64 = 64 << 10;

pub struct Command {
    program: PathBuf,
    node: Name,
    mac: Mac,
    timeout: Duration,
}

impl Command {
    pub fn new(program: PathBuf, node: Name, mac: Mac, timeout: Duration) -> Command {
        Command { program, node, mac, timeout }
    }

    fn call(&self, action: &str) -> Result<String, PowerError> {
        if !self.program.is_absolute() {
            return Err(PowerError::Address {
                address: self.program.display().to_string(),
                why: "the command driver needs an absolute path to a program",
            });
        }
        let mut c = Child::new(&self.program);
        c.arg(action).arg(self.node.as_str()).arg(self.mac.to_string());
        run(c, &format!("{} {action} {}", self.program.display(), self.node), self.timeout)
    }
}

impl Power for Command {
    fn status(&self) -> Result<PowerState, PowerError> {
        let out = self.call("status")?;
        Ok(match out.split_whitespace().next().map(str::to_ascii_lowercase).as_deref() {
            Some("on") => PowerState::On,
            Some("off") => PowerState::Off,
            _ => PowerState::Unknown,
        })
    }

    fn set(&self, action: Action) -> Result<(), PowerError> {
        self.call(action.as_str()).map(|_| ())
    }
}

/// Runs `cmd` with no stdin, waiting at most `timeout`, and gives its
/// stdout; a non-zero exit is [`PowerError::Refused`] with its stderr.
pub fn run(mut cmd: Child, what: &str, timeout: Duration) -> Result<String, PowerError> {
    let io = |source| PowerError::Io { what: what.to_string(), source };
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(io)?;
    // Read both pipes on their own threads so a chatty child cannot block.
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = p {
                let _ = p.take(MAX_OUTPUT).read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io)? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PowerError::Timeout { what: what.to_string(), after: timeout });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let why = match stderr.trim() {
            "" => status.to_string(),
            e => format!("{status}: {}", e.lines().last().unwrap_or(e)),
        };
        return Err(PowerError::Refused { what: what.to_string(), why });
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("power.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn cmd(p: PathBuf, timeout: Duration) -> Command {
        Command::new(p, Name::parse("pc1").unwrap(), Mac::parse("52:54:00:00:00:01").unwrap(), timeout)
    }

    #[test]
    fn the_program_gets_action_node_and_mac_and_its_status_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let p =
            script(dir.path(), &format!("echo \"$@\" >> {}\nif [ \"$1\" = status ]; then echo off; fi", log.display()));
        let c = cmd(p, Duration::from_secs(5));
        c.restart().unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls, "status pc1 52:54:00:00:00:01\non pc1 52:54:00:00:00:01\n");
    }

    #[test]
    fn a_failing_program_is_refused_with_its_last_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let c =
            cmd(script(dir.path(), "echo first >&2; echo 'pdu outlet 7 stuck' >&2; exit 4"), Duration::from_secs(5));
        match c.set(Action::Cycle) {
            Err(PowerError::Refused { why, .. }) => assert!(why.ends_with("pdu outlet 7 stuck"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hanging_program_is_killed_at_the_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let c = cmd(script(dir.path(), "exec sleep 30"), Duration::from_millis(300));
        let t = Instant::now();
        assert!(matches!(c.set(Action::Off), Err(PowerError::Timeout { .. })));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_relative_program_path_is_refused_before_running_anything() {
        let c = cmd(PathBuf::from("power.sh"), Duration::from_secs(1));
        assert!(matches!(c.set(Action::On), Err(PowerError::Address { .. })));
    }
}
