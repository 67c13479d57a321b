//! The MCP endpoint: an rmcp `ServerHandler` that lists Quire's Notion tools and runs each
//! call for the authenticated caller through the data plane (tenant actors, the
//! integration's rate limiter, the Notion client).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult, ListToolsResult,
    PaginatedRequestParams, Prompt, PromptArgument, PromptMessage, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use tracing::Instrument;

use quire_actors::call::CallError;
use quire_actors::notion::NotionRequest;

use quire_raft::audit::{AuditEvent, Severity};
use quire_raft::ids::{PrincipalId, TenantId, WorkspaceId};
use quire_raft::rbac::{Permission, RoleScope, Subject, authorize_with_extra_roles};

use crate::app::App;
use crate::auth::Caller;
use crate::tools::{self, NotionGateway, ToolError, ToolOutput, ToolSpec};

/// Scope a token needs for read-only tools.
pub const SCOPE_READ: &str = "notion_workspace_read";
/// Scope a token needs for tools that change Notion.
pub const SCOPE_WRITE: &str = "notion_workspace_write";
/// Scope a token needs to use the MCP endpoint at all.
pub const SCOPE_MCP: &str = "mcp_server_access";
/// Scope a token needs for the admin API's operations.
pub const SCOPE_ADMIN: &str = "admin_operations";
/// Scope a token needs to read the audit trail.
pub const SCOPE_AUDIT: &str = "audit_access";
/// Every scope Quire knows, as announced in the protected-resource metadata.
pub const SCOPES_SUPPORTED: [&str; 5] =
    [SCOPE_READ, SCOPE_WRITE, SCOPE_MCP, SCOPE_ADMIN, SCOPE_AUDIT];

/// The OAuth scope a tool needs (besides [`SCOPE_MCP`]).
pub fn scope_for(spec: &ToolSpec) -> &'static str {
    if spec.read_only {
        SCOPE_READ
    } else {
        SCOPE_WRITE
    }
}

/// The permission a tool needs in the caller's workspace.
pub fn permission_for(spec: &ToolSpec) -> Permission {
    if spec.read_only {
        Permission::NotionRead
    } else {
        Permission::NotionWrite
    }
}

/// One handler per MCP session (rmcp builds a new one for each).
#[derive(Clone)]
pub struct QuireMcp {
    app: Arc<App>,
    tools: Arc<Vec<ToolSpec>>,
    /// Counts the session as open in `/metrics` until its handler is dropped.
    _open: Arc<crate::metrics::SessionGuard>,
}

impl QuireMcp {
    pub fn new(app: Arc<App>, tools: Arc<Vec<ToolSpec>>) -> Self {
        let open = Arc::new(app.metrics.session_opened());
        Self {
            app,
            tools,
            _open: open,
        }
    }
}

/// Builds the Streamable HTTP service mounted at `/mcp`: rmcp's sessions in this node's
/// memory over the cluster's replicated session table (`sessions.rs`), so a session opened on
/// one node continues on any other, and each request naming a session is checked against
/// the principal it is bound to.
pub fn service(app: Arc<App>) -> axum::Router {
    let tools = Arc::new(tools::catalog());
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(Duration::from_secs(
        app.config.mcp.session_idle_timeout_secs,
    ));
    let manager = Arc::new(manager);
    let sessions = crate::sessions::McpSessions::new(app.clone(), manager.clone());
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(app.config.mcp.allowed_hosts.clone())
        .with_max_request_body_bytes(app.config.mcp.max_request_body_bytes);
    config.cancellation_token = app.shutdown.child_token();
    config.session_store = Some(Arc::new(crate::sessions::ClusterSessionStore(
        sessions.clone(),
    )));
    let factory_app = app.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(QuireMcp::new(factory_app.clone(), tools.clone())),
        manager,
        config,
    );
    axum::Router::new()
        .fallback_service(mcp)
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            crate::sessions::bind_session,
        ))
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
    app: &'a Arc<App>,
    ctx: quire_actors::call::CallContext,
    /// Requests sent to Notion for the call so far, retries included.
    sent: Arc<AtomicU32>,
}

impl NotionGateway for CallerGateway<'_> {
    async fn call(&self, req: NotionRequest) -> Result<serde_json::Value, CallError> {
        // From the node that owns the integration's shard (this one or a peer).
        crate::forward::call(self.app, &self.ctx, req, self.sent.clone()).await
    }
}

