//! Admin routes for workflow templates, under `/tenants/{t}/workspaces/{w}/templates`:
//! create, list, read, edit (with the version the editor saw) and retire. Changes are
//! `AsAdmin` commands (`workspace.templates.manage`, decided and audited by `apply`); reads
//! need `tenant.read` or `workspace.read`. Agents see the live templates as MCP prompts.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use serde_json::{Value, json};

use super::access::Denial;
use quire_raft::command::Command;
use quire_raft::ids::{TenantId, WorkspaceId};
use quire_raft::templates::{TemplateArgument, TemplateCommand, WorkflowTemplate};

use super::access;
use super::body::{Body, ReadParams};
use super::error::AdminError;
use super::routes::{
    ApiResult, Caller, Shared, bytes, created, id, justification, justification_only, ok, path,
    read, refuse, write,
};
use crate::app::App;

/// The template routes (merged into the admin router).
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/tenants/{tenant}/workspaces/{workspace}/templates",
            get(list_templates).post(create_template),
        )
        .route(
            "/tenants/{tenant}/workspaces/{workspace}/templates/{name}",
            get(get_template).put(edit_template).delete(retire_template),
        )
}

fn template_json(t: &WorkflowTemplate) -> Value {
    json!({
        "name": t.name,
        "title": t.title,
        "description": t.description,
        "arguments": t.arguments.iter().map(|a| json!({
            "name": a.name, "description": a.description, "required": a.required,
        })).collect::<Vec<_>>(),
        "body": t.body,
        "version": t.version,
        "retired": t.retired,
        "updated_by": t.updated_by,
        "updated_at_ms": t.updated_at_ms,
    })
}

fn arguments(value: Option<Value>) -> Result<Vec<TemplateArgument>, AdminError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    serde_json::from_value::<Vec<TemplateArgument>>(value).map_err(|e| {
        AdminError::invalid(
            "arguments",
            format!("must be a list of {{name, description?, required?}}: {e}"),
        )
    })
}

fn ids(tenant: String, workspace: String) -> Result<(TenantId, WorkspaceId), AdminError> {
    Ok((
        id("tenant", tenant, TenantId::new)?,
        id("workspace", workspace, WorkspaceId::new)?,
    ))
}

/// The template's fields from a create or edit body.
struct Fields {
    title: String,
    description: String,
    arguments: Vec<TemplateArgument>,
    body: String,
}

fn fields(b: &mut Body) -> Result<Fields, AdminError> {
    Ok(Fields {
        title: b.string("title")?,
        description: b.opt_string("description")?.unwrap_or_default(),
        arguments: arguments(b.opt_value("arguments"))?,
        body: b.string("body")?,
    })
}

async fn create_template(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (tenant, workspace) = {
        let (t, w) = path(p)?;
        ids(t, w)?
    };
    let mut b = Body::parse(
        &bytes(body)?,
        &[
            "name",
            "title",
            "description",
            "arguments",
            "body",
            "justification",
        ],
    )?;
    let name = b.string("name")?;
    let f = fields(&mut b)?;
    let why = justification(&mut b)?;
    let cmd = TemplateCommand::Put {
        tenant: tenant.clone(),
        workspace: workspace.clone(),
        name: name.clone(),
        title: f.title,
        description: f.description,
        arguments: f.arguments,
        body: f.body,
        expected_version: None,
        at_ms: app.clock.now_ms(),
    };
    write(&app, &caller, Command::Template(cmd), why).await?;
    let found = app
        .read(|s| {
            s.templates()
                .get(&tenant, &workspace, &name)
                .map(template_json)
        })
        .await?;
    Ok(created(found.unwrap_or_else(|| json!({ "name": name }))))
}

async fn edit_template(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (t, w, name) = path(p)?;
    let (tenant, workspace) = ids(t, w)?;
    let mut b = Body::parse(
        &bytes(body)?,
        &[
            "title",
            "description",
            "arguments",
            "body",
            "version",
            "justification",
        ],
    )?;
    let f = fields(&mut b)?;
    let version = b
        .opt_u64("version", 1, u64::MAX)?
        .ok_or_else(|| AdminError::invalid("version", "the version being edited is required"))?;
    let why = justification(&mut b)?;
    let cmd = TemplateCommand::Put {
        tenant: tenant.clone(),
        workspace: workspace.clone(),
        name: name.clone(),
        title: f.title,
        description: f.description,
        arguments: f.arguments,
        body: f.body,
        expected_version: Some(version),
        at_ms: app.clock.now_ms(),
    };
    write(&app, &caller, Command::Template(cmd), why).await?;
    let found = app
        .read(|s| {
            s.templates()
                .get(&tenant, &workspace, &name)
                .map(template_json)
        })
        .await?;
    Ok(ok(found.unwrap_or_else(|| json!({ "name": name }))))
}

async fn retire_template(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (t, w, name) = path(p)?;
    let (tenant, workspace) = ids(t, w)?;
    let why = justification_only(body)?;
    let cmd = TemplateCommand::Retire {
        tenant,
        workspace,
        name: name.clone(),
    };
    let changed = write(&app, &caller, Command::Template(cmd), why).await?;
    Ok(ok(
        json!({ "name": name, "retired": true, "changed": changed }),
    ))
}

async fn list_templates(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (t, w) = path(p)?;
    let (tenant, workspace) = ids(t, w)?;
    let params = ReadParams::parse(q.as_deref(), false)?;
    let now_ms = app.clock.now_ms();
    let found = read(&app, &params, |s| {
        access::check_workspace(&caller, s, &tenant, &workspace, now_ms)?;
        Ok(s.workspace(&tenant, &workspace).map(|_| {
            s.templates()
                .of(&tenant, &workspace)
                .map(template_json)
                .collect::<Vec<_>>()
        }))
    })
    .await?
    .map_err(|d: Denial| {
        refuse(
            &app,
            &caller,
            d,
            &format!(
                "GET /tenants/{}/workspaces/{}/templates",
                tenant.as_str(),
                workspace.as_str()
            ),
        )
    })?;
    match found {
        None => Err(missing_workspace(&tenant, &workspace)),
        Some(list) => Ok(ok(json!({ "templates": list }))),
    }
}

async fn get_template(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (t, w, name) = path(p)?;
    let (tenant, workspace) = ids(t, w)?;
    let params = ReadParams::parse(q.as_deref(), false)?;
    let now_ms = app.clock.now_ms();
    let found = read(&app, &params, |s| {
        access::check_workspace(&caller, s, &tenant, &workspace, now_ms)?;
        Ok(s.workspace(&tenant, &workspace).map(|_| {
            s.templates()
                .get(&tenant, &workspace, &name)
                .map(template_json)
        }))
    })
    .await?
    .map_err(|d: Denial| {
        refuse(
            &app,
            &caller,
            d,
            &format!(
                "GET /tenants/{}/workspaces/{}/templates/{name}",
                tenant.as_str(),
                workspace.as_str()
            ),
        )
    })?;
    match found {
        None => Err(missing_workspace(&tenant, &workspace)),
        Some(None) => Err(AdminError::not_found(format!(
            "template {name:?} not found"
        ))),
        Some(Some(v)) => Ok(ok(v)),
    }
}

fn missing_workspace(tenant: &TenantId, workspace: &WorkspaceId) -> AdminError {
    AdminError::not_found(format!(
        "workspace {:?} in tenant {:?} not found",
        workspace.as_str(),
        tenant.as_str()
    ))
}
