//! Starts a sandbox on 127.0.0.1:0 and talks to it over real HTTP.
#![allow(dead_code)]

use quire_sandbox::{Sandbox, SandboxConfig};
use reqwest::Method;
use serde_json::Value;

pub const ALPHA: &str = "secret_sandbox_alpha";
pub const BETA: &str = "secret_sandbox_beta";

pub struct Server {
    pub base: String,
    pub sandbox: Sandbox,
    pub client: reqwest::Client,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    /// Asserts an error object with this status and code, and returns its message.
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["object"], "error", "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        let rid = self.body["request_id"].as_str().expect("request_id");
        assert_eq!(rid.len(), 36, "request_id should be a UUID: {rid}");
        self.body["message"].as_str().expect("message").to_string()
    }

    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "body: {}", self.body);
        self.body
    }
}

/// No rate limit, so functional tests are not throttled.
pub fn unlimited() -> SandboxConfig {
    SandboxConfig {
        rate_limit: None,
        ..SandboxConfig::default()
    }
}

pub async fn start(config: SandboxConfig) -> Server {
    let sandbox = Sandbox::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(quire_sandbox::serve(sandbox.clone(), listener));
    Server {
        base: format!("http://{addr}"),
        sandbox,
        client: reqwest::Client::new(),
        task,
    }
}

impl Server {
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        version: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(v) = version {
            req = req.header("Notion-Version", v);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_string());
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            retry_after,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.raw(method, path, Some(token), Some("2025-09-03"), body)
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, token, Some(body)).await
    }
}

pub fn text(content: &str) -> Value {
    serde_json::json!([{"type": "text", "text": {"content": content}}])
}

pub fn title_of(page: &Value) -> String {
    let props = page["properties"].as_object().expect("properties");
    props
        .values()
        .find(|p| p["type"] == "title")
        .and_then(|p| p["title"].as_array())
        .map(|a| a.iter().filter_map(|t| t["plain_text"].as_str()).collect())
        .unwrap_or_default()
}
