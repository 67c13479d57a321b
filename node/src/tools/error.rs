//! The errors a tool call returns to the agent, and the one mapping from the data plane's
//! [`CallError`] onto them.

use quire_actors::call::CallError;
use quire_actors::notion::NotionError;
use serde_json::{Value, json};

/// Why a tool call failed, in terms an agent can act on.
///
/// `code` is one of: `unknown_tool`, `invalid_input`, `object_not_found`, `unauthorized`,
/// `restricted_resource`, `validation_error`, `conflict`, `rate_limited`,
/// `notion_unavailable`, `internal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    pub code: &'static str,
    pub message: String,
    /// Set with `rate_limited` (and with `notion_unavailable` when Notion said when to
    /// come back): wait this long before calling again.
    pub retry_after_seconds: Option<u64>,
}

impl ToolError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    pub fn unknown_tool(name: &str) -> Self {
        let mut shown: String = name.chars().take(64).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        Self::new(
            "unknown_tool",
            format!(
                "there is no tool named `{shown}`; the tools are: {}",
                super::catalog()
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }

    /// `argument` is a path such as `pages[2].title`; `expected` says what would be valid.
    pub fn invalid_input(argument: &str, expected: impl std::fmt::Display) -> Self {
        let argument = if argument.is_empty() {
            "arguments"
        } else {
            argument
        };
        Self::new("invalid_input", format!("`{argument}`: {expected}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("internal", message)
    }

    /// The error as the JSON object an agent reads:
    /// `{"code": ..., "message": ..., "retry_after_seconds": ...}` (the last one only when set).
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "code": self.code, "message": self.message });
        if let (Some(secs), Some(obj)) = (self.retry_after_seconds, v.as_object_mut()) {
            obj.insert("retry_after_seconds".into(), json!(secs));
        }
        v
    }
}

/// Seconds to wait, rounded up, at least one.
fn whole_seconds(d: std::time::Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

fn with_request_id(message: String, request_id: &Option<String>) -> String {
    match request_id {
        Some(id) => format!("{message} (Notion request id {id})"),
        None => message,
    }
}

impl From<CallError> for ToolError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::RateLimited {
                retry_after_seconds,
            } => Self {
                code: "rate_limited",
                message: format!(
                    "the Notion integration's request budget is exhausted; nothing was sent to \
                     Notion. Retry after {retry_after_seconds} s"
                ),
                retry_after_seconds: Some(retry_after_seconds.max(1)),
            },
            CallError::Retry {
                why,
                retry_after_seconds,
            } => Self {
                code: "notion_unavailable",
                message: format!(
                    "Quire could not complete the call on the node that sends this \
                     integration's requests ({why}); it is safe to retry reads, check before \
                     retrying writes. Retry after {retry_after_seconds} s"
                ),
                retry_after_seconds: Some(retry_after_seconds.max(1)),
            },
            CallError::Unavailable(why) => Self::new(
                "notion_unavailable",
                format!(
                    "Quire could not complete the call to Notion ({why}); it is safe to retry \
                     reads, check before retrying writes"
                ),
            ),
            CallError::Notion(NotionError::Timeout { timeout_ms }) => Self::new(
                "notion_unavailable",
                format!(
                    "Notion did not answer within {timeout_ms} ms; it is safe to retry reads, \
                     check before retrying writes (the change may have been applied)"
                ),
            ),
            CallError::Notion(NotionError::Transport(why)) => Self::new(
                "notion_unavailable",
                format!(
                    "Notion could not be reached ({why}); it is safe to retry reads, check \
                     before retrying writes"
                ),
            ),
            CallError::Notion(NotionError::Decode(why)) => Self::new(
                "internal",
                format!("Notion's answer could not be read: {why}"),
            ),
            CallError::Notion(NotionError::Api {
                status,
                code,
                message,
                request_id,
                retry_after,
            }) => map_api_error(status, &code, message, &request_id, retry_after),
        }
    }
}

