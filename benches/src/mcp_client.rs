//! A minimal MCP client over Streamable HTTP for the benchmarks: one session per client
//! (`initialize`, `notifications/initialized`), then `tools/call` requests, each answered as
//! plain JSON or as an SSE stream whose `data:` line carries the JSON-RPC response.

use std::time::Duration;

use serde_json::{Value, json};

/// The protocol version the benchmark sessions speak.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{0}")]
    Transport(String),
    #[error("the answer carries no JSON-RPC response: {0}")]
    NoResponse(String),
    #[error("JSON-RPC error: {0}")]
    Rpc(String),
    #[error("tool error: {0}")]
    Tool(String),
}

/// One MCP session on one endpoint.
pub struct McpSession {
    http: reqwest::Client,
    url: String,
    token: String,
    session_id: Option<String>,
    next_id: u64,
    timeout: Duration,
}

/// Longest body kept in an error.
const MAX_ERROR_BODY: usize = 200;

fn cut(s: &str) -> String {
    s.chars().take(MAX_ERROR_BODY).collect()
}

/// The JSON-RPC response in a Streamable HTTP answer body.
pub fn response_of(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return Some(v);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
}

impl McpSession {
    /// Opens a session at `url` (the MCP endpoint) with a bearer token.
    pub async fn open(
        http: reqwest::Client,
        url: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<McpSession, McpError> {
        let mut s = McpSession {
            http,
            url: url.to_owned(),
            token: token.to_owned(),
            session_id: None,
            next_id: 0,
            timeout,
        };
        let (headers, _) = s
            .post(json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                           "clientInfo": {"name": "quire-bench", "version": env!("CARGO_PKG_VERSION")}}
            }))
            .await?;
        s.session_id = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(s)
    }

    async fn post(&self, message: Value) -> Result<(reqwest::header::HeaderMap, String), McpError> {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .timeout(self.timeout)
            .json(&message);
        if let Some(id) = &self.session_id {
            request = request.header("mcp-session-id", id);
        }
        let response = request
            .send()
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(McpError::Status {
                status,
                body: cut(&body),
            });
        }
        Ok((headers, body))
    }

    /// Calls a tool; `Ok` carries the result when the tool succeeded.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Value, McpError> {
        self.next_id += 1;
        let (_, body) = self
            .post(json!({
                "jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                "params": {"name": name, "arguments": arguments}
            }))
            .await?;
        let response = response_of(&body).ok_or_else(|| McpError::NoResponse(cut(&body)))?;
        if let Some(error) = response.get("error") {
            return Err(McpError::Rpc(cut(&error.to_string())));
        }
        let result = response.get("result").cloned().unwrap_or(Value::Null);
        if result.get("isError") == Some(&Value::Bool(true)) {
            return Err(McpError::Tool(cut(&result.to_string())));
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_found_in_json_and_sse_bodies() {
        let plain = r#"{"jsonrpc":"2.0","id":3,"result":{}}"#;
        assert_eq!(response_of(plain).unwrap()["id"], 3);
        let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}\n\n";
        assert_eq!(response_of(sse).unwrap()["id"], 4);
        assert!(response_of("data: nope").is_none());
    }
}
