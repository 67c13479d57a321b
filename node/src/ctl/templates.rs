//! `quire ctl templates list|show|create|edit|retire`: a workspace's workflow templates,
//! which agents see as MCP prompts.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, View, seg};

/// `quire ctl templates ...`
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// A workspace's templates (retired ones included).
    List {
        /// TENANT/WORKSPACE.
        workspace: String,
    },
    /// One template with its body.
    Show {
        /// TENANT/WORKSPACE.
        workspace: String,
        /// Template name.
        name: String,
    },
    /// Create a template.
    Create {
        /// TENANT/WORKSPACE.
        workspace: String,
        /// Template name (the MCP prompt's name: a-z, 0-9, '-', '_').
        name: String,
        #[command(flatten)]
        fields: TemplateFields,
    },
    /// Replace a template's title, description, arguments and body.
    Edit {
        /// TENANT/WORKSPACE.
        workspace: String,
        /// Template name.
        name: String,
        /// The version being edited (from `templates show`); refused if someone edited it
        /// since.
        #[arg(long)]
        version: u64,
        #[command(flatten)]
        fields: TemplateFields,
    },
    /// Retire a template: agents no longer see or run it.
    Retire {
        /// TENANT/WORKSPACE.
        workspace: String,
        /// Template name.
        name: String,
    },
}

/// The fields of a template.
#[derive(Debug, Args)]
pub struct TemplateFields {
    /// Title.
    #[arg(long)]
    title: String,
    /// What it does.
    #[arg(long, default_value = "")]
    description: String,
    /// The instructions, with {{argument}} placeholders.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the body from this file (`-` for standard input).
    #[arg(long)]
    body_file: Option<String>,
    /// An argument: NAME, NAME:required, or NAME:required:DESCRIPTION /
    /// NAME:optional:DESCRIPTION (repeat for several).
    #[arg(long = "arg")]
    args: Vec<String>,
}

fn split_workspace(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('/') {
        Some((t, w)) if !t.is_empty() && !w.is_empty() => Ok((t.to_owned(), w.to_owned())),
        _ => bail!("name the workspace as TENANT/WORKSPACE, not {text:?}"),
    }
}

/// `--arg` values as the admin API's argument objects.
pub fn parse_args(args: &[String]) -> anyhow::Result<Vec<Value>> {
    args.iter()
        .map(|a| {
            let mut parts = a.splitn(3, ':');
            let name = parts.next().unwrap_or_default();
            if name.is_empty() {
                bail!("--arg {a:?}: the argument needs a name");
            }
            let required = match parts.next() {
                None | Some("optional") => false,
                Some("required") => true,
                Some(other) => bail!("--arg {a:?}: {other:?} must be required or optional"),
            };
            let mut v = json!({"name": name, "required": required});
            if let Some(d) = parts.next() {
                v["description"] = json!(d);
            }
            Ok(v)
        })
        .collect()
}

fn body_of(fields: &TemplateFields) -> anyhow::Result<String> {
    match (&fields.body, &fields.body_file) {
        (Some(b), None) => Ok(b.clone()),
        (None, Some(path)) if path == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)?;
            Ok(text)
        }
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
        }
        _ => bail!("give the body with --body or --body-file"),
    }
}

fn fields_json(fields: &TemplateFields) -> anyhow::Result<Value> {
    Ok(json!({
        "title": fields.title,
        "description": fields.description,
        "arguments": parse_args(&fields.args)?,
        "body": body_of(fields)?,
    }))
}

const COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("TITLE", "title"),
    ("VERSION", "version"),
    ("RETIRED", "retired"),
    ("UPDATED BY", "updated_by"),
];

/// Runs a `templates` command.
pub async fn templates(c: &Client, command: TemplatesCommand) -> anyhow::Result<(Value, View)> {
    let base = |workspace: &str| -> anyhow::Result<String> {
        let (t, w) = split_workspace(workspace)?;
        Ok(format!(
            "/tenants/{}/workspaces/{}/templates",
            seg(&t),
            seg(&w)
        ))
    };
    Ok(match command {
        TemplatesCommand::List { workspace } => (
            c.call(Method::GET, &base(&workspace)?, None).await?,
            View::Table {
                list_key: "templates",
                columns: COLUMNS,
            },
        ),
        TemplatesCommand::Show { workspace, name } => (
            c.call(
                Method::GET,
                &format!("{}/{}", base(&workspace)?, seg(&name)),
                None,
            )
            .await?,
            View::Fields,
        ),
        TemplatesCommand::Create {
            workspace,
            name,
            fields,
        } => {
            let mut body = fields_json(&fields)?;
            body["name"] = json!(name);
            let v = c.call(Method::POST, &base(&workspace)?, Some(body)).await?;
            (
                v,
                View::Message(format!("created template {name} (version 1)")),
            )
        }
        TemplatesCommand::Edit {
            workspace,
            name,
            version,
            fields,
        } => {
            let mut body = fields_json(&fields)?;
            body["version"] = json!(version);
            let v = c
                .call(
                    Method::PUT,
                    &format!("{}/{}", base(&workspace)?, seg(&name)),
                    Some(body),
                )
                .await?;
            let msg = format!(
                "edited template {name} (now version {})",
                v["version"].as_u64().unwrap_or(version + 1)
            );
            (v, View::Message(msg))
        }
        TemplatesCommand::Retire { workspace, name } => {
            let v = c
                .call(
                    Method::DELETE,
                    &format!("{}/{}", base(&workspace)?, seg(&name)),
                    None,
                )
                .await?;
            (v, View::Message(format!("retired template {name}")))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_with_their_flags() {
        let v = parse_args(&[
            "project:required:the project".into(),
            "tone".into(),
            "x:optional".into(),
        ])
        .unwrap();
        assert_eq!(
            v[0],
            json!({"name": "project", "required": true, "description": "the project"})
        );
        assert_eq!(v[1], json!({"name": "tone", "required": false}));
        assert_eq!(v[2]["required"], json!(false));
        assert!(parse_args(&["p:maybe".into()]).is_err());
        assert!(parse_args(&[":required".into()]).is_err());
        assert!(split_workspace("acme").is_err());
    }
}
