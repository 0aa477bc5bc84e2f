//! IPMI through `ipmitool` over the network (`-I lanplus`).
//!
//! The node's `power.address` is `[USER@]HOST[:PORT]`; the user defaults
//! to the server's `--ipmi-user`. The password is the first line of the
//! server's `--ipmi-password-file`, handed to ipmitool in its environment
//! (`IPMI_PASSWORD` with `-E`), so it never shows on the process list.
//! The cipher suite is the server's `--ipmi-cipher`, if set. Commands:
//! `chassis power on|off|cycle|status`.

use std::time::Duration;

use super::command::run;
use super::{first_line, Action, Power, PowerError, PowerSettings, PowerState};

pub struct Ipmi {
    address: String,
    settings: PowerSettings,
    /// The ipmitool binary (a test may point elsewhere).
    pub program: String,
}

/// A parsed `[USER@]HOST[:PORT]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

pub fn parse_address(address: &str) -> Result<Target, PowerError> {
    let bad = |why| PowerError::Address { address: address.to_string(), why };
    let (user, rest) = match address.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, address),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad("the port is not a number"))?)),
        None => (rest, None),
    };
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if host.is_empty() || !plain(host) || host.starts_with('-') {
        return Err(bad("expected [USER@]HOST[:PORT]"));
    }
    if user.as_deref().is_some_and(|u| u.is_empty() || !plain(u) || u.starts_with('-')) {
        return Err(bad("the user may hold only letters, digits, '-', '.' and '_'"));
    }
    Ok(Target { user, host: host.to_string(), port })
}

impl Ipmi {
    pub fn new(address: String, settings: &PowerSettings) -> Ipmi {
        Ipmi { address, settings: settings.clone(), program: "ipmitool".into() }
    }

    fn chassis_power(&self, verb: &str) -> Result<String, PowerError> {
        let t = parse_address(&self.address)?;
        let mut c = std::process::Command::new(&self.program);
        c.args(["-I", "lanplus", "-H", &t.host]);
        if let Some(suite) = self.settings.ipmi_cipher {
            c.args(["-C", &suite.to_string()]);
        }
        if let Some(p) = t.port {
            c.args(["-p", &p.to_string()]);
        }
        if let Some(u) = t.user.as_ref().or(self.settings.ipmi_user.as_ref()) {
            c.args(["-U", u]);
        }
        match &self.settings.ipmi_password_file {
            Some(f) => {
                c.arg("-E").env("IPMI_PASSWORD", first_line(f)?);
            }
            None => {
                // No password: an empty one, still through the environment.
                c.arg("-E").env("IPMI_PASSWORD", "");
            }
        }
        // ipmitool retries on its own; keep each of its tries short so
        // the whole command fits in the time-out.
        let secs = self.settings.timeout.as_secs().clamp(1, 30) / 4;
        c.args(["-N", &secs.max(1).to_string(), "-R", "3"]);
        c.args(["chassis", "power", verb]);
        run(c, &format!("ipmitool chassis power {verb} on {}", t.host), self.settings.timeout + Duration::from_secs(1))
    }
}

impl Power for Ipmi {
    fn status(&self) -> Result<PowerState, PowerError> {
        let out = self.chassis_power("status")?;
        // "Chassis Power is on" / "Chassis Power is off"
        match out.trim().rsplit(' ').next() {
            Some("on") => Ok(PowerState::On),
            Some("off") => Ok(PowerState::Off),
            _ => Err(PowerError::Protocol { what: "ipmitool chassis power status".into(), answer: out }),
        }
    }

    fn set(&self, action: Action) -> Result<(), PowerError> {
        self.chassis_power(action.as_str()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_user_and_port() {
        assert_eq!(
            parse_address("admin@bmc-12.lab:6230").unwrap(),
            Target { user: Some("admin".into()), host: "bmc-12.lab".into(), port: Some(6230) }
        );
        assert_eq!(parse_address("10.0.0.5").unwrap(), Target { user: None, host: "10.0.0.5".into(), port: None });
    }

    #[test]
    fn addresses_that_could_smuggle_options_are_refused() {
        for bad in ["", "-H", "u@-x", "@host", "host:port", "a b", "h;rm", "x@h:99999"] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }
}
