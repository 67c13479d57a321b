//! Workflow templates: named, parameterised instructions a workspace manager keeps in a
//! workspace, which agents see as MCP prompts. A template's body may name its arguments as
//! `{{argument}}`; [`render`] fills them in. Templates are created, edited (with the version
//! the editor saw, so two editors cannot silently overwrite each other) and retired through
//! [`TemplateCommand`]s, decided by `apply` like everything else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{ApplyError, CommandOutput, check_display_name};
use crate::ids::{TenantId, WorkspaceId, validate_id};

/// Most templates (live or retired) in one workspace.
pub const MAX_TEMPLATES_PER_WORKSPACE: usize = 200;
/// Most arguments of one template.
pub const MAX_TEMPLATE_ARGUMENTS: usize = 20;
/// Longest template body, in characters.
pub const MAX_TEMPLATE_BODY_CHARS: usize = 20_000;
/// Longest description (of a template or an argument), in characters.
pub const MAX_TEMPLATE_DESCRIPTION_CHARS: usize = 1_000;
/// Longest argument value accepted when rendering, in characters.
pub const MAX_ARGUMENT_VALUE_CHARS: usize = 10_000;

/// One argument of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateArgument {
    /// Its name (`[a-z0-9_-]`, as ids).
    pub name: String,
    /// What to give.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether a run must give it.
    #[serde(default)]
    pub required: bool,
}

/// A workflow template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowTemplate {
    /// Its name, unique in the workspace (the MCP prompt's name).
    pub name: String,
    /// Human-readable title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// Its arguments.
    pub arguments: Vec<TemplateArgument>,
    /// The instructions, with `{{argument}}` placeholders.
    pub body: String,
    /// 1 when created, +1 with each edit.
    pub version: u64,
    /// Retired templates are kept (for the audit trail's sake) but no longer offered or run.
    pub retired: bool,
    /// Who last changed it.
    pub updated_by: String,
    /// When (stamped by the proposer).
    pub updated_at_ms: u64,
}

/// A change to a workspace's templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TemplateCommand {
    /// Creates a template (`expected_version` absent) or edits one (`expected_version` is the
    /// version the editor saw; a different current version is a conflict).
    Put {
        /// Owning tenant.
        tenant: TenantId,
        /// The workspace.
        workspace: WorkspaceId,
        /// Template name.
        name: String,
        /// Title.
        title: String,
        /// Description.
        description: String,
        /// Arguments.
        arguments: Vec<TemplateArgument>,
        /// Body.
        body: String,
        /// For an edit: the version being replaced.
        expected_version: Option<u64>,
        /// When (stamped by the proposer).
        at_ms: u64,
    },
    /// Retires a template (idempotent).
    Retire {
        /// Owning tenant.
        tenant: TenantId,
        /// The workspace.
        workspace: WorkspaceId,
        /// Template name.
        name: String,
    },
}

impl TemplateCommand {
    /// Tenant and workspace it changes.
    pub fn scope(&self) -> (&TenantId, &WorkspaceId) {
        match self {
            TemplateCommand::Put {
                tenant, workspace, ..
            }
            | TemplateCommand::Retire {
                tenant, workspace, ..
            } => (tenant, workspace),
        }
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        match self {
            TemplateCommand::Put { name, .. } | TemplateCommand::Retire { name, .. } => name,
        }
    }
}

/// Templates by tenant, workspace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateState {
    pub(crate) by_workspace:
        BTreeMap<TenantId, BTreeMap<WorkspaceId, BTreeMap<String, WorkflowTemplate>>>,
}

