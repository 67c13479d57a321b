//! `quire ctl`: the operator's command line for the admin API. Each subcommand is one HTTP
//! request to `--url` (`/admin/v1/...`) with the admin token from `--token` /
//! `QUIRE_ADMIN_TOKEN`; it prints a table (or the API's JSON with `--json`) and exits non-zero
//! with the server's message when the request is refused. `audit tail --follow` polls;
//! `audit verify --file` checks an export offline, with no server and no token.

mod approvals;
mod audit;
mod backup;
mod jwt;
mod placement;
mod table;
mod templates;
mod usage;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use table::{Table, cell, field_cell};

/// Default admin API base URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7800";
/// Largest response body read, in bytes.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Largest Notion token file read, in bytes.
const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;

/// `quire ctl`: manage a Quire cluster through its admin API.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Base URL of any node of the cluster.
    #[arg(long, env = "QUIRE_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// Admin token (`qa_...`).
    #[arg(long, env = "QUIRE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// For an https:// URL: trust only the CA certificates in this PEM file (a private CA,
    /// e.g. `quire certs init`'s `ca.pem`) instead of the system's.
    #[arg(long, env = "QUIRE_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Deadline of each request, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub timeout_secs: u64,
    /// Why: recorded in the audit trail with the change (any command that changes something;
    /// required to add a restriction).
    #[arg(long, global = true)]
    pub justification: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What `quire ctl` manages.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The Raft group as this node sees it.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Members of the Raft group.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Tenants: the unit of isolation.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Workspaces of a tenant, each served by one Notion integration.
    Workspaces {
        #[command(subcommand)]
        command: WorkspacesCommand,
    },
    /// Notion integrations of a tenant (their tokens are sealed and never shown).
    Integrations {
        #[command(subcommand)]
        command: IntegrationsCommand,
    },
    /// Principals (users or agents) of a tenant and their workspace grants.
    Principals {
        #[command(subcommand)]
        command: PrincipalsCommand,
    },
    /// API tokens agents use at /mcp.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The master key ring (rotate, status) and the built-in JWT issuer's signing keys.
    Keys {
        #[command(subcommand)]
        command: jwt::KeysCommand,
    },
    /// Admin tokens for this API (root, or acting as a principal).
    AdminTokens {
        #[command(subcommand)]
        command: AdminTokensCommand,
    },
    /// Role bindings: who holds which role where.
    Roles {
        #[command(subcommand)]
        command: RolesCommand,
    },
    /// Explicit denials that override every role.
    Restrictions {
        #[command(subcommand)]
        command: RestrictionsCommand,
    },
    /// The tamper-evident audit trail: tail, query, export, verify.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Separation of duties: approval requests for critical changes, and the policy.
    Approvals {
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// Delegations of permissions and roles.
    Delegations {
        #[command(subcommand)]
        command: approvals::DelegationsCommand,
    },
    /// Workflow templates of a workspace (agents see them as MCP prompts).
    Templates {
        #[command(subcommand)]
        command: templates::TemplatesCommand,
    },
    /// The shard map: which node owns which tenants' shards.
    Placement {
        #[command(subcommand)]
        command: placement::PlacementCommand,
    },
    /// Write a consistent backup of the whole control plane (secrets stay sealed) to a file;
    /// `quire restore --from FILE` starts a new cluster from it.
    Backup(backup::BackupArgs),
    /// Tool calls, errors, refusals and latency percentiles per tenant, workspace or
    /// principal over a period, from the audit trail.
    Usage(usage::UsageArgs),
}

/// `quire ctl nodes ...`
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Every member with its role and the indexes it reports itself.
    List,
    /// Remove a member from the group; it stops serving.
    Remove {
        /// Node id.
        id: u64,
    },
    /// Mark a node draining (needs system.configure): it receives no shards and the placement
    /// controller moves the ones it owns elsewhere. Shows the progress on stderr and ends when
    /// it owns no shard; fails naming shards whose residency allows no other live node.
    Drain {
        /// Node id.
        id: u64,
        /// Return once the node is marked, without waiting for its shards to move.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the node to own no shard (e.g. 90s, 10m, 1h).
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Clear a node's draining mark: it receives shards again from the next rounds.
    Undrain {
        /// Node id.
        id: u64,
    },
}

/// `quire ctl cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Node id, leader, term, log indexes and members, as the node at --url sees them.
    Status,
}

/// Read options of get commands.
#[derive(Debug, Clone, Args)]
pub struct ReadOpts {
    /// Read this node's applied state instead of a linearizable read (may be stale).
    #[arg(long)]
    pub local: bool,
}

/// Read and paging options of list commands.
#[derive(Debug, Clone, Args)]
pub struct ListOpts {
    /// Read this node's applied state instead of a linearizable read (may be stale).
    #[arg(long)]
    pub local: bool,
    /// Most items to list (1..=1000; the server's default is 500).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// List only items after this id (the `next_after` a previous page printed).
    #[arg(long)]
    pub after: Option<String>,
}

