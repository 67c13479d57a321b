//! `quire ctl approvals list|show|approve|reject|break-glass|policy|set-policy` (separation
//! of duties) and `quire ctl delegations create|list|show|approve|revoke`.
//!
//! A change the separation-of-duties policy holds answers `202` with the approval request;
//! every command prints that as "held for approval as request N" instead of its usual
//! message (see [`pending_message`]).

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::table::{self, cell};
use super::{Client, ScopeOpts, View};

/// `quire ctl approvals ...`
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Approval requests (pending, expired, executed, failed, rejected).
    List {
        /// Only requests in this state.
        #[arg(long)]
        status: Option<String>,
        /// Only requests of this class (tenant_lifecycle, enterprise_config,
        /// security_policy).
        #[arg(long)]
        class: Option<String>,
    },
    /// One request: its command, approvals so far, and where it stands.
    Show {
        /// Request id.
        id: u64,
    },
    /// Approve a request (never one's own); the last required approval executes it.
    Approve {
        /// Request id.
        id: u64,
    },
    /// Reject a request (its requester, or an eligible approver).
    Reject {
        /// Request id.
        id: u64,
    },
    /// Execute a pending request at once (an enterprise admin, with --justification);
    /// recorded in the audit trail with high severity.
    BreakGlass {
        /// Request id.
        id: u64,
    },
    /// The separation-of-duties policy.
    Policy,
    /// Turn the policy on or off, or change a class's rule (while on, this is itself held
    /// for the security-policy approvals).
    SetPolicy {
        /// Turn it on.
        #[arg(long, conflicts_with = "off")]
        on: bool,
        /// Turn it off.
        #[arg(long)]
        off: bool,
        /// Which class's rule to change: tenant_lifecycle, enterprise_config or
        /// security_policy.
        #[arg(long)]
        class: Option<String>,
        /// Distinct approvals the class needs.
        #[arg(long, requires = "class")]
        approvals: Option<u32>,
        /// Approver roles (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',', requires = "class")]
        roles: Vec<String>,
        /// The approval window, e.g. 48h or 3d.
        #[arg(long, requires = "class")]
        window: Option<String>,
    },
}

/// `quire ctl delegations ...`
#[derive(Debug, Subcommand)]
pub enum DelegationsCommand {
    /// Lend a permission or a role the token's principal holds (needs --justification).
    Create {
        /// Who receives it: `tenant/principal` or a global principal id.
        #[arg(long)]
        to: String,
        /// The permission lent (e.g. notion.write), at a scope of its level.
        #[arg(long, conflicts_with = "role", required_unless_present = "role")]
        permission: Option<String>,
        /// The role lent.
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        scope: ScopeOpts,
        /// Temporary: how long, e.g. 8h or 3d.
        #[arg(
            long,
            conflicts_with = "permanent",
            required_unless_present = "permanent"
        )]
        ttl: Option<String>,
        /// Permanent (needs a higher authority's approval; reviewed after 90 days).
        #[arg(long)]
        permanent: bool,
    },
    /// Delegations the caller may see.
    List {
        /// Only those received by this principal.
        #[arg(long)]
        delegate: Option<String>,
        /// Only those made by this principal.
        #[arg(long)]
        delegator: Option<String>,
        /// Only permanent delegations due for their review.
        #[arg(long)]
        review_due: bool,
        /// Only those in this state: active, pending_approval or expired.
        #[arg(long)]
        status: Option<String>,
    },
    /// One delegation.
    Show {
        /// Delegation id.
        id: u64,
    },
    /// Approve a delegation that needs a higher authority.
    Approve {
        /// Delegation id.
        id: u64,
    },
    /// End a delegation at once.
    Revoke {
        /// Delegation id.
        id: u64,
    },
}

const APPROVAL_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("CLASS", "class"),
    ("ACTION", "action"),
    ("TARGET", "target"),
    ("BY", "requested_by"),
    ("APPROVED", "approved"),
    ("NEEDS", "required"),
    ("EXPIRES", "expires_at_ms"),
    ("STATUS", "status"),
];

const DELEGATION_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("DELEGATOR", "delegator"),
    ("DELEGATE", "delegate"),
    ("PERMISSION", "permission"),
    ("ROLE", "role"),
    ("SCOPE", "scope"),
    ("KIND", "kind"),
    ("EXPIRES", "expires_at_ms"),
    ("REVIEW DUE", "review_due_at_ms"),
    ("STATUS", "status"),
];

