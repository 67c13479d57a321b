//! The MCP endpoint: an rmcp `ServerHandler` that lists Quire's Notion tools and runs each
//! call for the authenticated caller through the data plane (tenant actors, the
//! integration's rate limiter, the Notion client).

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use quire_actors::call::CallError;
use quire_actors::notion::NotionRequest;

use crate::app::App;
use crate::auth::Caller;
use crate::tools::{self, NotionGateway, ToolError, ToolOutput, ToolSpec};

/// Scope a token needs for read-only tools.
pub const SCOPE_READ: &str = "notion_workspace_read";
/// Scope a token needs for tools that change Notion.
pub const SCOPE_WRITE: &str = "notion_workspace_write";
/// Scope a token needs to use the MCP endpoint at all.
pub const SCOPE_MCP: &str = "mcp_server_access";

/// One handler per MCP session (rmcp builds a new one for each).
#[derive(Clone)]
pub struct QuireMcp {
    app: Arc<App>,
    tools: Arc<Vec<ToolSpec>>,
}

impl QuireMcp {
    pub fn new(app: Arc<App>, tools: Arc<Vec<ToolSpec>>) -> Self {
        Self { app, tools }
    }
}

/// Builds the Streamable HTTP service mounted at `/mcp`.
pub fn service(app: Arc<App>) -> StreamableHttpService<QuireMcp, LocalSessionManager> {
    let tools = Arc::new(tools::catalog());
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(Duration::from_secs(
        app.config.mcp.session_idle_timeout_secs,
    ));
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(app.config.mcp.allowed_hosts.clone())
        .with_max_request_body_bytes(app.config.mcp.max_request_body_bytes);
    config.cancellation_token = app.shutdown.child_token();
    let factory_app = app.clone();
    StreamableHttpService::new(
        move || Ok(QuireMcp::new(factory_app.clone(), tools.clone())),
        Arc::new(sessions),
        config,
    )
}

/// The MCP `Tool` description of one of our tools.
pub fn to_mcp_tool(spec: &ToolSpec) -> Tool {
    let schema = match &spec.input_schema {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    Tool::new(spec.name, spec.description, Arc::new(schema))
        .with_title(spec.title)
        .with_annotations(
            ToolAnnotations::with_title(spec.title)
                .read_only(spec.read_only)
                .destructive(spec.destructive)
                .idempotent(spec.idempotent)
                .open_world(true),
        )
}

fn error_result(error: &ToolError) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {}",
        error.code, error.message
    ))]);
    result.structured_content = Some(error.to_json());
    result
}

fn success_result(output: ToolOutput) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(output.text)]);
    if output.structured.is_object() {
        result.structured_content = Some(output.structured);
    }
    result
}

/// The data plane as the tool catalogue sees it: every request goes out for one caller.
struct CallerGateway<'a> {
    app: &'a App,
    ctx: quire_actors::call::CallContext,
}

impl NotionGateway for CallerGateway<'_> {
    async fn call(&self, req: NotionRequest) -> Result<serde_json::Value, CallError> {
        self.app.data.call(&self.ctx, req).await
    }
}

impl QuireMcp {
    async fn run_tool(
        &self,
        caller: &Caller,
        session_id: String,
        name: &str,
        arguments: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        let Some(spec) = self.tools.iter().find(|t| t.name == name) else {
            return Err(ToolError {
                code: "unknown_tool",
                message: format!(
                    "there is no tool named {name:?}; list the tools to see their names"
                ),
                retry_after_seconds: None,
            });
        };
        // Authorization comes before the arguments are looked at, so a caller without the
        // right learns nothing about the tool's inputs.
        let needed = if spec.read_only {
            SCOPE_READ
        } else {
            SCOPE_WRITE
        };
        if !caller.scopes.contains(SCOPE_MCP) || !caller.scopes.contains(needed) {
            return Err(ToolError {
                code: "insufficient_scope",
                message: format!(
                    "the token lacks the scope {needed:?} (and {SCOPE_MCP:?}) that {name} needs"
                ),
                retry_after_seconds: None,
            });
        }
        let integration = self
            .app
            .integration_for(caller)
            .map_err(|message| ToolError {
                code: "internal",
                message,
                retry_after_seconds: None,
            })?;
        let gateway = CallerGateway {
            app: &self.app,
            ctx: quire_actors::call::CallContext {
                tenant_id: caller.tenant_id.clone(),
                workspace_id: caller.workspace_id.clone(),
                session_id,
                integration,
            },
        };
        tools::call_tool(&gateway, name, arguments).await
    }
}

impl ServerHandler for QuireMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("quire", env!("CARGO_PKG_VERSION"))
                    .with_title("Quire: governed Notion access for agents"),
            )
            .with_instructions(
                "Tools to search, read and change the Notion workspace bound to your token. \
                 Ids may be given with or without dashes, or as Notion URLs. Errors carry a code \
                 (object_not_found, invalid_input, rate_limited with retry_after_seconds, ...).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(
            self.tools.iter().map(to_mcp_tool).collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let parts = context.extensions.get::<http::request::Parts>();
        let Some(caller) = parts.and_then(|p| p.extensions.get::<Caller>()).cloned() else {
            // The HTTP layer authenticates every request before it reaches rmcp.
            return Err(McpError::internal_error(
                "the request reached MCP unauthenticated",
                None,
            ));
        };
        let session_id = parts
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(|s| format!("session:{s}"))
            .unwrap_or_else(|| format!("principal:{}/{}", caller.tenant_id, caller.principal_id));
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let name = request.name.to_string();
        let result = match self.run_tool(&caller, session_id, &name, arguments).await {
            Ok(output) => success_result(output),
            Err(error) => {
                tracing::debug!(tool = %name, code = error.code, "tool call failed: {}", error.message);
                error_result(&error)
            }
        };
        Ok(result.into())
    }
}
