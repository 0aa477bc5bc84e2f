//! QEMU's machine protocol (QMP) on a unix socket: the driver for VMs.
//!
//! A session is JSON lines: the server's greeting (`{"QMP": ...}`), our
//! `qmp_capabilities`, then one command and its answer. Asynchronous
//! events (`{"event": ...}`) may come between and are skipped. `Cycle` is
//! `system_reset`, `Off` is `quit` (QEMU exits: a VM that is off is a VM
//! that is not running), `On` is `cont` for a stopped VM; `query-status`
//! gives the state. Every read and write is bounded by the time-out, and
//! an answer line by [`MAX_LINE`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Action, Power, PowerError, PowerState};

/// The longest QMP line read.
pub const MAX_LINE: usize = 1 << 20;

pub struct Qmp {
    socket: PathBuf,
    timeout: Duration,
}

impl Qmp {
    pub fn new(socket: PathBuf, timeout: Duration) -> Qmp {
        Qmp { socket, timeout }
    }

    fn what(&self, cmd: &str) -> String {
        format!("qmp {cmd} on {}", self.socket.display())
    }

    /// Connects, negotiates, runs `cmd` and gives its `return` value.
    pub fn execute(&self, cmd: &str) -> Result<Value, PowerError> {
        let what = self.what(cmd);
        if self.socket.as_os_str().is_empty() {
            return Err(PowerError::Address { address: String::new(), why: "qmp needs the QMP socket's path" });
        }
        let io = |source| PowerError::Io { what: what.clone(), source };
        let stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let deadline = Instant::now() + self.timeout;
        let mut writer = stream.try_clone().map_err(io)?;
        let mut reader = BufReader::new(stream);
        let greeting = read_message(&mut reader, &what, deadline, self.timeout)?;
        if greeting.get("QMP").is_none() {
            return Err(PowerError::Protocol { what, answer: greeting.to_string() });
        }
        for c in ["qmp_capabilities", cmd] {
            let line = json!({"execute": c}).to_string() + "\n";
            writer.write_all(line.as_bytes()).map_err(io)?;
            let answer = loop {
                let m = read_message(&mut reader, &what, deadline, self.timeout)?;
                if m.get("event").is_none() {
                    break m;
                }
            };
            if let Some(e) = answer.get("error") {
                let why = e.get("desc").and_then(Value::as_str).unwrap_or("error").to_string();
                return Err(PowerError::Refused { what, why });
            }
            let Some(ret) = answer.get("return") else {
                return Err(PowerError::Protocol { what, answer: answer.to_string() });
            };
            if c == cmd {
                return Ok(ret.clone());
            }
        }
        unreachable!("the loop returns on its second command")
    }
}

/// One JSON object off the socket, its line bounded.
fn read_message(
    r: &mut BufReader<UnixStream>,
    what: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Value, PowerError> {
    let mut line = Vec::new();
    let n = r.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(|source| {
        if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            PowerError::Timeout { what: what.to_string(), after: timeout }
        } else {
            PowerError::Io { what: what.to_string(), source }
        }
    })?;
    if Instant::now() > deadline {
        return Err(PowerError::Timeout { what: what.to_string(), after: timeout });
    }
    let text = String::from_utf8_lossy(&line);
    if n == 0 {
        return Err(PowerError::Protocol { what: what.to_string(), answer: "end of stream".into() });
    }
    if n > MAX_LINE {
        return Err(PowerError::Protocol { what: what.to_string(), answer: format!("a line over {MAX_LINE} bytes") });
    }
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(PowerError::Protocol { what: what.to_string(), answer: text.chars().take(200).collect() }),
    }
}

impl Power for Qmp {
    fn status(&self) -> Result<PowerState, PowerError> {
        let r = match self.execute("query-status") {
            Ok(r) => r,
            // No QEMU behind the socket: the VM is off.
            Err(PowerError::Io { source, .. })
                if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
            {
                return Ok(PowerState::Off)
            }
            Err(e) => return Err(e),
        };
        match r.get("status").and_then(Value::as_str) {
            Some("running") => Ok(PowerState::On),
            Some("shutdown" | "paused" | "prelaunch" | "suspended") => Ok(PowerState::Off),
            Some(_) => Ok(PowerState::Unknown),
            None => Err(PowerError::Protocol { what: self.what("query-status"), answer: r.to_string() }),
        }
    }

    fn set(&self, action: Action) -> Result<(), PowerError> {
        let cmd = match action {
            Action::Cycle => "system_reset",
            Action::Off => "quit",
            Action::On => "cont",
        };
        match (action, self.execute(cmd)) {
            // QEMU may close the socket as it quits, before answering.
            (Action::Off, Err(PowerError::Protocol { answer, .. })) if answer == "end of stream" => Ok(()),
            (_, r) => r.map(|_| ()),
        }
    }

    /// A VM whose QEMU has gone cannot be started from its socket;
    /// otherwise a stopped VM is reset and continued, a running one reset.
    fn restart(&self) -> Result<(), PowerError> {
        match self.status()? {
            PowerState::Off => {
                self.set(Action::Cycle)?;
                self.set(Action::On)
            }
            PowerState::On | PowerState::Unknown => self.set(Action::Cycle),
        }
    }
}