/// `quire ctl tenants ...`
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Tenant id (a-z, 0-9, '-', '_').
        id: String,
        /// Human-readable name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        residency: placement::ResidencyArgs,
    },
    /// Set where a tenant's data may live (needs system.configure); its shards move to nodes
    /// of those regions.
    SetResidency {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        residency: placement::ResidencyArgs,
    },
    /// List tenants with their counts.
    List(ListOpts),
    /// Show one tenant.
    Get {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a tenant that has no workspaces.
    Delete { id: String },
    /// Export a tenant with its audit chain (to move it to another cluster with the same
    /// master key).
    Export {
        /// Tenant id.
        id: String,
        /// Write to this file (else to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import a tenant exported from another cluster; its audit chain must verify.
    Import {
        /// The export file.
        file: PathBuf,
    },
}

/// `quire ctl workspaces ...`
#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// Create a workspace served by an integration of the tenant.
    Create {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Workspace id.
        id: String,
        /// Integration that serves it.
        #[arg(long)]
        integration: String,
        /// Human-readable name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List a tenant's workspaces.
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        list: ListOpts,
    },
    /// Show one workspace.
    Get {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Workspace id.
        id: String,
        #[command(flatten)]
        read: ReadOpts,
    },
}

/// Where a Notion token comes from: a file, or `QUIRE_NOTION_TOKEN` (never a plain flag,
/// which would leak into shell history and process lists).
#[derive(Debug, Clone, Args)]
pub struct NotionTokenSource {
    /// File holding the Notion integration token.
    #[arg(long)]
    pub notion_token_file: Option<PathBuf>,
}

/// `quire ctl integrations ...`
#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Add a Notion integration (token from --notion-token-file or QUIRE_NOTION_TOKEN).
    Add {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Integration id.
        id: String,
        /// Human-readable name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        token: NotionTokenSource,
        /// Sustained requests per second (default: the node's configured default).
        #[arg(long)]
        requests_per_second: Option<u32>,
        /// Burst size (default: the node's configured default).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Replace an integration's Notion token.
    Rotate {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Integration id.
        id: String,
        #[command(flatten)]
        token: NotionTokenSource,
    },
    /// Remove an integration no workspace uses.
    Remove {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Integration id.
        id: String,
    },
    /// List a tenant's integrations (never their tokens).
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        list: ListOpts,
    },
}

/// `quire ctl principals ...`
#[derive(Debug, Subcommand)]
pub enum PrincipalsCommand {
    /// Create a principal.
    Create {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Principal id.
        id: String,
        /// Human-readable name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List a tenant's principals and their workspaces.
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        list: ListOpts,
    },
    /// Grant a principal a workspace.
    Grant {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Principal id.
        principal: String,
        /// Workspace id.
        #[arg(long)]
        workspace: String,
    },
    /// Create a global (enterprise) principal, which holds roles across tenants.
    CreateGlobal {
        /// Principal id.
        id: String,
        /// Human-readable name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List global principals.
    ListGlobal(ListOpts),
}

/// Where a role or restriction applies: the whole cluster (neither flag), one tenant
/// (`--tenant`), or one workspace (`--tenant` and `--workspace`).
#[derive(Debug, Clone, Args)]
pub struct ScopeOpts {
    /// Tenant id (tenant or workspace scope).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Workspace id (workspace scope; needs --tenant).
    #[arg(long, requires = "tenant")]
    pub workspace: Option<String>,
}

impl ScopeOpts {
    fn json(&self) -> Value {
        match (&self.tenant, &self.workspace) {
            (None, _) => json!({"level": "global"}),
            (Some(t), None) => json!({"level": "tenant", "tenant": t}),
            (Some(t), Some(w)) => json!({"level": "workspace", "tenant": t, "workspace": w}),
        }
    }
}

/// `quire ctl roles ...`
#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// Give a principal a role at a scope (within the caller's own authority).
    Assign {
        /// `tenant/principal`, or a global principal id.
        #[arg(long)]
        subject: String,
        /// enterprise_admin, tenant_admin, workspace_manager, standard_user, security_admin
        /// or compliance_officer.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        scope: ScopeOpts,
        /// Lifetime in seconds (default: until revoked).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// List the role bindings the caller may see.
    List {
        /// Only this subject's.
        #[arg(long)]
        subject: Option<String>,
        /// Read this node's applied state instead of a linearizable read (may be stale).
        #[arg(long)]
        local: bool,
    },
    /// End a role binding at once.
    Revoke {
        /// Binding id (from `roles list`).
        id: u64,
    },
}

/// `quire ctl restrictions ...`
#[derive(Debug, Subcommand)]
pub enum RestrictionsCommand {
    /// Deny a principal a permission (or everything) at a scope; needs --justification.
    Add {
        /// `tenant/principal`, or a global principal id.
        #[arg(long)]
        subject: String,
        /// The permission denied, e.g. `notion.write` (default: every permission).
        #[arg(long)]
        permission: Option<String>,
        #[command(flatten)]
        scope: ScopeOpts,
    },
    /// List the restrictions the caller may see.
    List {
        /// Only this subject's.
        #[arg(long)]
        subject: Option<String>,
        /// Read this node's applied state instead of a linearizable read (may be stale).
        #[arg(long)]
        local: bool,
    },
    /// Lift a restriction.
    Remove {
        /// Restriction id (from `restrictions list`).
        id: u64,
    },
}

/// `quire ctl audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The newest records of a chain; with --follow, keep printing new ones as they commit.
    Tail {
        /// Tenant id, or `_cluster` (default: the token's own tenant, `_cluster` for root).
        #[arg(long)]
        tenant: Option<String>,
        /// Records shown first.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        lines: u64,
        /// Keep polling for new records (until interrupted).
        #[arg(long)]
        follow: bool,
        /// Poll interval with --follow, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60000))]
        interval_ms: u64,
    },
    /// Records of a chain that match every filter given, oldest first.
    Query {
        /// Tenant id, or `_cluster`.
        #[arg(long)]
        tenant: String,
        /// `admin`, `authorize` or `tool`.
        #[arg(long)]
        kind: Option<String>,
        /// Who (`tenant/principal`, a global principal, or `root`).
        #[arg(long)]
        principal: Option<String>,
        /// `ok`, `allowed`, `denied`, `unchanged`, `error:<code>`.
        #[arg(long)]
        outcome: Option<String>,
        /// The admin command, permission or tool.
        #[arg(long)]
        action: Option<String>,
        /// Only records after this sequence number.
        #[arg(long)]
        after_seq: Option<u64>,
        /// Most records (1..=1000; default 100).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: Option<u64>,
    },
    /// Write a chain as JSON lines (first line: its anchor and head) to stdout or --out.
    Export {
        /// Tenant id, or `_cluster`.
        #[arg(long)]
        tenant: String,
        /// File to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify every chain the token may read on the cluster, or an export with --file
    /// (offline: no server, no token); exits non-zero on the first broken record.
    Verify {
        /// An export written by `audit export`.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Set the audit retention: records kept per chain (the oldest are dropped; an anchor
    /// keeps what remains verifiable).
    SetRetention {
        /// Records kept per chain.
        max_records_per_chain: u64,
    },
}

/// `quire ctl tokens ...`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue an API token for a principal in a granted workspace (the secret is shown once);
    /// with --jwt, a JWT signed by the cluster's built-in issuer.
    Issue {
        /// Tenant id (or give --principal as TENANT/PRINCIPAL).
        #[arg(long)]
        tenant: Option<String>,
        /// Principal id, or TENANT/PRINCIPAL.
        #[arg(long)]
        principal: String,
        /// Workspace id.
        #[arg(long)]
        workspace: String,
        /// Scopes (repeat or comma-separate; default: all known scopes).
        #[arg(long = "scope", visible_alias = "scopes", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Lifetime in seconds (default: no expiry; a JWT: security.jwt_default_ttl_secs).
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// Lifetime as 90s, 30m, 1h or 2d (instead of --ttl-secs).
        #[arg(long, conflicts_with = "ttl_secs")]
        ttl: Option<String>,
        /// Issue a signed JWT (built-in issuer) instead of an opaque qk_ token.
        #[arg(long)]
        jwt: bool,
    },
    /// Revoke a JWT by its id (the token itself, or `-` to read it from standard input); it
    /// is refused everywhere until it would have expired.
    RevokeJwt {
        /// The JWT, or `-`.
        token: String,
    },
    /// List a tenant's tokens (never their secrets).
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        list: ListOpts,
    },
    /// Revoke a token.
    Revoke {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Token id.
        id: String,
    },
}