/// The line for a change held for approval (a `202` answer), if `value` is one.
pub fn pending_message(value: &Value) -> Option<String> {
    if value["status"] != "approval_pending" {
        return None;
    }
    let a = &value["approval"];
    let mut text = format!(
        "held for approval as request {} ({}: {} of {} approvals from {}; expires {})",
        cell(&a["id"]),
        cell(&a["class"]),
        cell(&a["approved"]),
        cell(&a["required"]),
        a["roles"]
            .as_array()
            .map(|r| r.iter().map(cell).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        a["expires_at_ms"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), table::utc)
    );
    if let Some(token) = value["token"].as_str() {
        text.push_str(&format!(
            "\nadmin token {} (valid once approved)\ntoken: {token}\n(shown once: store it now)",
            cell(&value["token_id"])
        ));
    }
    Some(text)
}

fn query(params: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", super::seg(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn request_message(what: &str, v: &Value) -> String {
    let status = v["status"].as_str().unwrap_or("-");
    let mut text = format!(
        "{what} request {}: {status} ({} of {} approvals)",
        cell(&v["id"]),
        cell(&v["approved"]),
        cell(&v["required"])
    );
    if v["result"]["ok"] == Value::Bool(false) {
        text.push_str(&format!(
            "; the command was refused: {}",
            cell(&v["result"]["message"])
        ));
    }
    text
}

/// Runs `quire ctl approvals ...`.
pub async fn approvals(c: &Client, command: ApprovalsCommand) -> anyhow::Result<(Value, View)> {
    Ok(match command {
        ApprovalsCommand::List { status, class } => {
            let v = c
                .call(
                    Method::GET,
                    &format!(
                        "/approvals{}",
                        query(&[("status", status), ("class", class)])
                    ),
                    None,
                )
                .await?;
            (
                v,
                View::Table {
                    list_key: "approvals",
                    columns: APPROVAL_COLUMNS,
                },
            )
        }
        ApprovalsCommand::Show { id } => {
            let v = c
                .call(Method::GET, &format!("/approvals/{id}"), None)
                .await?;
            (v, View::Fields)
        }
        ApprovalsCommand::Approve { id } => {
            let v = c
                .call(Method::POST, &format!("/approvals/{id}/approve"), None)
                .await?;
            let msg = request_message("approved", &v);
            (v, View::Message(msg))
        }
        ApprovalsCommand::Reject { id } => {
            let v = c
                .call(Method::POST, &format!("/approvals/{id}/reject"), None)
                .await?;
            let msg = request_message("rejected", &v);
            (v, View::Message(msg))
        }
        ApprovalsCommand::BreakGlass { id } => {
            if c.justification.is_none() {
                bail!("break-glass needs --justification (it is recorded with high severity)");
            }
            let v = c
                .call(Method::POST, &format!("/approvals/{id}/break-glass"), None)
                .await?;
            let msg = request_message("broke the glass on", &v);
            (v, View::Message(msg))
        }
        ApprovalsCommand::Policy => {
            let v = c.call(Method::GET, "/sod-policy", None).await?;
            (v, View::Fields)
        }
        ApprovalsCommand::SetPolicy {
            on,
            off,
            class,
            approvals,
            roles,
            window,
        } => {
            let mut body = json!({});
            if on || off {
                body["enabled"] = json!(on);
            }
            if let Some(class) = class {
                if !["tenant_lifecycle", "enterprise_config", "security_policy"]
                    .contains(&class.as_str())
                {
                    bail!("--class must be tenant_lifecycle, enterprise_config or security_policy");
                }
                let mut rule = json!({});
                if let Some(n) = approvals {
                    rule["approvals"] = json!(n);
                }
                if !roles.is_empty() {
                    rule["roles"] = json!(roles);
                }
                if let Some(w) = window {
                    rule["window_ms"] = json!(super::jwt::parse_duration_secs(&w)? * 1000);
                }
                body[class] = rule;
            }
            if body.as_object().is_some_and(serde_json::Map::is_empty) {
                bail!("say what to change: --on, --off, or --class with a rule");
            }
            let v = c.call(Method::PUT, "/sod-policy", Some(body)).await?;
            let msg = format!(
                "separation of duties is {}",
                if v["enabled"] == Value::Bool(true) {
                    "on"
                } else {
                    "off"
                }
            );
            (v, View::Message(msg))
        }
    })
}