impl TemplateState {
    /// A workspace's templates (live and retired), by name.
    pub fn of(
        &self,
        tenant: &TenantId,
        workspace: &WorkspaceId,
    ) -> impl Iterator<Item = &WorkflowTemplate> {
        self.by_workspace
            .get(tenant)
            .and_then(|w| w.get(workspace))
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// One template.
    pub fn get(
        &self,
        tenant: &TenantId,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Option<&WorkflowTemplate> {
        self.by_workspace.get(tenant)?.get(workspace)?.get(name)
    }

    /// Forgets a tenant's templates.
    pub(crate) fn remove_tenant(&mut self, tenant: &TenantId) {
        self.by_workspace.remove(tenant);
    }
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), ApplyError> {
    let chars = text.chars().count();
    if chars > max {
        return Err(ApplyError::Invalid(format!(
            "{what} is {chars} characters, more than {max}"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApplyError::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// The `{{name}}` placeholders of a body, in order of first appearance.
pub fn placeholders(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let name = after[..end].trim();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &after[end + 2..];
    }
    out
}

fn check_put(
    name: &str,
    title: &str,
    description: &str,
    arguments: &[TemplateArgument],
    body: &str,
) -> Result<(), ApplyError> {
    validate_id("template", name).map_err(|e| ApplyError::Invalid(e.to_string()))?;
    check_display_name("template", title)?;
    check_text(
        "template description",
        description,
        MAX_TEMPLATE_DESCRIPTION_CHARS,
    )?;
    if body.trim().is_empty() {
        return Err(ApplyError::Invalid(
            "a template body must not be blank".into(),
        ));
    }
    check_text("template body", body, MAX_TEMPLATE_BODY_CHARS)?;
    if arguments.len() > MAX_TEMPLATE_ARGUMENTS {
        return Err(ApplyError::Invalid(format!(
            "a template has at most {MAX_TEMPLATE_ARGUMENTS} arguments, not {}",
            arguments.len()
        )));
    }
    for (i, a) in arguments.iter().enumerate() {
        validate_id("template argument", &a.name)
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        if arguments[..i].iter().any(|b| b.name == a.name) {
            return Err(ApplyError::Invalid(format!(
                "template argument {:?} is declared twice",
                a.name
            )));
        }
        if let Some(d) = &a.description {
            check_text("argument description", d, MAX_TEMPLATE_DESCRIPTION_CHARS)?;
        }
    }
    for p in placeholders(body) {
        if !arguments.iter().any(|a| a.name == p) {
            return Err(ApplyError::Invalid(format!(
                "the body uses {{{{{p}}}}}, which is not a declared argument"
            )));
        }
    }
    Ok(())
}

/// Applies a template command for `actor` (who is recorded as the last editor).
pub(crate) fn apply(
    templates: &mut TemplateState,
    workspace_exists: bool,
    actor: &str,
    cmd: &TemplateCommand,
) -> Result<CommandOutput, ApplyError> {
    let (tenant, workspace) = cmd.scope();
    if !workspace_exists {
        return Err(ApplyError::NotFound(format!(
            "workspace {:?} in tenant {:?}",
            workspace.as_str(),
            tenant.as_str()
        )));
    }
    match cmd {
        TemplateCommand::Put {
            name,
            title,
            description,
            arguments,
            body,
            expected_version,
            at_ms,
            ..
        } => {
            check_put(name, title, description, arguments, body)?;
            let existing = templates.get(tenant, workspace, name);
            let version = match (existing, expected_version) {
                (None, None) => {
                    if templates.of(tenant, workspace).count() >= MAX_TEMPLATES_PER_WORKSPACE {
                        return Err(ApplyError::LimitReached(format!(
                            "workspace {:?} already has {MAX_TEMPLATES_PER_WORKSPACE} templates",
                            workspace.as_str()
                        )));
                    }
                    1
                }
                (Some(_), None) => {
                    return Err(ApplyError::AlreadyExists(format!("template {name:?}")));
                }
                (None, Some(_)) => {
                    return Err(ApplyError::NotFound(format!("template {name:?}")));
                }
                (Some(t), Some(_)) if t.retired => {
                    return Err(ApplyError::Conflict(format!(
                        "template {name:?} is retired; create a new one under another name"
                    )));
                }
                (Some(t), Some(v)) if t.version != *v => {
                    return Err(ApplyError::Conflict(format!(
                        "template {name:?} is at version {}, not {v}: someone edited it since; read it again",
                        t.version
                    )));
                }
                (Some(t), Some(_)) => t.version + 1,
            };
            templates
                .by_workspace
                .entry(tenant.clone())
                .or_default()
                .entry(workspace.clone())
                .or_default()
                .insert(
                    name.clone(),
                    WorkflowTemplate {
                        name: name.clone(),
                        title: title.clone(),
                        description: description.clone(),
                        arguments: arguments.clone(),
                        body: body.clone(),
                        version,
                        retired: false,
                        updated_by: actor.to_owned(),
                        updated_at_ms: *at_ms,
                    },
                );
            Ok(CommandOutput::Done)
        }
        TemplateCommand::Retire { name, .. } => {
            let t = templates
                .by_workspace
                .get_mut(tenant)
                .and_then(|w| w.get_mut(workspace))
                .and_then(|m| m.get_mut(name))
                .ok_or_else(|| ApplyError::NotFound(format!("template {name:?}")))?;
            if t.retired {
                return Ok(CommandOutput::Unchanged);
            }
            t.retired = true;
            t.updated_by = actor.to_owned();
            Ok(CommandOutput::Done)
        }
    }
}

/// Why a template cannot be run with the given arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// The body with every `{{argument}}` replaced by its value: required arguments must be
/// given, unknown ones are refused, optional ones left out become empty.
pub fn render(
    template: &WorkflowTemplate,
    values: &BTreeMap<String, String>,
) -> Result<String, RenderError> {
    for key in values.keys() {
        if !template.arguments.iter().any(|a| &a.name == key) {
            return Err(RenderError(format!(
                "template {:?} has no argument {key:?}",
                template.name
            )));
        }
    }
    for (key, value) in values {
        if value.chars().count() > MAX_ARGUMENT_VALUE_CHARS {
            return Err(RenderError(format!(
                "argument {key:?} is longer than {MAX_ARGUMENT_VALUE_CHARS} characters"
            )));
        }
    }
    if let Some(missing) = template
        .arguments
        .iter()
        .find(|a| a.required && !values.contains_key(&a.name))
    {
        return Err(RenderError(format!(
            "template {:?} needs the argument {:?}",
            template.name, missing.name
        )));
    }
    let mut out = String::with_capacity(template.body.len());
    let mut rest = template.body.as_str();
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = after[..end].trim();
        out.push_str(values.get(name).map_or("", String::as_str));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }
    fn w(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    fn put(name: &str, body: &str, expected_version: Option<u64>) -> TemplateCommand {
        TemplateCommand::Put {
            tenant: t("acme"),
            workspace: w("docs"),
            name: name.into(),
            title: "Weekly summary".into(),
            description: "Summarise a project's pages".into(),
            arguments: vec![
                TemplateArgument {
                    name: "project".into(),
                    description: Some("the project".into()),
                    required: true,
                },
                TemplateArgument {
                    name: "tone".into(),
                    description: None,
                    required: false,
                },
            ],
            body: body.into(),
            expected_version,
            at_ms: 5,
        }
    }

    #[test]
    fn create_edit_with_version_and_retire() {
        let mut s = TemplateState::default();
        let body = "Summarise {{project}} in a {{ tone }} tone.";
        apply(&mut s, true, "acme/wm", &put("weekly", body, None)).unwrap();
        assert!(matches!(
            apply(&mut s, true, "acme/wm", &put("weekly", body, None)),
            Err(ApplyError::AlreadyExists(_))
        ));
        assert!(matches!(
            apply(&mut s, true, "acme/wm", &put("weekly", body, Some(7))),
            Err(ApplyError::Conflict(_))
        ));
        apply(
            &mut s,
            true,
            "acme/other",
            &put("weekly", "New {{project}}", Some(1)),
        )
        .unwrap();
        let tpl = s.get(&t("acme"), &w("docs"), "weekly").unwrap();
        assert_eq!((tpl.version, tpl.updated_by.as_str()), (2, "acme/other"));
        let retire = TemplateCommand::Retire {
            tenant: t("acme"),
            workspace: w("docs"),
            name: "weekly".into(),
        };
        assert_eq!(
            apply(&mut s, true, "x", &retire).unwrap(),
            CommandOutput::Done
        );
        assert_eq!(
            apply(&mut s, true, "x", &retire).unwrap(),
            CommandOutput::Unchanged
        );
        assert!(matches!(
            apply(&mut s, true, "x", &put("weekly", body, Some(2))),
            Err(ApplyError::Conflict(_))
        ));
        assert!(matches!(
            apply(&mut s, false, "x", &put("other", body, None)),
            Err(ApplyError::NotFound(_))
        ));
    }

    #[test]
    fn bodies_may_only_use_declared_arguments() {
        let mut s = TemplateState::default();
        let e = apply(&mut s, true, "x", &put("bad", "Hi {{who}}", None)).unwrap_err();
        assert!(e.to_string().contains("who"), "{e}");
        let e = apply(&mut s, true, "x", &put("Bad Name", "x", None)).unwrap_err();
        assert!(matches!(e, ApplyError::Invalid(_)));
    }

    #[test]
    fn rendering_fills_checks_and_refuses() {
        let mut s = TemplateState::default();
        apply(
            &mut s,
            true,
            "x",
            &put(
                "weekly",
                "Summarise {{project}} in a {{ tone }} tone.",
                None,
            ),
        )
        .unwrap();
        let tpl = s.get(&t("acme"), &w("docs"), "weekly").unwrap();
        let args = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            render(tpl, &args(&[("project", "Apollo"), ("tone", "dry")])).unwrap(),
            "Summarise Apollo in a dry tone."
        );
        assert_eq!(
            render(tpl, &args(&[("project", "Apollo")])).unwrap(),
            "Summarise Apollo in a  tone."
        );
        assert!(render(tpl, &args(&[("tone", "dry")])).is_err());
        assert!(render(tpl, &args(&[("project", "A"), ("nope", "x")])).is_err());
    }
}