/// `quire ctl admin-tokens ...`
#[derive(Debug, Subcommand)]
pub enum AdminTokensCommand {
    /// Issue an admin token (the secret is shown once).
    Issue {
        /// Who will hold it.
        #[arg(long)]
        name: String,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// The principal it acts as (`tenant/principal` or a global principal id), whose
        /// roles decide what it may do; without it, a root token (every permission).
        #[arg(long)]
        subject: Option<String>,
    },
    /// List admin tokens.
    List(ListOpts),
    /// Revoke an admin token.
    Revoke {
        /// Admin token id.
        id: String,
    },
}

/// Runs one `quire ctl` command, printing to stdout.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    run_to(args, &mut out, |name| std::env::var(name).ok()).await
}

/// Runs one `quire ctl` command, printing to `out`; `env` reads environment variables (for
/// `QUIRE_NOTION_TOKEN`).
pub async fn run_to(
    args: CtlArgs,
    out: &mut dyn Write,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    if let CtlCommand::Audit {
        command: AuditCommand::Verify { file: Some(path) },
    } = &args.command
    {
        return audit::verify_file(path, args.json, out);
    }
    let client = Client::new(&args)?;
    let json_out = args.json;
    let (value, view) = match args.command {
        CtlCommand::Backup(b) => return backup::backup(&client, &b, json_out, out).await,
        CtlCommand::Usage(u) => return usage::usage(&client, &u, json_out, out).await,
        CtlCommand::Tenants {
            command: TenantsCommand::Export { id, out: file },
        } => return backup::export(&client, &id, file.as_deref(), out).await,
        CtlCommand::Tenants {
            command: TenantsCommand::Import { file },
        } => return backup::import(&client, &file, json_out, out).await,
        CtlCommand::Audit {
            command: AuditCommand::Export { tenant, out: file },
        } => return audit::export(&client, &tenant, file.as_deref(), out).await,
        CtlCommand::Audit {
            command:
                AuditCommand::Tail {
                    tenant,
                    lines,
                    follow,
                    interval_ms,
                },
        } => {
            let opts = audit::TailOpts {
                tenant,
                lines,
                follow,
                interval: Duration::from_millis(interval_ms),
                json: json_out,
            };
            return audit::tail(&client, &opts, out).await;
        }
        command => execute(&client, command, &env).await?,
    };
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else if let Some(held) = approvals::pending_message(&value) {
        // A 202: the change became an approval request (separation of duties).
        writeln!(out, "{held}")?;
    } else {
        view.render(&value, out)?;
    }
    if matches!(view, View::Verify) && value["ok"] != Value::Bool(true) {
        bail!("an audit chain does not verify (see above)");
    }
    Ok(())
}