impl QuireMcp {
    async fn run_tool(
        &self,
        caller: &Caller,
        session_id: String,
        name: &str,
        arguments: serde_json::Value,
        sent: Arc<AtomicU32>,
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
        // right learns nothing about the tool's inputs: first the token's scopes, then the
        // principal's roles in the workspace, decided against this node's applied state.
        let needed = scope_for(spec);
        if !caller.scopes.contains(SCOPE_MCP) || !caller.scopes.contains(needed) {
            self.audit_denial(caller, name, &format!("the token lacks the scope {needed}"));
            return Err(ToolError {
                code: "insufficient_scope",
                message: format!(
                    "the token lacks the scope {needed:?} (and {SCOPE_MCP:?}) that {name} needs"
                ),
                retry_after_seconds: None,
            });
        }
        let permission = permission_for(spec);
        let decision = self.app.authorize_caller(caller, permission);
        if !decision.allowed {
            self.audit_denial(caller, name, &decision.reason);
            return Err(ToolError {
                code: "permission_denied",
                message: format!(
                    "{name} needs the permission {permission} in workspace {}: {}",
                    caller.workspace_id, decision.reason
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
            sent,
        };
        tools::call_tool(&gateway, name, arguments).await
    }
}

impl QuireMcp {
    /// Records a refused tool call (without waiting: the caller is refused either way).
    fn audit_denial(&self, caller: &Caller, tool: &str, reason: &str) {
        let mut event = self
            .app
            .audit_event(caller, "tool", tool, None, "denied".to_owned(), None);
        event.severity = Severity::Warning;
        event.justification = Some(reason.to_owned());
        if let Err(e) = self.app.audit.record(event) {
            tracing::warn!(tool, "denial not audited: {e}");
        }
    }
}

/// The authenticated caller of an MCP request (set by the HTTP layer).
fn caller_of(context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the request reached MCP unauthenticated", None))
}

/// A workflow template as an MCP prompt.
fn to_prompt(t: &quire_raft::templates::WorkflowTemplate) -> Prompt {
    let arguments = t
        .arguments
        .iter()
        .map(|a| {
            let arg = PromptArgument::new(a.name.clone()).with_required(a.required);
            match &a.description {
                Some(d) => arg.with_description(d.clone()),
                None => arg,
            }
        })
        .collect();
    let mut prompt = Prompt::new(t.name.clone(), Some(t.description.clone()), Some(arguments));
    prompt.title = Some(t.title.clone());
    prompt
}

/// What a tool call acts on, for the audit trail: the first id-like argument.
fn resource_of(arguments: &serde_json::Value) -> Option<String> {
    [
        "id",
        "page_id",
        "data_source_id",
        "database_id",
        "block_id",
        "parent_id",
        "query",
    ]
    .iter()
    .find_map(|k| arguments.get(*k).and_then(|v| v.as_str()))
    .map(|v| v.chars().take(200).collect())
}

impl App {
    /// Decides `permission` in the caller's workspace against this node's applied state.
    pub fn authorize_caller(
        &self,
        caller: &Caller,
        permission: Permission,
    ) -> quire_raft::rbac::Decision {
        let (Ok(tenant), Ok(principal), Ok(workspace)) = (
            TenantId::new(&caller.tenant_id),
            PrincipalId::new(&caller.principal_id),
            WorkspaceId::new(&caller.workspace_id),
        ) else {
            return quire_raft::rbac::Decision {
                allowed: false,
                reason: "the caller's ids are not valid".to_owned(),
            };
        };
        let subject = Subject::tenant(tenant.clone(), principal);
        let target = RoleScope::Workspace { tenant, workspace };
        let now_ms = self.clock.now_ms();
        self.control.read_applied(|state| {
            // Roles an identity provider's groups map to count for this request only;
            // restrictions and tenant isolation still apply.
            authorize_with_extra_roles(
                state,
                &subject,
                &caller.extra_roles,
                permission,
                &target,
                now_ms,
            )
        })
    }

    /// An audit event for something `caller` did on this node now.
    pub fn audit_event(
        &self,
        caller: &Caller,
        kind: &str,
        action: &str,
        resource: Option<String>,
        outcome: String,
        latency_ms: Option<u64>,
    ) -> AuditEvent {
        AuditEvent {
            at_ms: self.clock.now_ms(),
            node: self.config.node.id,
            principal: format!("{}/{}", caller.tenant_id, caller.principal_id),
            tenant: TenantId::new(&caller.tenant_id).ok(),
            workspace: Some(caller.workspace_id.clone()),
            kind: kind.to_owned(),
            action: action.to_owned(),
            resource,
            outcome,
            latency_ms,
            notion_requests: None,
            justification: None,
            severity: Severity::Info,
        }
    }
}

impl ServerHandler for QuireMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .build(),
        )
        .with_server_info(
            Implementation::new("quire", env!("CARGO_PKG_VERSION"))
                .with_title("Quire: governed Notion access for agents"),
        )
        .with_instructions(
            "Tools to search, read and change the Notion workspace bound to your token. \
                 Ids may be given with or without dashes, or as Notion URLs. Errors carry a code \
                 (object_not_found, invalid_input, rate_limited with retry_after_seconds, ...). \
                 The prompts are your workspace's workflow templates.",
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

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let caller = caller_of(&context)?;
        // A caller that may not run workflows is offered none.
        if !self
            .app
            .authorize_caller(&caller, Permission::WorkflowRun)
            .allowed
        {
            return Ok(ListPromptsResult::with_all_items(Vec::new()));
        }
        let (Ok(tenant), Ok(workspace)) = (
            TenantId::new(&caller.tenant_id),
            WorkspaceId::new(&caller.workspace_id),
        ) else {
            return Ok(ListPromptsResult::with_all_items(Vec::new()));
        };
        let prompts = self.app.control.read_applied(|state| {
            state
                .templates()
                .of(&tenant, &workspace)
                .filter(|t| !t.retired)
                .map(to_prompt)
                .collect()
        });
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let _in_flight = self.app.metrics.call_started();
        let caller = caller_of(&context)?;
        let name = request.name.clone();
        let action = format!("run:{name}");
        // Authorization first: a caller without the right learns nothing of the template.
        let decision = self.app.authorize_caller(&caller, Permission::WorkflowRun);
        if !decision.allowed {
            self.audit_denial(&caller, &action, &decision.reason);
            return Err(McpError::invalid_request(
                format!(
                    "permission_denied: running a workflow needs {} in workspace {}: {}",
                    Permission::WorkflowRun,
                    caller.workspace_id,
                    decision.reason
                ),
                None,
            ));
        }
        let (Ok(tenant), Ok(workspace)) = (
            TenantId::new(&caller.tenant_id),
            WorkspaceId::new(&caller.workspace_id),
        ) else {
            return Err(McpError::internal_error(
                "the caller's ids are not valid",
                None,
            ));
        };
        let template = self.app.control.read_applied(|state| {
            state
                .templates()
                .get(&tenant, &workspace, &name)
                .filter(|t| !t.retired)
                .cloned()
        });
        let Some(template) = template else {
            return Err(McpError::invalid_params(
                format!("there is no workflow template {name:?}; list the prompts to see them"),
                None,
            ));
        };
        let values: std::collections::BTreeMap<String, String> = request
            .arguments
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect();
        let rendered = quire_raft::templates::render(&template, &values)
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        // Running a workflow is an audited action: no record, no instructions.
        let event = self.app.audit_event(
            &caller,
            "workflow",
            &action,
            Some(format!("template:{}@v{}", template.name, template.version)),
            "ok".to_owned(),
            None,
        );
        if let Err(e) = self.app.audit.commit(event).await {
            return Err(McpError::internal_error(
                format!("audit_unavailable: the run could not be audited, so it is refused: {e}"),
                None,
            ));
        }
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            rmcp::model::Role::User,
            rendered,
        )])
        .with_description(template.description.clone())
        .into())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let _in_flight = self.app.metrics.call_started();
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
        // Logs of the call carry who made it, where, and in which MCP session.
        let span = tracing::info_span!(
            "tool_call",
            node = self.app.config.node.id,
            tenant = %caller.tenant_id,
            workspace = %caller.workspace_id,
            principal = %caller.principal_id,
            session = %session_id,
            tool = %name,
        );
        let result = self
            .call_tool_audited(&caller, session_id, name, arguments)
            .instrument(span)
            .await;
        Ok(result.into())
    }
}

