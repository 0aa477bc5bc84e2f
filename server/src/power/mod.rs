//! Power drivers: how the job runner switches a node on, off, or through
//! a power cycle. One trait ([`Power`]), one driver per way a site wires
//! its machines: [`qmp`] (a QEMU VM's QMP socket), [`ipmi`] (a BMC through
//! `ipmitool`), [`redfish`] (a BMC's Redfish API over HTTP), [`command`]
//! (an operator's own program) and [`Manual`] (a person, told in the log).
//!
//! Every call blocks (sockets, child processes, HTTP) and is bounded by
//! the settings' time-out; the runner calls them off the async threads.
//! A node's driver and its `power.address` come from the catalog
//! ([`for_node`]); credentials come from the server's settings, never
//! from the catalog and never on a command line.

pub mod command;
pub mod ipmi;
pub mod qmp;
pub mod redfish;

use std::path::PathBuf;
use std::time::Duration;

use crate::catalog::nodes::Power as PowerConfig;
use crate::catalog::{Mac, Name, PowerDriver};

/// What to do to a node's power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    On,
    /// Hard off.
    Off,
    /// Hard reset, or off then on.
    Cycle,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Cycle => "cycle",
        }
    }
}

/// What a driver says the power is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    /// The driver cannot tell (manual, or a state it does not map).
    Unknown,
}

/// Why a power command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PowerError {
    /// the node's power address does not suit its driver
    #[error("power address {address:?}: {why}")]
    Address { address: String, why: &'static str },
    /// reaching the device failed
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} took longer than {after:?}")]
    Timeout { what: String, after: Duration },
    /// the device answered something this driver does not understand
    #[error("{what}: unexpected answer {answer:?}")]
    Protocol { what: String, answer: String },
    /// the device understood and refused
    #[error("{what}: {why}")]
    Refused { what: String, why: String },
    /// a credentials file could not be read or is malformed
    #[error("credentials file {path}: {why}")]
    Credentials { path: PathBuf, why: String },
}

/// The server's power settings (flags of `shoal server`).
#[derive(Clone, Debug)]
pub struct PowerSettings {
    /// The longest one power command may take.
    pub timeout: Duration,
    /// For `ipmi`: a file whose first line is the BMC password (given to
    /// ipmitool in its environment, `-E`).
    pub ipmi_password_file: Option<PathBuf>,
    /// For `ipmi`: the BMC user when the address names none.
    pub ipmi_user: Option<String>,
    /// For `ipmi`: the RMCP+ cipher suite (`-C`); without it ipmitool asks
    /// the BMC, which some BMCs answer slowly or not at all.
    pub ipmi_cipher: Option<u8>,
    /// For `redfish`: a file holding `USER:PASSWORD` (HTTP basic auth).
    pub redfish_credentials: Option<PathBuf>,
}

impl Default for PowerSettings {
    fn default() -> PowerSettings {
        PowerSettings {
            timeout: Duration::from_secs(30),
            ipmi_password_file: None,
            ipmi_user: None,
            ipmi_cipher: None,
            redfish_credentials: None,
        }
    }
}

/// One node's power.
pub trait Power: Send + Sync {
    /// What the power is now.
    fn status(&self) -> Result<PowerState, PowerError>;
    /// Switches it.
    fn set(&self, action: Action) -> Result<(), PowerError>;

    /// Starts the node afresh whatever its state: on if it is off, a
    /// power cycle otherwise (many BMCs refuse to cycle a node that is
    /// off). This is what the runner does to boot the agent.
    fn restart(&self) -> Result<(), PowerError> {
        match self.status()? {
            PowerState::Off => self.set(Action::On),
            PowerState::On | PowerState::Unknown => self.set(Action::Cycle),
        }
    }
}

/// The driver for a node, as the catalog describes its power.
pub fn for_node(node: &Name, mac: Mac, config: &PowerConfig, settings: &PowerSettings) -> Box<dyn Power> {
    let address = config.address.clone();
    match config.driver {
        PowerDriver::Qmp => Box::new(qmp::Qmp::new(address.into(), settings.timeout)),
        PowerDriver::Ipmi => Box::new(ipmi::Ipmi::new(address, settings)),
        PowerDriver::Redfish => Box::new(redfish::Redfish::new(address, settings)),
        PowerDriver::Command => Box::new(command::Command::new(address.into(), node.clone(), mac, settings.timeout)),
        PowerDriver::Manual => Box::new(Manual { node: node.clone(), mac }),
    }
}

/// A node whose power a person switches: each command is a warning in
/// the log saying what to do, and succeeds at once; the runner's
/// time-outs then wait for the person as they would for a machine.
pub struct Manual {
    pub node: Name,
    pub mac: Mac,
}

impl Power for Manual {
    fn status(&self) -> Result<PowerState, PowerError> {
        Ok(PowerState::Unknown)
    }

    fn set(&self, action: Action) -> Result<(), PowerError> {
        let what = match action {
            Action::On => "switch on",
            Action::Off => "switch off",
            Action::Cycle => "power-cycle (or reset)",
        };
        tracing::warn!(node = %self.node, mac = %self.mac, "manual power: please {what} node {} now", self.node);
        Ok(())
    }
}

/// Reads the first line of a secret file, refusing an empty one.
pub(crate) fn first_line(path: &std::path::Path) -> Result<String, PowerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PowerError::Credentials { path: path.to_owned(), why: e.to_string() })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r').to_string();
    if line.is_empty() {
        return Err(PowerError::Credentials { path: path.to_owned(), why: "the first line is empty".into() });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder {
        state: PowerState,
        done: Mutex<Vec<Action>>,
    }

    impl Power for Recorder {
        fn status(&self) -> Result<PowerState, PowerError> {
            Ok(self.state)
        }
        fn set(&self, a: Action) -> Result<(), PowerError> {
            self.done.lock().unwrap().push(a);
            Ok(())
        }
    }

    #[test]
    fn restart_switches_an_off_node_on_and_cycles_the_rest() {
        for (state, want) in
            [(PowerState::Off, Action::On), (PowerState::On, Action::Cycle), (PowerState::Unknown, Action::Cycle)]
        {
            let r = Recorder { state, done: Mutex::new(Vec::new()) };
            r.restart().unwrap();
            assert_eq!(*r.done.lock().unwrap(), vec![want], "from {state:?}");
        }
    }

    #[test]
    fn an_empty_credentials_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "\nsecond\n").unwrap();
        assert!(matches!(first_line(&p), Err(PowerError::Credentials { .. })));
        std::fs::write(&p, "s3cret\r\n").unwrap();
        assert_eq!(first_line(&p).unwrap(), "s3cret");
    }
}