/// How a response is shown to a human.
enum View {
    Table {
        list_key: &'static str,
        columns: &'static [(&'static str, &'static str)],
    },
    Fields,
    Message(String),
    Secret(&'static str),
    Records,
    Verify,
}

impl View {
    fn render(&self, value: &Value, out: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            View::Table { list_key, columns } => {
                let mut table = Table::new(columns.iter().map(|(h, _)| *h));
                for item in value[*list_key].as_array().into_iter().flatten() {
                    table.row(columns.iter().map(|(_, key)| field_cell(key, &item[*key])));
                }
                table.write(out)?;
                if let Some(next) = value["next_after"].as_str() {
                    writeln!(out, "(more: list again with --after {next})")?;
                }
            }
            View::Fields => write_fields(value, out)?,
            View::Message(text) => writeln!(out, "{text}")?,
            View::Secret(what) => {
                writeln!(out, "{what} {}", cell(&value["token_id"]))?;
                // Never cut like a table cell: the whole secret is needed.
                writeln!(out, "token: {}", value["token"].as_str().unwrap_or("-"))?;
                if let Some(expires) = value["expires_at_ms"].as_u64() {
                    writeln!(out, "expires: {}", table::utc(expires))?;
                }
                writeln!(out, "(shown once: store it now)")?;
            }
            View::Records => {
                let records = value["records"].as_array().map_or(&[][..], Vec::as_slice);
                if records.is_empty() {
                    writeln!(out, "(no matching records)")?;
                }
                for r in records {
                    writeln!(out, "{}", audit::record_line(r))?;
                }
                if value["more"] == Value::Bool(true) {
                    writeln!(
                        out,
                        "(more: query again with --after-seq {})",
                        cell(&value["last_seq"])
                    )?;
                }
            }
            View::Verify => {
                let mut table = Table::new(["CHAIN", "RECORDS", "ANCHOR", "HEAD", "RESULT"]);
                for c in value["chains"].as_array().into_iter().flatten() {
                    let result = if c["ok"] == Value::Bool(true) {
                        "ok".to_owned()
                    } else {
                        format!("BROKEN: {}", cell(&c["error"]["message"]))
                    };
                    table.row([
                        cell(&c["chain"]),
                        cell(&c["records"]),
                        cell(&c["anchor_seq"]),
                        cell(&c["head_seq"]),
                        result,
                    ]);
                }
                table.write(out)?;
            }
        }
        Ok(())
    }
}

fn write_fields(value: &Value, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(map) = value.as_object() {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in map {
            if k == "members" {
                continue;
            }
            writeln!(out, "{k:<width$}  {}", field_cell(k, v))?;
        }
        if let Some(members) = value["members"].as_array() {
            writeln!(out)?;
            let mut table = Table::new(["ID", "ROLE", "LAST LOG", "APPLIED"]);
            for m in members {
                table.row([
                    cell(&m["id"]),
                    cell(&m["role"]),
                    cell(&m["last_log_index"]),
                    cell(&m["applied_index"]),
                ]);
            }
            table.write(out)?;
        }
    }
    Ok(())
}

fn read_query(read: &ReadOpts) -> &'static str {
    if read.local { "?consistency=local" } else { "" }
}

fn list_query(list: &ListOpts) -> String {
    let mut params = Vec::new();
    if list.local {
        params.push("consistency=local".to_owned());
    }
    if let Some(limit) = list.limit {
        params.push(format!("limit={limit}"));
    }
    if let Some(after) = &list.after {
        params.push(format!("after={}", seg(after)));
    }
    if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    }
}

fn notion_token(
    source: &NotionTokenSource,
    env: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let token = match &source.notion_token_file {
        Some(path) => read_token_file(path)?,
        None => env("QUIRE_NOTION_TOKEN")
            .context("no Notion token: pass --notion-token-file FILE or set QUIRE_NOTION_TOKEN")?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the Notion token is empty");
    }
    Ok(token)
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the Notion token file {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the Notion token file {}", path.display()))?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        bail!(
            "the Notion token file {} is larger than {MAX_TOKEN_FILE_BYTES} bytes",
            path.display()
        );
    }
    Ok(text)
}

/// Percent-encodes one path segment (ids are validated by the server; this keeps a stray
/// '/' or '?' from changing which route is called).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const NODE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("ADDR", "addr"),
    ("ROLE", "role"),
    ("REGION", "region"),
    ("ZONE", "zone"),
    ("DRAINING", "draining"),
    ("LAST LOG", "last_log_index"),
    ("APPLIED", "applied_index"),
    ("REACHABLE", "reachable"),
];
const TENANT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "display_name"),
    ("WORKSPACES", "workspaces"),
    ("INTEGRATIONS", "integrations"),
    ("PRINCIPALS", "principals"),
    ("TOKENS", "tokens"),
];
const WORKSPACE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "display_name"),
    ("INTEGRATION", "integration"),
];
const INTEGRATION_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "display_name"),
    ("BUDGET", "budget"),
    ("WORKSPACES", "workspaces"),
];
const PRINCIPAL_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "display_name"),
    ("WORKSPACES", "workspaces"),
];
const TOKEN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "token_id"),
    ("PRINCIPAL", "principal"),
    ("WORKSPACE", "workspace"),
    ("SCOPES", "scopes"),
    ("ISSUED", "issued_at_ms"),
    ("EXPIRES", "expires_at_ms"),
    ("REVOKED", "revoked"),
    ("VALID", "valid"),
];
const ADMIN_TOKEN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "token_id"),
    ("NAME", "display_name"),
    ("SUBJECT", "subject"),
    ("ISSUED", "issued_at_ms"),
    ("EXPIRES", "expires_at_ms"),
    ("REVOKED", "revoked"),
    ("VALID", "valid"),
];

