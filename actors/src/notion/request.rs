use std::fmt;
use std::time::Duration;

/// The HTTP methods Notion's public API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Patch,
    Delete,
}

impl HttpMethod {
    /// The method's name on the wire (`GET`, `POST`, `PATCH`, `DELETE`).
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    /// The method named `s` (exactly as [`HttpMethod::as_str`] writes it), if Quire sends it.
    pub fn from_name(s: &str) -> Option<HttpMethod> {
        match s {
            "GET" => Some(HttpMethod::Get),
            "POST" => Some(HttpMethod::Post),
            "PATCH" => Some(HttpMethod::Patch),
            "DELETE" => Some(HttpMethod::Delete),
            _ => None,
        }
    }
}

/// One request to Notion's API, relative to the configured base URL (`/v1/...`).
#[derive(Debug, Clone, PartialEq)]
pub struct NotionRequest {
    pub method: HttpMethod,
    /// Path beginning with `/v1/`, ids already validated by the caller.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
}

impl NotionRequest {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: HttpMethod::Get,
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self {
            method: HttpMethod::Delete,
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn post(path: impl Into<String>, body: serde_json::Value) -> Self {
        Self {
            method: HttpMethod::Post,
            path: path.into(),
            query: Vec::new(),
            body: Some(body),
        }
    }

    pub fn patch(path: impl Into<String>, body: serde_json::Value) -> Self {
        Self {
            method: HttpMethod::Patch,
            path: path.into(),
            query: Vec::new(),
            body: Some(body),
        }
    }

    pub fn with_query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }
}

/// An integration's Notion token. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NotionToken(String);

impl NotionToken {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NotionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotionToken(<redacted>)")
    }
}

/// What can go wrong talking to Notion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotionError {
    /// Notion answered with its error object `{object:"error", status, code, message}`.
    #[error("Notion answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// From `Retry-After` on 429 and 529.
        retry_after: Option<Duration>,
    },
    #[error("Notion did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("could not reach Notion: {0}")]
    Transport(String),
    #[error("Notion's answer could not be read: {0}")]
    Decode(String),
}

impl NotionError {
    /// A request the client refuses before sending, shaped like Notion's own answer to it
    /// (400 `validation_error`), so callers handle both the same way.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        NotionError::Api {
            status: 400,
            code: "validation_error".to_string(),
            message: message.into(),
            request_id: None,
            retry_after: None,
        }
    }

    /// An unusable client configuration (base URL, version, limits).
    pub fn invalid_config(message: impl AsRef<str>) -> Self {
        NotionError::Transport(format!(
            "invalid Notion client configuration: {}",
            message.as_ref()
        ))
    }
}
