//! `quire serve --sandbox`: the Notion sandbox in-process with its demo content, and a demo
//! tenant, workspace, integration and user provisioned through the control plane, so an
//! agent can connect with the token written to `<data-dir>/client.json`.

use std::path::Path;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use quire_raft::command::Command;
use quire_raft::ids::{IntegrationId, PrincipalId, TenantId, TokenId, WorkspaceId};
use quire_raft::seal::integration_aad;
use quire_raft::state::Budget;

use crate::app::App;
use crate::config::Config;
use crate::mcp::{SCOPE_MCP, SCOPE_READ, SCOPE_WRITE};

pub const DEMO_TENANT: &str = "demo";
pub const DEMO_WORKSPACE: &str = "demo";
pub const DEMO_INTEGRATION: &str = "sandbox-alpha";
pub const DEMO_PRINCIPAL: &str = "demo-user";

/// The sandbox running beside the node.
pub struct RunningSandbox {
    pub url: String,
    pub sandbox: quire_sandbox::Sandbox,
    _task: tokio::task::JoinHandle<()>,
}

/// What an MCP client needs, written to `<data-dir>/client.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientFile {
    pub mcp_url: String,
    pub token: String,
    pub sandbox_url: String,
    /// An admin token for the admin API (`quire ctl --token`), kept across restarts while it
    /// stays valid.
    #[serde(default)]
    pub admin_token: Option<String>,
}

pub async fn start(config: &Config) -> anyhow::Result<RunningSandbox> {
    let listener = tokio::net::TcpListener::bind(config.sandbox.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the Notion sandbox (set sandbox.listen)",
                config.sandbox.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let rate_limit =
        (config.sandbox.rate_limit_per_second > 0).then(|| quire_sandbox::RateLimitConfig {
            requests_per_second: f64::from(config.sandbox.rate_limit_per_second),
            capacity: config.sandbox.rate_limit_capacity,
        });
    let sandbox = quire_sandbox::Sandbox::new(quire_sandbox::SandboxConfig {
        seed: config.sandbox.seed,
        rate_limit,
        ..Default::default()
    });
    let serving = sandbox.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = quire_sandbox::serve(serving, listener).await {
            tracing::error!("the Notion sandbox stopped: {e}");
        }
    });
    let url = format!("http://{addr}");
    tracing::info!(%url, "Notion sandbox serving");
    Ok(RunningSandbox {
        url,
        sandbox,
        _task: task,
    })
}