const GLOBAL_PRINCIPAL_COLUMNS: &[(&str, &str)] = &[("ID", "id"), ("NAME", "display_name")];
const ROLE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("SUBJECT", "subject"),
    ("ROLE", "role"),
    ("SCOPE", "scope"),
    ("GRANTED BY", "granted_by"),
    ("GRANTED", "granted_at_ms"),
    ("EXPIRES", "expires_at_ms"),
    ("ACTIVE", "active"),
];
const RESTRICTION_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("SUBJECT", "subject"),
    ("PERMISSION", "permission"),
    ("SCOPE", "scope"),
    ("SET BY", "set_by"),
    ("JUSTIFICATION", "justification"),
];

/// `?subject=S` (and `consistency=local`) for role and restriction lists.
fn subject_query(subject: Option<&str>, local: bool) -> String {
    let mut params = Vec::new();
    if let Some(s) = subject {
        params.push(format!("subject={}", seg(s)));
    }
    if local {
        params.push("consistency=local".to_owned());
    }
    if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    }
}

/// `GET path`, shown as a table of the answer's `list_key` array.
async fn list_view(
    c: &Client,
    path: &str,
    list_key: &'static str,
    columns: &'static [(&'static str, &'static str)],
) -> anyhow::Result<(Value, View)> {
    let v = c.call(reqwest::Method::GET, path, None).await?;
    Ok((v, View::Table { list_key, columns }))
}

/// `GET path`, shown field by field.
async fn fields_view(c: &Client, path: &str) -> anyhow::Result<(Value, View)> {
    let v = c.call(reqwest::Method::GET, path, None).await?;
    Ok((v, View::Fields))
}

/// `method path` with `body`, shown as the message `message` makes of the answer.
async fn message_view(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    message: impl FnOnce(&Value) -> String,
) -> anyhow::Result<(Value, View)> {
    let v = c.call(method, path, body).await?;
    let msg = message(&v);
    Ok((v, View::Message(msg)))
}

/// A listing of tenant `tenant`'s `kind` (`workspaces`, `principals`, ...), shown as a table.
async fn list_in_tenant(
    c: &Client,
    tenant: &str,
    kind: &'static str,
    list: &ListOpts,
    columns: &'static [(&'static str, &'static str)],
) -> anyhow::Result<(Value, View)> {
    let path = format!("/tenants/{}/{kind}{}", seg(tenant), list_query(list));
    list_view(c, &path, kind, columns).await
}

/// Creates one of tenant `tenant`'s `kind` from `body`: "created {noun} {tenant}/{id}".
async fn create_in_tenant(
    c: &Client,
    tenant: &str,
    kind: &str,
    noun: &str,
    body: Value,
) -> anyhow::Result<(Value, View)> {
    let path = format!("/tenants/{}/{kind}", seg(tenant));
    message_view(c, reqwest::Method::POST, &path, Some(body), |v| {
        format!("created {noun} {tenant}/{}", cell(&v["id"]))
    })
    .await
}

/// `kind` (`roles` or `restrictions`) of `subject` (every subject's if none), shown as a table.
async fn list_by_subject(
    c: &Client,
    kind: &'static str,
    subject: Option<&str>,
    local: bool,
    columns: &'static [(&'static str, &'static str)],
) -> anyhow::Result<(Value, View)> {
    let path = format!("/{kind}{}", subject_query(subject, local));
    list_view(c, &path, kind, columns).await
}

/// `DELETE path`, shown as `message`.
async fn delete_view(c: &Client, path: &str, message: String) -> anyhow::Result<(Value, View)> {
    message_view(c, reqwest::Method::DELETE, path, None, |_| message).await
}

