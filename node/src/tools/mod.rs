//! The MCP tool catalogue: the Notion tools agents call, their JSON input schemas and
//! annotations, strict argument validation, execution through a [`NotionGateway`] the node
//! supplies, and the rendering of Notion's answers as Markdown for agents.
//!
//! This module knows Notion's API shapes and the data plane's [`CallError`]; it does not
//! know rmcp, HTTP, authentication or how a request reaches Notion (rate limits, retries,
//! tenants): the gateway owns that. Every argument is checked before the first request,
//! so bad input gets `invalid_input` and changes nothing.
//!
//! [`CallError`]: quire_actors::call::CallError

mod catalog;
mod error;
mod handlers;
pub mod ids;
pub mod markdown;
mod validate;

use quire_actors::call::CallError;
use quire_actors::notion::NotionRequest;
use serde_json::Value;

pub use catalog::catalog;
pub use error::ToolError;
pub use handlers::{MAX_FETCH_BLOCKS, MAX_FETCH_DEPTH, MAX_FETCH_REQUESTS};

/// How tools reach Notion: the node's implementation routes the request through the
/// tenant's actors and the integration's rate limiter; tests send it straight to a
/// sandbox. Returns Notion's JSON answer.
///
/// `req.path` holds only validated, normalised ids; `req.query` values are raw (a cursor
/// from Notion, an id) and the gateway URL-encodes them.
pub trait NotionGateway: Send + Sync {
    fn call(
        &self,
        req: NotionRequest,
    ) -> impl std::future::Future<Output = Result<Value, CallError>> + Send;
}

/// One tool as MCP lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// A JSON Schema of `type: object`; arguments are validated against it.
    pub input_schema: Value,
    /// Only reads from Notion.
    pub read_only: bool,
    /// May remove or overwrite existing content.
    pub destructive: bool,
    /// Repeating the same call has no further effect.
    pub idempotent: bool,
}

/// A tool's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// What the agent reads: Markdown or compact JSON.
    pub text: String,
    /// The same result as a JSON object, for clients that read structured content.
    pub structured: Value,
}

/// Validates `arguments` against the tool's schema, then runs it. `null` arguments count
/// as `{}`.
pub async fn call_tool<G: NotionGateway>(
    gateway: &G,
    name: &str,
    arguments: Value,
) -> Result<ToolOutput, ToolError> {
    let spec = catalog()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ToolError::unknown_tool(name))?;
    tracing::debug!(tool = spec.name, "tool call");
    let arguments = if arguments.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        arguments
    };
    validate::validate(&spec.input_schema, &arguments)?;
    handlers::run(gateway, spec.name, &arguments).await
}

#[cfg(test)]
mod tests;