impl QuireMcp {
    /// Runs a tool call, commits its audit record, and counts it in the node's metrics.
    async fn call_tool_audited(
        &self,
        caller: &Caller,
        session_id: String,
        name: String,
        arguments: serde_json::Value,
    ) -> CallToolResult {
        let started = tokio::time::Instant::now();
        let tool_label = if self.tools.iter().any(|t| t.name == name) {
            name.as_str()
        } else {
            "unknown"
        };
        let result = self
            .call_tool_inner(caller, session_id, &name, arguments)
            .await;
        let took = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code,
        };
        self.app.metrics.tool_call(tool_label, outcome, took);
        tracing::info!(
            outcome,
            latency_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            "tool call"
        );
        match result {
            Ok(output) => success_result(output),
            Err(error) => error_result(&error),
        }
    }

    async fn call_tool_inner(
        &self,
        caller: &Caller,
        session_id: String,
        name: &str,
        arguments: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        let resource = resource_of(&arguments);
        let started = tokio::time::Instant::now();
        let sent = Arc::new(AtomicU32::new(0));
        let outcome = self
            .run_tool(caller, session_id, name, arguments, sent.clone())
            .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let denied = matches!(&outcome, Err(e) if e.code == "permission_denied" || e.code == "insufficient_scope" || e.code == "unknown_tool");
        if !denied {
            // Fail closed: the agent gets the result only once its audit record committed.
            let mut event = self.app.audit_event(
                caller,
                "tool",
                name,
                resource,
                match &outcome {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("error:{}", e.code),
                },
                Some(latency_ms),
            );
            event.notion_requests = Some(sent.load(Ordering::Relaxed));
            if let Err(e) = self.app.audit.commit(event).await {
                tracing::warn!(tool = %name, "tool call withheld: {e}");
                return Err(ToolError {
                    code: "audit_unavailable",
                    message: format!(
                        "the call's audit record could not be committed, so its result is withheld: {e}"
                    ),
                    retry_after_seconds: Some(1),
                });
            }
        }
        if let Err(error) = &outcome {
            tracing::debug!(tool = %name, code = error.code, "tool call failed: {}", error.message);
        }
        outcome
    }
}