async fn execute(
    c: &Client,
    command: CtlCommand,
    env: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Value, View)> {
    use reqwest::Method;
    Ok(match command {
        CtlCommand::Cluster {
            command: ClusterCommand::Status,
        } => fields_view(c, "/cluster/status").await?,
        CtlCommand::Nodes { command } => match command {
            NodesCommand::List => list_view(c, "/nodes", "members", NODE_COLUMNS).await?,
            NodesCommand::Remove { id } => {
                delete_view(c, &format!("/nodes/{id}"), format!("removed node {id}")).await?
            }
            NodesCommand::Drain {
                id,
                no_wait,
                timeout,
            } => {
                let secs = jwt::parse_duration_secs(&timeout)?;
                placement::drain(c, id, no_wait, secs).await?
            }
            NodesCommand::Undrain { id } => placement::undrain(c, id).await?,
        },
        CtlCommand::Tenants { command } => match command {
            TenantsCommand::Create {
                id,
                name,
                residency,
            } => {
                let mut body = residency.json();
                body["display_name"] = json!(name.unwrap_or_else(|| id.clone()));
                body["id"] = json!(id);
                message_view(c, Method::POST, "/tenants", Some(body), |v| {
                    format!(
                        "created tenant {} ({})",
                        cell(&v["id"]),
                        placement::residency_text(&v["residency"])
                    )
                })
                .await?
            }
            TenantsCommand::SetResidency { id, residency } => {
                placement::set_residency(c, &id, &residency).await?
            }
            TenantsCommand::List(list) => {
                list_view(
                    c,
                    &format!("/tenants{}", list_query(&list)),
                    "tenants",
                    TENANT_COLUMNS,
                )
                .await?
            }
            TenantsCommand::Get { id, read } => {
                fields_view(c, &format!("/tenants/{}{}", seg(&id), read_query(&read))).await?
            }
            TenantsCommand::Delete { id } => {
                delete_view(
                    c,
                    &format!("/tenants/{}", seg(&id)),
                    format!("deleted tenant {id}"),
                )
                .await?
            }
            TenantsCommand::Export { .. } | TenantsCommand::Import { .. } => {
                bail!("this tenants command is run by run_to")
            }
        },
        CtlCommand::Workspaces { command } => match command {
            WorkspacesCommand::Create {
                tenant,
                id,
                integration,
                name,
            } => {
                let body = json!({
                    "display_name": name.unwrap_or_else(|| id.clone()),
                    "id": id,
                    "integration": integration,
                });
                create_in_tenant(c, &tenant, "workspaces", "workspace", body).await?
            }
            WorkspacesCommand::List { tenant, list } => {
                list_in_tenant(c, &tenant, "workspaces", &list, WORKSPACE_COLUMNS).await?
            }
            WorkspacesCommand::Get { tenant, id, read } => {
                fields_view(
                    c,
                    &format!(
                        "/tenants/{}/workspaces/{}{}",
                        seg(&tenant),
                        seg(&id),
                        read_query(&read)
                    ),
                )
                .await?
            }
        },
        CtlCommand::Integrations { command } => match command {
            IntegrationsCommand::Add {
                tenant,
                id,
                name,
                token,
                requests_per_second,
                burst,
            } => {
                let mut body = json!({
                    "display_name": name.unwrap_or_else(|| id.clone()),
                    "id": id,
                    "notion_token": notion_token(&token, env)?,
                });
                if let Some(rps) = requests_per_second {
                    body["requests_per_second"] = rps.into();
                }
                if let Some(burst) = burst {
                    body["burst"] = burst.into();
                }
                message_view(
                    c,
                    Method::POST,
                    &format!("/tenants/{}/integrations", seg(&tenant)),
                    Some(body),
                    |v| {
                        format!(
                            "added integration {tenant}/{} (budget {})",
                            cell(&v["id"]),
                            cell(&v["budget"])
                        )
                    },
                )
                .await?
            }
            IntegrationsCommand::Rotate { tenant, id, token } => {
                let body = json!({"notion_token": notion_token(&token, env)?});
                message_view(
                    c,
                    Method::POST,
                    &format!("/tenants/{}/integrations/{}/rotate", seg(&tenant), seg(&id)),
                    Some(body),
                    |_| format!("rotated the token of integration {tenant}/{id}"),
                )
                .await?
            }
            IntegrationsCommand::Remove { tenant, id } => {
                delete_view(
                    c,
                    &format!("/tenants/{}/integrations/{}", seg(&tenant), seg(&id)),
                    format!("removed integration {tenant}/{id}"),
                )
                .await?
            }
            IntegrationsCommand::List { tenant, list } => {
                list_in_tenant(c, &tenant, "integrations", &list, INTEGRATION_COLUMNS).await?
            }
        },
        CtlCommand::Principals { command } => match command {
            PrincipalsCommand::Create { tenant, id, name } => {
                let body = json!({"display_name": name.unwrap_or_else(|| id.clone()), "id": id});
                create_in_tenant(c, &tenant, "principals", "principal", body).await?
            }
            PrincipalsCommand::List { tenant, list } => {
                list_in_tenant(c, &tenant, "principals", &list, PRINCIPAL_COLUMNS).await?
            }
            PrincipalsCommand::Grant {
                tenant,
                principal,
                workspace,
            } => {
                message_view(
                    c,
                    Method::POST,
                    &format!(
                        "/tenants/{}/principals/{}/workspaces",
                        seg(&tenant),
                        seg(&principal)
                    ),
                    Some(json!({"workspace": workspace})),
                    |v| {
                        if v["changed"] == Value::Bool(false) {
                            format!("{principal} already had workspace {workspace}")
                        } else {
                            format!("granted {principal} workspace {workspace}")
                        }
                    },
                )
                .await?
            }
            PrincipalsCommand::CreateGlobal { id, name } => {
                let body = json!({"display_name": name.unwrap_or_else(|| id.clone()), "id": id});
                message_view(c, Method::POST, "/principals", Some(body), |v| {
                    format!("created global principal {}", cell(&v["id"]))
                })
                .await?
            }
            PrincipalsCommand::ListGlobal(list) => {
                list_view(
                    c,
                    &format!("/principals{}", list_query(&list)),
                    "principals",
                    GLOBAL_PRINCIPAL_COLUMNS,
                )
                .await?
            }
        },
        CtlCommand::Tokens { command } => match command {
            TokensCommand::Issue {
                tenant,
                principal,
                workspace,
                scopes,
                ttl_secs,
                ttl,
                jwt,
            } => {
                let opts = jwt::IssueOpts {
                    tenant,
                    principal,
                    workspace,
                    scopes,
                    ttl_secs,
                    ttl,
                    jwt,
                };
                jwt::issue(c, opts).await?
            }
            TokensCommand::RevokeJwt { token } => jwt::revoke(c, token).await?,
            TokensCommand::List { tenant, list } => {
                list_in_tenant(c, &tenant, "tokens", &list, TOKEN_COLUMNS).await?
            }
            TokensCommand::Revoke { tenant, id } => {
                delete_view(
                    c,
                    &format!("/tenants/{}/tokens/{}", seg(&tenant), seg(&id)),
                    format!("revoked token {id}"),
                )
                .await?
            }
        },
        CtlCommand::AdminTokens { command } => match command {
            AdminTokensCommand::Issue {
                name,
                ttl_secs,
                subject,
            } => {
                let mut body = json!({"display_name": name});
                if let Some(ttl) = ttl_secs {
                    body["ttl_secs"] = ttl.into();
                }
                if let Some(subject) = subject {
                    body["subject"] = subject.into();
                }
                let v = c.call(Method::POST, "/admin-tokens", Some(body)).await?;
                (v, View::Secret("issued admin token"))
            }
            AdminTokensCommand::List(list) => {
                list_view(
                    c,
                    &format!("/admin-tokens{}", list_query(&list)),
                    "admin_tokens",
                    ADMIN_TOKEN_COLUMNS,
                )
                .await?
            }
            AdminTokensCommand::Revoke { id } => {
                delete_view(
                    c,
                    &format!("/admin-tokens/{}", seg(&id)),
                    format!("revoked admin token {id}"),
                )
                .await?
            }
        },
        CtlCommand::Roles { command } => match command {
            RolesCommand::Assign {
                subject,
                role,
                scope,
                ttl_secs,
            } => {
                let mut body = json!({"subject": subject, "role": role, "scope": scope.json()});
                if let Some(ttl) = ttl_secs {
                    body["ttl_secs"] = ttl.into();
                }
                message_view(c, Method::POST, "/roles", Some(body), |v| {
                    if v["changed"] == Value::Bool(false) {
                        format!(
                            "{subject} already holds {role} at {}",
                            table::scope_text(&v["scope"])
                        )
                    } else {
                        format!(
                            "assigned {role} at {} to {subject} (binding {})",
                            table::scope_text(&v["scope"]),
                            cell(&v["binding"]["id"])
                        )
                    }
                })
                .await?
            }
            RolesCommand::List { subject, local } => {
                list_by_subject(c, "roles", subject.as_deref(), local, ROLE_COLUMNS).await?
            }
            RolesCommand::Revoke { id } => {
                delete_view(
                    c,
                    &format!("/roles/{id}"),
                    format!("revoked role binding {id}"),
                )
                .await?
            }
        },
        CtlCommand::Restrictions { command } => match command {
            RestrictionsCommand::Add {
                subject,
                permission,
                scope,
            } => {
                if c.justification.is_none() {
                    bail!("a restriction needs a reason: pass --justification TEXT");
                }
                let mut body = json!({"subject": subject, "scope": scope.json()});
                if let Some(p) = permission {
                    body["permission"] = p.into();
                }
                message_view(c, Method::POST, "/restrictions", Some(body), |v| {
                    format!(
                        "restricted {subject}: {} denied at {} (restriction {})",
                        v["permission"].as_str().unwrap_or("every permission"),
                        table::scope_text(&v["scope"]),
                        cell(&v["id"])
                    )
                })
                .await?
            }
            RestrictionsCommand::List { subject, local } => {
                list_by_subject(
                    c,
                    "restrictions",
                    subject.as_deref(),
                    local,
                    RESTRICTION_COLUMNS,
                )
                .await?
            }
            RestrictionsCommand::Remove { id } => {
                delete_view(
                    c,
                    &format!("/restrictions/{id}"),
                    format!("removed restriction {id}"),
                )
                .await?
            }
        },
        CtlCommand::Keys { command } => jwt::keys(c, command).await?,
        CtlCommand::Approvals { command } => approvals::approvals(c, command).await?,
        CtlCommand::Delegations { command } => approvals::delegations(c, command).await?,
        CtlCommand::Templates { command } => templates::templates(c, command).await?,
        CtlCommand::Placement { command } => placement::placement(c, command).await?,
        CtlCommand::Backup(_) => bail!("backup is run by run_to"),
        CtlCommand::Usage(_) => bail!("usage is run by run_to"),
        CtlCommand::Audit { command } => match command {
            AuditCommand::Query {
                tenant,
                kind,
                principal,
                outcome,
                action,
                after_seq,
                limit,
            } => {
                let mut params = vec![format!("tenant={}", seg(&tenant))];
                for (k, v) in [
                    ("kind", kind),
                    ("principal", principal),
                    ("outcome", outcome),
                    ("action", action),
                ] {
                    if let Some(v) = v {
                        params.push(format!("{k}={}", seg(&v)));
                    }
                }
                if let Some(after) = after_seq {
                    params.push(format!("after_seq={after}"));
                }
                if let Some(limit) = limit {
                    params.push(format!("limit={limit}"));
                }
                let v = c
                    .call(
                        Method::GET,
                        &format!("/audit/records?{}", params.join("&")),
                        None,
                    )
                    .await?;
                (v, View::Records)
            }
            AuditCommand::Verify { .. } => {
                let v = c.call(Method::GET, "/audit/verify", None).await?;
                (v, View::Verify)
            }
            AuditCommand::SetRetention {
                max_records_per_chain,
            } => {
                let v = c
                    .call(
                        Method::PUT,
                        "/audit/retention",
                        Some(json!({"max_records_per_chain": max_records_per_chain})),
                    )
                    .await?;
                (
                    v,
                    View::Message(format!(
                        "audit retention: {max_records_per_chain} records per chain"
                    )),
                )
            }
            AuditCommand::Tail { .. } | AuditCommand::Export { .. } => {
                bail!("this audit command is run by run_to")
            }
        },
    })
}