fn id<T>(
    make: impl FnOnce(String) -> Result<T, quire_raft::ids::IdError>,
    value: &str,
) -> anyhow::Result<T> {
    make(value.to_owned()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Applies `cmd`; an object that already exists (a restart) is fine.
async fn ensure(app: &App, cmd: Command) -> anyhow::Result<()> {
    match app.control.write(cmd).await {
        Ok(_) => Ok(()),
        Err(quire_raft::control::WriteError::Rejected(
            quire_raft::command::ApplyError::AlreadyExists(_),
        )) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot provision the sandbox demo: {e}")),
    }
}

/// Creates the demo tenant, integration, workspace and user if absent, and makes sure
/// `client.json` holds a token that works.
pub async fn provision(app: &App, sandbox: &RunningSandbox) -> anyhow::Result<ClientFile> {
    let tenant: TenantId = id(TenantId::new, DEMO_TENANT)?;
    let workspace: WorkspaceId = id(WorkspaceId::new, DEMO_WORKSPACE)?;
    let integration: IntegrationId = id(IntegrationId::new, DEMO_INTEGRATION)?;
    let principal: PrincipalId = id(PrincipalId::new, DEMO_PRINCIPAL)?;
    let alpha = sandbox
        .sandbox
        .integrations()
        .into_iter()
        .find(|i| i.name == "alpha")
        .context("the sandbox has no integration named alpha")?;
    let mut rng = StdRng::from_os_rng();

    ensure(
        app,
        Command::CreateTenant {
            tenant: tenant.clone(),
            display_name: "Demo tenant".into(),
        },
    )
    .await?;
    let sealed_token = app.master_key.seal(
        alpha.token.as_bytes(),
        &integration_aad(DEMO_TENANT, DEMO_INTEGRATION),
        &mut rng,
    )?;
    ensure(
        app,
        Command::AddIntegration {
            tenant: tenant.clone(),
            integration: integration.clone(),
            display_name: "Notion sandbox (alpha)".into(),
            sealed_token,
            budget: Budget {
                requests_per_second: app.config.notion.default_requests_per_second,
                burst: app.config.notion.default_burst,
            },
        },
    )
    .await?;
    ensure(
        app,
        Command::CreateWorkspace {
            tenant: tenant.clone(),
            workspace: workspace.clone(),
            display_name: "Demo workspace".into(),
            integration: integration.clone(),
        },
    )
    .await?;
    ensure(
        app,
        Command::CreatePrincipal {
            tenant: tenant.clone(),
            principal: principal.clone(),
            display_name: "Demo user".into(),
        },
    )
    .await?;
    ensure(
        app,
        Command::GrantWorkspace {
            tenant: tenant.clone(),
            principal: principal.clone(),
            workspace: workspace.clone(),
        },
    )
    .await?;

    crate::init::ensure_jwt_signing_key(&app.router, &app.master_key, app.clock.now_ms()).await?;

    let path = app.config.node.data_dir.join("client.json");
    let mcp_url = format!("{}/mcp", app.config.public_url());
    let existing = read_client_file(&path);
    // Keep the admin token of an earlier start if it still authenticates.
    let admin_token = match existing
        .as_ref()
        .and_then(|f| f.admin_token.clone())
        .filter(|t| crate::admin::authenticate_admin(app, t).is_some())
    {
        Some(token) => token,
        None => crate::admin::issue_admin_token(app, "sandbox admin")
            .await
            .map_err(|e| anyhow::anyhow!("cannot issue the sandbox admin token: {e}"))?,
    };
    // Keep the token of an earlier start if it still authenticates.
    if let Some(existing) = existing
        && app.authenticate(&existing.token).await.is_some()
    {
        let file = ClientFile {
            mcp_url,
            token: existing.token,
            sandbox_url: sandbox.url.clone(),
            admin_token: Some(admin_token),
        };
        write_client_file(&path, &file)?;
        print_client(&file, &path);
        return Ok(file);
    }
    let mut secret_bytes = [0u8; 32];
    rng.fill_bytes(&mut secret_bytes);
    let secret = format!("qk_{}", hex::encode(secret_bytes));
    let mut token_id_bytes = [0u8; 6];
    rng.fill_bytes(&mut token_id_bytes);
    let token_id: TokenId = id(
        TokenId::new,
        &format!("demo-{}", hex::encode(token_id_bytes)),
    )?;
    app.control
        .write(Command::IssueToken {
            tenant,
            principal,
            workspace,
            token_id,
            secret_hash: quire_raft::seal::hash_api_token(&secret),
            scopes: [SCOPE_MCP, SCOPE_READ, SCOPE_WRITE]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            issued_at_ms: app.clock.now_ms(),
            expires_at_ms: None,
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot issue the demo token: {e}"))?;
    let file = ClientFile {
        mcp_url,
        token: secret,
        sandbox_url: sandbox.url.clone(),
        admin_token: Some(admin_token),
    };
    write_client_file(&path, &file)?;
    print_client(&file, &path);
    Ok(file)
}

fn print_client(file: &ClientFile, path: &Path) {
    println!("Notion sandbox: {}", file.sandbox_url);
    println!("MCP URL:        {}", file.mcp_url);
    println!("Bearer token:   {}", file.token);
    if let Some(admin) = &file.admin_token {
        println!("Admin token:    {admin}  (quire ctl --token, or QUIRE_ADMIN_TOKEN)");
    }
    println!("(also written to {})", path.display());
}

fn read_client_file(path: &Path) -> Option<ClientFile> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_client_file(path: &Path, file: &ClientFile) -> anyhow::Result<()> {
    crate::init::write_secret_file(path, &serde_json::to_string_pretty(file)?)
}
