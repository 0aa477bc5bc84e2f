//! Redfish over HTTP: the node's `power.address` is its ComputerSystem's
//! URL (e.g. `http://bmc-7/redfish/v1/Systems/1`). Status is the
//! system's `PowerState`; actions POST `ComputerSystem.Reset` with
//! `ResetType` `On`, `ForceOff` or `ForceRestart`. Credentials are the
//! server's `--redfish-credentials` file (`USER:PASSWORD`), sent as HTTP
//! basic auth.
//!
//! Not here: HTTPS (Shoal's ureq is built without TLS), sessions
//! (`X-Auth-Token`), and reading the action's target from the system
//! document; BMCs that need those are not supported yet.

use serde_json::{json, Value};

use super::{first_line, Action, Power, PowerError, PowerSettings, PowerState};

/// The largest answer read from a BMC.
const MAX_BODY: u64 = 1 << 20;

pub struct Redfish {
    system: String,
    settings: PowerSettings,
}

impl Redfish {
    pub fn new(system: String, settings: &PowerSettings) -> Redfish {
        Redfish { system: system.trim_end_matches('/').to_string(), settings: settings.clone() }
    }

    fn check(&self) -> Result<(), PowerError> {
        let why = if self.system.starts_with("https://") {
            "https is not supported yet; give the BMC's http:// URL"
        } else if !self.system.starts_with("http://") || !self.system.contains("/redfish/v1/Systems/") {
            "expected the system's URL, http://BMC/redfish/v1/Systems/ID"
        } else {
            return Ok(());
        };
        Err(PowerError::Address { address: self.system.clone(), why })
    }

    fn auth(&self) -> Result<Option<String>, PowerError> {
        let Some(path) = &self.settings.redfish_credentials else { return Ok(None) };
        let line = first_line(path)?;
        if !line.contains(':') {
            return Err(PowerError::Credentials { path: path.clone(), why: "expected USER:PASSWORD".into() });
        }
        Ok(Some(format!("Basic {}", base64(line.as_bytes()))))
    }

    fn call(&self, what: &str, url: &str, body: Option<Value>) -> Result<Value, PowerError> {
        self.check()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.settings.timeout))
            .build()
            .into();
        let auth = self.auth()?;
        let result = match body {
            None => {
                let mut r = agent.get(url).header("Accept", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            Some(b) => {
                let mut r = agent.post(url).header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(b.to_string())
            }
        };
        let io = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => PowerError::Timeout { what: what.to_string(), after: self.settings.timeout },
            e => PowerError::Io { what: what.to_string(), source: std::io::Error::other(e.to_string()) },
        };
        let mut resp = result.map_err(io)?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().with_config().limit(MAX_BODY).read_to_string().map_err(io)?;
        if !(200..300).contains(&status) {
            // Redfish errors carry error.message; fall back to the status.
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(PowerError::Refused { what: what.to_string(), why: format!("{msg} ({status})") });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|_| PowerError::Protocol { what: what.to_string(), answer: text.chars().take(200).collect() })
    }
}

impl Power for Redfish {
    fn status(&self) -> Result<PowerState, PowerError> {
        let what = format!("redfish GET {}", self.system);
        let v = self.call(&what, &self.system, None)?;
        match v.get("PowerState").and_then(Value::as_str) {
            Some("On" | "PoweringOff") => Ok(PowerState::On),
            Some("Off" | "PoweringOn") => Ok(PowerState::Off),
            Some(_) => Ok(PowerState::Unknown),
            None => Err(PowerError::Protocol { what, answer: v.to_string().chars().take(200).collect() }),
        }
    }

    fn set(&self, action: Action) -> Result<(), PowerError> {
        let reset = match action {
            Action::On => "On",
            Action::Off => "ForceOff",
            Action::Cycle => "ForceRestart",
        };
        let url = format!("{}/Actions/ComputerSystem.Reset", self.system);
        self.call(&format!("redfish {reset} on {}", self.system), &url, Some(json!({"ResetType": reset}))).map(|_| ())
    }
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn https_and_non_system_urls_are_refused_before_any_request() {
        let s = PowerSettings::default();
        for a in ["https://bmc/redfish/v1/Systems/1", "http://bmc/", "bmc"] {
            assert!(matches!(Redfish::new(a.into(), &s).status(), Err(PowerError::Address { .. })), "{a}");
        }
    }
}