/// An HTTP client bound to one node's admin API.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Sent with every change (`--justification`).
    justification: Option<String>,
}

impl Client {
    fn new(args: &CtlArgs) -> anyhow::Result<Self> {
        let token = args
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .context("no admin token: pass --token or set QUIRE_ADMIN_TOKEN (`quire serve --sandbox` writes one to <data-dir>/client.json)")?;
        let url = args.url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--url must start with http:// or https://, got {url:?}");
        }
        let timeout = Duration::from_secs(args.timeout_secs);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)));
        if let Some(path) = &args.ca_file {
            builder = builder.tls_certs_only(read_ca_file(path)?);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base: format!("{url}/admin/v1"),
            token: token.trim().to_owned(),
            justification: args.justification.clone().filter(|j| !j.trim().is_empty()),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, bytes, url) = self
            .send(method.clone(), path, body, MAX_RESPONSE_BYTES)
            .await?;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return value.with_context(|| format!("{method} {url}: the response is not JSON"));
        }
        Err(refused(&method, &url, status, &bytes))
    }

    /// Sends one request; a change carries the `--justification`. Returns the status, the
    /// body (at most `max_bytes`) and the URL.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        max_bytes: usize,
    ) -> anyhow::Result<(reqwest::StatusCode, Vec<u8>, String)> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        let body = match (&self.justification, method == reqwest::Method::GET) {
            (Some(why), false) => {
                let mut body = body.unwrap_or_else(|| json!({}));
                body["justification"] = why.clone().into();
                Some(body)
            }
            _ => body,
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = request.send().await.map_err(|e| request_error(&e, &url))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| request_error(&e, &url))?
        {
            if bytes.len() + chunk.len() > max_bytes {
                bail!("{method} {url}: the response is larger than {max_bytes} bytes");
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, bytes, url))
    }
}

