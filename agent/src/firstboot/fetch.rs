//! The metadata client: the EC2 paths over HTTP with an IMDSv2 token when
//! the service gives one, and Shoal's one-time initial password.

use std::time::Duration;

/// The largest answer taken, in bytes (user-data is at most 16 KiB).
const MAX_ANSWER: u64 = 64 * 1024;
/// The TTL asked for the IMDSv2 token.
const TOKEN_TTL: u32 = 300;

/// What first boot learns about this instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub instance_id: String,
    pub hostname: Option<String>,
    pub ssh_keys: Vec<String>,
    pub user_data: Option<Vec<u8>>,
    /// A device such as `/dev/vdb`.
    pub ephemeral_disk: Option<String>,
    pub image_id: Option<String>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// the service cannot be reached (worth retrying)
    #[error("GET {url}: {why}")]
    Transport { url: String, why: String },
    #[error("GET {url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("{what} is not valid: {why}")]
    Invalid { what: &'static str, why: String },
}

/// One metadata service, with its IMDSv2 token if it handed one out.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    /// Asks for an IMDSv2 token; a service that gives none (or refuses
    /// the PUT) is used without one. Fails only if it cannot be reached.
    pub fn connect(base: &str, timeout: Duration) -> Result<Client, FetchError> {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        let base = base.trim_end_matches('/').to_string();
        let url = format!("{base}/latest/api/token");
        let mut resp = agent
            .put(&url)
            .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL.to_string())
            .send_empty()
            .map_err(|e| FetchError::Transport { url: url.clone(), why: e.to_string() })?;
        let token = if resp.status() == 200 {
            let t = resp
                .body_mut()
                .with_config()
                .limit(1024)
                .read_to_string()
                .map_err(|e| FetchError::Transport { url: url.clone(), why: e.to_string() })?;
            Some(t.trim().to_string()).filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        } else {
            None
        };
        Ok(Client { base, agent, token })
    }

    /// `GET path`: its bytes, or `None` for 404.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        Ok(self.get_status(path)?.1)
    }

    /// `GET path`: the status and, for 200, the bytes.
    fn get_status(&self, path: &str) -> Result<(u16, Option<Vec<u8>>), FetchError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("X-aws-ec2-metadata-token", t);
        }
        let transport = |e: ureq::Error| FetchError::Transport { url: url.clone(), why: e.to_string() };
        let mut resp = req.call().map_err(transport)?;
        match resp.status().as_u16() {
            200 => {
                let body = resp.body_mut().with_config().limit(MAX_ANSWER).read_to_vec().map_err(transport)?;
                Ok((200, Some(body)))
            }
            s @ (404 | 410) => Ok((s, None)),
            status => Err(FetchError::Status { url, status }),
        }
    }

    fn text(&self, path: &str, what: &'static str) -> Result<Option<String>, FetchError> {
        match self.get(path)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| FetchError::Invalid { what, why: "not UTF-8".into() }),
        }
    }

    /// The instance-id alone (first boot compares it before doing anything).
    pub fn instance_id(&self) -> Result<String, FetchError> {
        let id = self
            .text("/latest/meta-data/instance-id", "instance-id")?
            .ok_or_else(|| FetchError::Invalid { what: "instance-id", why: "the service has none".into() })?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(FetchError::Invalid { what: "instance-id", why: format!("{id:?}") });
        }
        Ok(id)
    }

    /// Everything but the password.
    pub fn metadata(&self, instance_id: String) -> Result<Metadata, FetchError> {
        let hostname = match self.text("/latest/meta-data/local-hostname", "hostname")? {
            Some(h) if valid_hostname(&h) => Some(h),
            Some(h) => return Err(FetchError::Invalid { what: "hostname", why: format!("{h:?}") }),
            None => None,
        };
        let mut ssh_keys = Vec::new();
        if let Some(list) = self.text("/latest/meta-data/public-keys/", "public-keys")? {
            for entry in list.lines() {
                let index = entry.split('=').next().unwrap_or("");
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let path = format!("/latest/meta-data/public-keys/{index}/openssh-key");
                if let Some(k) = self.text(&path, "ssh key")? {
                    ssh_keys.extend(k.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
                }
            }
        }
        let ephemeral_disk = match self.text("/latest/meta-data/block-device-mapping/ephemeral0", "ephemeral disk")? {
            Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b)) => {
                Some(if d.starts_with("/dev/") { d } else { format!("/dev/{d}") })
            }
            Some(d) => return Err(FetchError::Invalid { what: "ephemeral disk", why: format!("{d:?}") }),
            None => None,
        };
        let image_id = self.text("/latest/meta-data/ami-id", "image id")?;
        let user_data = self.get("/latest/user-data")?;
        Ok(Metadata { instance_id, hostname, ssh_keys, user_data, ephemeral_disk, image_id })
    }

    /// The initial password's crypt hash, which the service hands out
    /// once: `None` if it has none or gave it already.
    pub fn initial_password_hash(&self) -> Result<Option<String>, FetchError> {
        self.text("/shoal/v1/initial-password", "initial password hash")
    }
}

/// RFC 1123 host names (one label or several).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::valid_hostname;

    #[test]
    fn host_names_that_could_escape_a_file_are_refused() {
        assert!(valid_hostname("pc7") && valid_hostname("pc7.lab.example") && valid_hostname("node_1"));
        for bad in ["", "a b", "../x", "-a", "a\nb", "a/b", &"x".repeat(64)] {
            assert!(!valid_hostname(bad), "{bad:?}");
        }
    }
}
