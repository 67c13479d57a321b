//! An MCP client over Streamable HTTP (protocol 2025-06-18), as small as the tests need:
//! the `initialize` request, a session that posts JSON-RPC messages in it, and reading the
//! JSON-RPC answer out of a plain JSON or SSE body.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

/// The protocol version the tests speak.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// The `Accept` header Streamable HTTP asks of a client.
pub const ACCEPT: &str = "application/json, text/event-stream";

/// An `initialize` request with JSON-RPC id `id`, naming the client `client`.
pub fn initialize_request(id: u64, client: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                   "clientInfo": {"name": client, "version": "0"}}
    })
}

/// Posts `initialize` (id 1, as client `client`) to `base`'s `/mcp` with `token`, with
/// `deadline` when given; the response, whatever its status.
pub async fn send_initialize(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    client: &str,
    deadline: Option<Duration>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = http
        .post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("Accept", ACCEPT)
        .json(&initialize_request(1, client));
    if let Some(deadline) = deadline {
        request = request.timeout(deadline);
    }
    request.send().await
}

/// The `notifications/initialized` notification.
pub fn initialized_notification() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// The JSON-RPC message in a Streamable HTTP answer (plain JSON or an SSE `data:` line).
pub fn message_of(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return Some(v);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
}

/// Per-request deadlines of a session; without them a request waits as long as the node.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub initialize: Duration,
    pub message: Duration,
}

/// The deadlines of the cluster tests, where a node may stop answering.
pub const CLUSTER_DEADLINES: Deadlines = Deadlines {
    initialize: Duration::from_secs(10),
    message: Duration::from_secs(30),
};

/// An MCP session on one node.
pub struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    pub id: String,
    next: u64,
    deadlines: Option<Deadlines>,
}

impl Session {
    /// Sends `initialize` (id 0, as client `client`) to `base`'s `/mcp` with `token`; the
    /// session it opened, or an error unless it answered 200 with a session id. Sends no
    /// `notifications/initialized` (see `initialized`).
    pub async fn initialize(
        http: &reqwest::Client,
        base: &str,
        token: &str,
        client: &str,
        deadlines: Option<Deadlines>,
    ) -> anyhow::Result<Session> {
        let url = format!("{base}/mcp");
        let mut request = http
            .post(&url)
            .bearer_auth(token)
            .header("Accept", ACCEPT)
            .json(&initialize_request(0, client));
        if let Some(d) = deadlines {
            request = request.timeout(d.initialize);
        }
        let r = request.send().await.context("initialize")?;
        anyhow::ensure!(r.status() == 200, "initialize: {}", r.status());
        let id = r
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .context("no mcp-session-id")?;
        let _ = r.text().await;
        Ok(Session {
            http: http.clone(),
            url,
            token: token.to_owned(),
            id,
            next: 1,
            deadlines,
        })
    }

    /// `initialize` then `notifications/initialized`, which must be answered 202 or 200.
    pub async fn open(
        http: &reqwest::Client,
        base: &str,
        token: &str,
        client: &str,
        deadlines: Option<Deadlines>,
    ) -> anyhow::Result<Session> {
        let s = Session::initialize(http, base, token, client, deadlines).await?;
        let status = s.initialized().await?;
        anyhow::ensure!(status == 202 || status == 200, "initialized: {status}");
        Ok(s)
    }

    /// Sends `notifications/initialized`; the status.
    pub async fn initialized(&self) -> anyhow::Result<u16> {
        Ok(self.post(initialized_notification()).await?.0)
    }

    /// Posts `message` in the session; the status and body.
    pub async fn post(&self, message: Value) -> anyhow::Result<(u16, String)> {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", ACCEPT)
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .json(&message);
        if let Some(d) = self.deadlines {
            request = request.timeout(d.message);
        }
        let r = request.send().await.context("POST /mcp")?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    }

    /// A request `method` with `params` and the next id (2, 3, ...); the status and body.
    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<(u16, String)> {
        self.next += 1;
        self.post(json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}))
            .await
    }

    /// `tools/call` of `tool` with `arguments`, with JSON-RPC id `id`; the status and body.
    pub async fn call_tool(
        &self,
        id: u64,
        tool: &str,
        arguments: &Value,
    ) -> anyhow::Result<(u16, String)> {
        self.post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": tool, "arguments": arguments}}))
            .await
    }
}