/// The error for a refused request: the server's message, status and code.
fn refused(
    method: &reqwest::Method,
    url: &str,
    status: reqwest::StatusCode,
    bytes: &[u8],
) -> anyhow::Error {
    match serde_json::from_slice::<Value>(bytes).ok() {
        Some(v) if v["message"].is_string() => anyhow::anyhow!(
            "{} (HTTP {}, {})",
            v["message"].as_str().unwrap_or_default(),
            status.as_u16(),
            v["error"].as_str().unwrap_or("error")
        ),
        _ => anyhow::anyhow!(
            "{method} {url} answered HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        ),
    }
}

/// Largest CA file read, in bytes.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// The certificates of a PEM CA file (`--ca-file`).
fn read_ca_file(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read --ca-file {}", path.display()))?
        .len();
    if size > MAX_CA_FILE_BYTES {
        bail!(
            "--ca-file {} is {size} bytes, more than {MAX_CA_FILE_BYTES}",
            path.display()
        );
    }
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read --ca-file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("--ca-file {} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!(
            "--ca-file {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

fn request_error(e: &reqwest::Error, url: &str) -> anyhow::Error {
    if e.is_timeout() {
        anyhow::anyhow!(
            "{url}: no answer within the deadline (--timeout-secs); a change may still have been applied: check with a list before retrying"
        )
    } else if e.is_connect() && url.starts_with("https://") {
        anyhow::anyhow!(
            "cannot connect to {url}: {}: is a node running there, serving HTTPS? (set --url or QUIRE_URL; --ca-file or QUIRE_CA_FILE to trust a private CA)",
            error_chain(e)
        )
    } else if e.is_connect() {
        anyhow::anyhow!(
            "cannot connect to {url}: is a node running there? (set --url or QUIRE_URL)"
        )
    } else {
        anyhow::anyhow!("{url}: {e}")
    }
}

/// An error with its sources, `a: b: c` (reqwest's own message hides a TLS failure's cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    #[test]
    fn parses_commands_and_globals() {
        let cli = Cli::try_parse_from([
            "ctl",
            "tokens",
            "issue",
            "--tenant",
            "acme",
            "--principal",
            "bot",
            "--workspace",
            "docs",
            "--scope",
            "mcp_server_access,notion_workspace_read",
            "--json",
            "--url",
            "http://h:1",
            "--token",
            "qa_x",
        ])
        .unwrap();
        assert!(cli.ctl.json);
        assert_eq!(cli.ctl.url, "http://h:1");
        match cli.ctl.command {
            CtlCommand::Tokens {
                command: TokensCommand::Issue { scopes, .. },
            } => assert_eq!(scopes, ["mcp_server_access", "notion_workspace_read"]),
            other => panic!("{other:?}"),
        }
        // The Notion token is never a plain flag.
        assert!(
            Cli::try_parse_from([
                "ctl",
                "integrations",
                "add",
                "--tenant",
                "a",
                "i",
                "--notion-token",
                "secret"
            ])
            .is_err()
        );
    }

    #[test]
    fn an_issued_secret_is_printed_whole() {
        let secret = format!("qk_{}", "ab".repeat(32));
        let value = json!({"token_id": "tok-1", "token": secret, "expires_at_ms": null});
        let mut out = Vec::new();
        View::Secret("issued token")
            .render(&value, &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("token: {secret}\n")), "{text}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("acme-1_x"), "acme-1_x");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn notion_token_from_env_or_file() {
        let none = NotionTokenSource {
            notion_token_file: None,
        };
        assert_eq!(
            notion_token(&none, &|_| Some(" ntn_abc \n".into())).unwrap(),
            "ntn_abc"
        );
        let e = notion_token(&none, &|_| None).unwrap_err();
        assert!(e.to_string().contains("--notion-token-file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "ntn_file\n").unwrap();
        let file = NotionTokenSource {
            notion_token_file: Some(path),
        };
        assert_eq!(notion_token(&file, &|_| None).unwrap(), "ntn_file");
    }
}