fn map_api_error(
    status: u16,
    code: &str,
    message: String,
    request_id: &Option<String>,
    retry_after: Option<std::time::Duration>,
) -> ToolError {
    let retry = retry_after.map(whole_seconds);
    let (tool_code, text) = match (code, status) {
        ("object_not_found", _) | (_, 404) => (
            "object_not_found",
            format!(
                "Notion could not find the object ({message}). Check the id; the page may \
                 also exist but not be shared with the integration (share it from Notion's \
                 Connections menu)"
            ),
        ),
        ("unauthorized", _) | (_, 401) => (
            "unauthorized",
            format!(
                "Notion rejected the integration's token ({message}); a workspace admin must \
                 bind a valid Notion integration"
            ),
        ),
        ("restricted_resource", _) | (_, 403) => (
            "restricted_resource",
            format!(
                "the integration lacks the capability for this operation ({message}); enable \
                 it in the integration's settings"
            ),
        ),
        ("conflict_error", _) | (_, 409) => (
            "conflict",
            format!(
                "the object was changed by another request at the same time ({message}); \
                 fetch it again and retry"
            ),
        ),
        ("rate_limited", _) | (_, 429) => {
            let secs = retry.unwrap_or(1);
            return ToolError {
                code: "rate_limited",
                message: with_request_id(
                    format!("Notion rate-limited the integration; retry after {secs} s"),
                    request_id,
                ),
                retry_after_seconds: Some(secs),
            };
        }
        (_, s) if s >= 500 => {
            return ToolError {
                code: "notion_unavailable",
                message: with_request_id(
                    format!(
                        "Notion is unavailable ({status} {code}: {message}); it is safe to \
                         retry reads, check before retrying writes"
                    ),
                    request_id,
                ),
                retry_after_seconds: retry,
            };
        }
        (_, s) if (400..500).contains(&s) => (
            "validation_error",
            format!("Notion rejected the request ({code}): {message}"),
        ),
        _ => (
            "internal",
            format!("unexpected answer from Notion ({status} {code}): {message}"),
        ),
    };
    ToolError {
        code: tool_code,
        message: with_request_id(text, request_id),
        retry_after_seconds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn api(status: u16, code: &str, retry_after: Option<Duration>) -> CallError {
        CallError::Notion(NotionError::Api {
            status,
            code: code.into(),
            message: "the message from Notion".into(),
            request_id: Some("req-1".into()),
            retry_after,
        })
    }

    #[test]
    fn api_errors_map_by_code_and_status() {
        let cases = [
            (404, "object_not_found", "object_not_found"),
            (401, "unauthorized", "unauthorized"),
            (403, "restricted_resource", "restricted_resource"),
            (400, "validation_error", "validation_error"),
            (400, "invalid_json", "validation_error"),
            (400, "invalid_request_url", "validation_error"),
            (413, "payload_too_large", "validation_error"),
            (409, "conflict_error", "conflict"),
            (500, "internal_server_error", "notion_unavailable"),
            (502, "bad_gateway", "notion_unavailable"),
            (503, "service_unavailable", "notion_unavailable"),
            (504, "gateway_timeout", "notion_unavailable"),
            (529, "service_overload", "notion_unavailable"),
            (302, "odd", "internal"),
        ];
        for (status, code, want) in cases {
            let e = ToolError::from(api(status, code, None));
            assert_eq!(e.code, want, "{status} {code}");
            assert!(e.message.contains("req-1"), "{}", e.message);
        }
    }

    #[test]
    fn validation_error_carries_notions_message() {
        let e = ToolError::from(api(400, "validation_error", None));
        assert!(e.message.contains("the message from Notion"));
        assert_eq!(e.retry_after_seconds, None);
    }

    #[test]
    fn not_found_mentions_sharing() {
        let e = ToolError::from(api(404, "object_not_found", None));
        assert!(e.message.contains("shared with the integration"));
    }

    #[test]
    fn rate_limits_carry_retry_after_rounded_up() {
        let e = ToolError::from(api(429, "rate_limited", Some(Duration::from_millis(2500))));
        assert_eq!(e.code, "rate_limited");
        assert_eq!(e.retry_after_seconds, Some(3));
        let e = ToolError::from(api(429, "rate_limited", None));
        assert_eq!(e.retry_after_seconds, Some(1));
        let e = ToolError::from(CallError::RateLimited {
            retry_after_seconds: 7,
        });
        assert_eq!(e.code, "rate_limited");
        assert_eq!(e.retry_after_seconds, Some(7));
        let e = ToolError::from(api(529, "service_overload", Some(Duration::from_secs(4))));
        assert_eq!(e.code, "notion_unavailable");
        assert_eq!(e.retry_after_seconds, Some(4));
    }

    #[test]
    fn a_call_the_shard_owner_could_not_take_asks_to_be_retried() {
        let e = ToolError::from(CallError::Retry {
            why: "the integration's shard is moving between nodes".into(),
            retry_after_seconds: 0,
        });
        assert_eq!(e.code, "notion_unavailable");
        assert_eq!(e.retry_after_seconds, Some(1));
        assert!(e.message.contains("shard is moving"), "{}", e.message);
    }

    #[test]
    fn transport_failures_say_reads_are_safe_to_retry() {
        for err in [
            CallError::Notion(NotionError::Timeout { timeout_ms: 30_000 }),
            CallError::Notion(NotionError::Transport("connection reset".into())),
            CallError::Unavailable("session actor restarting".into()),
        ] {
            let e = ToolError::from(err);
            assert_eq!(e.code, "notion_unavailable");
            assert!(e.message.contains("safe to retry reads"), "{}", e.message);
        }
        let e = ToolError::from(CallError::Notion(NotionError::Decode("eof".into())));
        assert_eq!(e.code, "internal");
    }

    #[test]
    fn to_json_includes_retry_only_when_set() {
        let e = ToolError::from(CallError::RateLimited {
            retry_after_seconds: 2,
        });
        let v = e.to_json();
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["retry_after_seconds"], 2);
        let v = ToolError::invalid_input("page_size", "an integer from 1 to 100").to_json();
        assert_eq!(v["code"], "invalid_input");
        assert!(v.get("retry_after_seconds").is_none());
        assert!(v["message"].as_str().unwrap().contains("page_size"));
    }
}