/// Runs `quire ctl delegations ...`.
pub async fn delegations(c: &Client, command: DelegationsCommand) -> anyhow::Result<(Value, View)> {
    Ok(match command {
        DelegationsCommand::Create {
            to,
            permission,
            role,
            scope,
            ttl,
            permanent,
        } => {
            if c.justification.is_none() {
                bail!("a delegation needs --justification");
            }
            let mut body = json!({"delegate": to, "scope": scope.json()});
            match (permission, role) {
                (Some(p), _) => body["permission"] = json!(p),
                (None, Some(r)) => body["role"] = json!(r),
                (None, None) => bail!("name --permission or --role"),
            }
            match ttl {
                Some(t) => body["ttl_secs"] = json!(super::jwt::parse_duration_secs(&t)?),
                None => body["permanent"] = json!(permanent),
            }
            let v = c.call(Method::POST, "/delegations", Some(body)).await?;
            let msg = if v["status"] == "pending_approval" {
                format!(
                    "delegation {} made; it waits for approval by a higher authority (quire ctl delegations approve {})",
                    cell(&v["id"]),
                    cell(&v["id"])
                )
            } else {
                format!("delegation {} in force", cell(&v["id"]))
            };
            (v, View::Message(msg))
        }
        DelegationsCommand::List {
            delegate,
            delegator,
            review_due,
            status,
        } => {
            let path = format!(
                "/delegations{}",
                query(&[
                    ("delegate", delegate),
                    ("delegator", delegator),
                    ("review_due", review_due.then(|| "true".to_owned())),
                    ("status", status),
                ])
            );
            let v = c.call(Method::GET, &path, None).await?;
            (
                v,
                View::Table {
                    list_key: "delegations",
                    columns: DELEGATION_COLUMNS,
                },
            )
        }
        DelegationsCommand::Show { id } => {
            let v = c
                .call(Method::GET, &format!("/delegations/{id}"), None)
                .await?;
            (v, View::Fields)
        }
        DelegationsCommand::Approve { id } => {
            let v = c
                .call(Method::POST, &format!("/delegations/{id}/approve"), None)
                .await?;
            let msg = format!("delegation {id}: {}", cell(&v["status"]));
            (v, View::Message(msg))
        }
        DelegationsCommand::Revoke { id } => {
            let v = c
                .call(Method::DELETE, &format!("/delegations/{id}"), None)
                .await?;
            (v, View::Message(format!("revoked delegation {id}")))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ApprovalsCommand,
    }

    #[test]
    fn a_held_change_prints_its_request_and_a_secret_once() {
        let v = json!({
            "status": "approval_pending",
            "message": "...",
            "approval": {"id": 3, "class": "tenant_lifecycle", "approved": 0, "required": 2,
                "roles": ["enterprise_admin", "compliance_officer"], "expires_at_ms": 0},
        });
        let text = pending_message(&v).unwrap();
        assert!(
            text.starts_with("held for approval as request 3 (tenant_lifecycle: 0 of 2 approvals from enterprise_admin, compliance_officer"),
            "{text}"
        );
        let mut with_token = v.clone();
        with_token["token"] = json!("qa_secret");
        with_token["token_id"] = json!("adm-1");
        assert!(
            pending_message(&with_token)
                .unwrap()
                .contains("token: qa_secret")
        );
        assert!(pending_message(&json!({"id": "acme"})).is_none());
    }

    #[test]
    fn set_policy_takes_a_whole_rule_for_one_class() {
        let cli = Cli::try_parse_from([
            "x",
            "set-policy",
            "--class",
            "tenant_lifecycle",
            "--approvals",
            "3",
            "--role",
            "enterprise_admin,compliance_officer",
            "--window",
            "72h",
        ])
        .unwrap();
        let ApprovalsCommand::SetPolicy {
            class,
            approvals,
            roles,
            window,
            ..
        } = cli.command
        else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(class.as_deref(), Some("tenant_lifecycle"));
        assert_eq!(approvals, Some(3));
        assert_eq!(roles, ["enterprise_admin", "compliance_officer"]);
        assert_eq!(window.as_deref(), Some("72h"));
        assert!(Cli::try_parse_from(["x", "set-policy", "--approvals", "3"]).is_err());
        assert!(Cli::try_parse_from(["x", "set-policy", "--on", "--off"]).is_err());
    }
}
