//! A blocking HTTP client of the control API (ureq): JSON in and out,
//! problem documents turned into errors that say what the server said.

use serde_json::Value;

use crate::api::Problem;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("set --url or SHOAL_URL to the server's address, e.g. http://10.0.0.1:4870")]
    NoUrl,
    /// the server could not be reached or answered garbage
    #[error("{method} {url}: {why}")]
    Transport { method: &'static str, url: String, why: String },
    /// the server answered a problem document
    #[error("{} {}: {}{}", .0.status, .0.title, .0.detail, hint(.0.status))]
    Problem(Problem),
}

fn hint(status: u16) -> &'static str {
    if status == 401 {
        " (set --token or SHOAL_TOKEN; `shoal token create` makes one)"
    } else {
        ""
    }
}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(url: Option<&str>, token: Option<&str>) -> Result<Client, ClientError> {
        let base = url.ok_or(ClientError::NoUrl)?.trim_end_matches('/').to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .into();
        Ok(Client { base, token: token.map(str::to_string), agent })
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call("PUT", path, Some(body))
    }

    pub fn patch(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call("PATCH", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call("DELETE", path, None)
    }

    fn call(&self, method: &'static str, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let fail = |why: String| ClientError::Transport { method, url: url.clone(), why };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET" | "DELETE", _) => {
                let mut r = if method == "GET" { self.agent.get(&url) } else { self.agent.delete(&url) };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = match method {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.header("Content-Type", "application/json").send(body.unwrap_or(Value::Null).to_string())
            }
        };
        let mut resp = result.map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| fail(e.to_string()))?;
        if status >= 400 {
            let problem = serde_json::from_str::<Problem>(&text).unwrap_or_else(|_| Problem {
                kind: "about:blank".into(),
                title: "error".into(),
                status,
                detail: text.trim().chars().take(500).collect(),
            });
            return Err(ClientError::Problem(problem));
        }
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON ({e})")))
    }
}
