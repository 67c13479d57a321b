//! Node configuration: a TOML file, then `QUIRE_*` environment variables, then command-line
//! flags, each overriding the one before. Every setting has a default that runs a working
//! node on loopback; `Config::validate` reports every problem at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub mcp: McpSection,
    pub notion: NotionSection,
    pub limits: LimitsSection,
    pub security: SecuritySection,
    pub raft: RaftSection,
    pub peer: PeerSection,
    pub sandbox: SandboxSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    pub placement: PlacementSection,
}

/// The placement controller (on the leader) and its shard moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementSection {
    /// How often the leader plans and proposes a round of shard moves.
    pub interval_ms: u64,
    /// Most shard moves one round proposes.
    pub max_moves_per_round: usize,
    /// A member that has not answered for this long receives no new shards.
    pub suspect_after_ms: u64,
    /// A member that has not answered for this long loses its shards (its grace period).
    pub grace_ms: u64,
}

impl Default for PlacementSection {
    fn default() -> Self {
        Self {
            interval_ms: 2_000,
            max_moves_per_round: 64,
            suspect_after_ms: 6_000,
            grace_ms: 30_000,
        }
    }
}

/// Largest `placement.grace_ms` and `placement.interval_ms` (one hour).
pub const MAX_PLACEMENT_MS: u64 = 3_600_000;

/// `GET /metrics` on the HTTP front.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Ask scrapers for an admin token (`Authorization: Bearer`). Off by default: scrape the
    /// node on a private interface, or put the HTTP front behind a proxy that keeps
    /// `/metrics` in.
    pub require_token: bool,
}

/// Log output on stderr.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (human-readable lines) or `json` (one object per line).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?} is neither text nor json")),
        }
    }
}

/// The peer network: gRPC between nodes over mutual TLS. Without `peer.listen` a node runs
/// as a group of one and talks to no peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerSection {
    /// Where this node's peer gRPC listener binds (its own port, never the HTTP one).
    pub listen: Option<SocketAddr>,
    /// `host:port` other nodes use to reach this node's peer listener. Defaults to `listen`.
    pub advertise: Option<String>,
    /// Directory with this node's `node.pem`, `node.key` and the cluster's `ca.pem`
    /// (`quire certs node` writes it).
    pub tls_dir: Option<PathBuf>,
    /// Talk plaintext gRPC to peers. Only for tests on one machine; logs a warning.
    pub insecure: bool,
    /// On first start, join the cluster through this member's peer address (`host:port`).
    pub join: Option<String>,
    /// A static member list: every node of the cluster starts with the same list, and the
    /// group forms from it on first start.
    pub members: Vec<StaticMember>,
    /// Deadline of a peer request other than Raft's own.
    pub request_timeout_ms: u64,
    /// Deadline of one snapshot chunk.
    pub snapshot_timeout_ms: u64,
    /// Requests in flight to one peer.
    pub max_in_flight_per_peer: usize,
    /// Let the admin API cut and heal this node's links to peers (`/admin/v1/test/faults`).
    /// For failure tests only; never in production.
    pub fault_injection: bool,
}

/// One member of a static member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMember {
    pub id: u64,
    /// Its peer address, `host:port`.
    pub addr: String,
}

impl Default for PeerSection {
    fn default() -> Self {
        Self {
            listen: None,
            advertise: None,
            tls_dir: None,
            insecure: false,
            join: None,
            members: Vec::new(),
            request_timeout_ms: 5_000,
            snapshot_timeout_ms: 30_000,
            max_in_flight_per_peer: 256,
            fault_injection: false,
        }
    }
}

impl PeerSection {
    /// The address peers use to reach this node, if it has a peer listener.
    pub fn advertised(&self) -> Option<String> {
        self.advertise
            .clone()
            .or_else(|| self.listen.map(|a| a.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Raft node id, unique in the cluster (≥ 1).
    pub id: u64,
    /// Name of the cluster; a data dir made for another cluster is refused.
    pub cluster_name: String,
    /// Where the Raft log and state machine live (sled).
    pub data_dir: PathBuf,
    /// HTTP front: MCP endpoint, admin API, health.
    pub listen: SocketAddr,
    /// The URL agents use to reach this node (printed, written to client.json).
    /// Defaults to `https://<listen>` with TLS, `http://<listen>` without.
    pub public_url: Option<String>,
    /// PEM certificate chain the HTTP front serves over TLS (leaf first). With
    /// `tls_key_file`; reloaded on SIGHUP and when the file changes.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Oldest TLS version the HTTP front accepts: "1.3" (default) or "1.2".
    pub tls_min_version: String,
    /// Serve plain HTTP on an address other than loopback (behind a TLS-terminating proxy,
    /// say). Without it, a node without TLS files listens on loopback only.
    pub allow_plain_http: bool,
    /// How long a node asked to stop (SIGTERM, Ctrl-C) lets the MCP and admin requests it
    /// already took finish, answering new ones 503 with `Retry-After`, before it stops.
    pub shutdown_grace_ms: u64,
    /// The region this node runs in (1-63 of a-z, 0-9, '-'): tenants' residency policies
    /// name regions.
    pub region: String,
    /// The zone inside the region, if any (same spelling).
    pub zone: Option<String>,
    /// This node's weight in shard placement (1..=10000): twice the capacity, about twice
    /// the shards.
    pub capacity: u32,
}

/// Largest `node.shutdown_grace_ms` (ten minutes).
pub const MAX_SHUTDOWN_GRACE_MS: u64 = 600_000;

/// TLS versions `node.tls_min_version` accepts.
pub const TLS_MIN_VERSIONS: [&str; 2] = ["1.3", "1.2"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSection {
    /// `Host` header values the MCP endpoint accepts (DNS-rebinding protection). Add the
    /// names agents use to reach the node.
    pub allowed_hosts: Vec<String>,
    /// Largest MCP request body accepted (413 above).
    pub max_request_body_bytes: usize,
    /// An idle MCP session is closed after this long (and forgotten by the cluster within
    /// 1.25 times this long).
    pub session_idle_timeout_secs: u64,
    /// Most open MCP sessions of one tenant, cluster-wide (an `initialize` beyond it gets 503).
    pub max_sessions_per_tenant: u32,
    /// Most open MCP sessions in the cluster.
    pub max_sessions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotionSection {
    /// Notion API base URL (`https://api.notion.com`, or a sandbox).
    pub base_url: String,
    /// `Notion-Version` header sent with every request.
    pub version: String,
    pub request_timeout_ms: u64,
    /// Retries of one request on 500/502/503/504 (429 and 529 pause the integration instead).
    pub max_retries: u32,
    pub retry_base_ms: u64,
    /// Largest Notion response read.
    pub max_response_bytes: usize,
    /// The local address Notion requests leave from (a host with several addresses whose
    /// egress to Notion must be the one an allowlist names); unset: the system's choice.
    pub local_address: Option<std::net::IpAddr>,
    /// Budget of a new integration unless given: average requests per second.
    pub default_requests_per_second: u32,
    /// Budget of a new integration unless given: burst size (keep it below Notion's).
    pub default_burst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// How long one Notion request may wait for its integration's budget before the tool
    /// call fails with `rate_limited`.
    pub call_deadline_ms: u64,
    /// Calls queued at one integration's rate limiter, across all sessions.
    pub limiter_queue_capacity: usize,
    /// Calls queued at one integration's rate limiter by one session.
    pub limiter_per_session_capacity: usize,
    /// Notion requests one session may have in flight at once.
    pub max_in_flight_per_session: usize,
    /// Tenant supervisors one node runs at once.
    pub max_tenants: usize,
    /// A tenant supervisor idle this long (no call, nothing in flight, every integration
    /// unpaused with a full bucket) stops, and the tenant's next call starts a new one;
    /// 0 never stops them.
    pub idle_tenant_ms: u64,
    /// Admin API requests one node serves at once; more get 503 at once.
    pub admin_max_in_flight: usize,
    /// Audit events waiting to be committed on one node; when full, a tool call fails
    /// closed (`audit_unavailable`) rather than run unaudited.
    pub audit_queue_capacity: usize,
    /// Most audit events committed in one Raft entry (group commit).
    pub audit_max_batch: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// File holding the master key (64 hex characters or base64 of 32 bytes) that seals
    /// Notion tokens. `QUIRE_MASTER_KEY` (the key itself) takes precedence.
    pub master_key_file: Option<PathBuf>,
    /// Files of previous master keys, kept in the key ring during a rotation: they open what
    /// they sealed, nothing new is sealed under them. Drop one once `quire ctl keys status`
    /// says it seals nothing.
    pub previous_master_key_files: Vec<PathBuf>,
    /// The revocation bound: a node authorizes agents only with access rules confirmed
    /// current (through the leader's read index) within this many ms, and a revocation is
    /// acknowledged only this long after it committed, so once acknowledged no node
    /// authorizes a request that relied on what was revoked.
    pub authz_max_staleness_ms: u64,
    /// The built-in JWT issuer (`iss`); default `quire:<cluster_name>`. The same on every
    /// node of a cluster, independent of any node's URL.
    pub jwt_issuer: Option<String>,
    /// The audience (`aud`, RFC 8707) built-in JWTs are issued for and every node accepts;
    /// default `urn:quire:<cluster_name>:mcp`. Set it to the URL agents use for `/mcp` behind
    /// a load balancer. A node also accepts its own `<public_url>/mcp`.
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on a JWT's `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Longest lifetime of a built-in JWT, in seconds; also how long a key replaced by a
    /// rotation keeps validating unless the rotation says otherwise.
    pub jwt_max_ttl_secs: u64,
    /// Lifetime of a built-in JWT whose issue request names none, in seconds.
    pub jwt_default_ttl_secs: u64,
    /// PEM file of the CA certificates trusted for OpenID Connect providers (discovery and
    /// JWKS); default: the system's roots.
    pub oidc_ca_file: Option<PathBuf>,
    /// How long a provider's discovery document and keys are cached, in seconds.
    pub oidc_jwks_cache_ttl_secs: u64,
    /// Least time between two fetches of one provider's keys, in ms: a token with an unknown
    /// `kid` refetches them at most this often, so a flood of bogus kids cannot hammer it.
    pub oidc_refetch_min_interval_ms: u64,
    /// Deadline of one request to a provider, in ms.
    pub oidc_fetch_timeout_ms: u64,
    /// URL prefixes an OpenID Connect issuer must start with (e.g.
    /// `https://login.example.com/`). Empty: any `https://` issuer, which lets a tenant admin
    /// make nodes fetch from any HTTPS address; set it on networks where that matters.
    pub oidc_allowed_issuers: Vec<String>,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            master_key_file: None,
            previous_master_key_files: Vec::new(),
            authz_max_staleness_ms: 1_000,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 30,
            jwt_max_ttl_secs: 24 * 3600,
            jwt_default_ttl_secs: 3600,
            oidc_ca_file: None,
            oidc_jwks_cache_ttl_secs: 300,
            oidc_refetch_min_interval_ms: 10_000,
            oidc_fetch_timeout_ms: 5_000,
            oidc_allowed_issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) after this many log entries.
    pub snapshot_every_logs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// With `serve --sandbox`: where the in-process Notion sandbox listens.
    pub listen: SocketAddr,
    /// Seed of the sandbox's demo content and request ids.
    pub seed: u64,
    /// The sandbox's own rate limit per integration (requests/s; 0 turns it off).
    pub rate_limit_per_second: u32,
    pub rate_limit_capacity: u32,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: 1,
            cluster_name: "quire".into(),
            data_dir: PathBuf::from("quire-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            public_url: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_min_version: "1.3".into(),
            allow_plain_http: false,
            shutdown_grace_ms: 10_000,
            region: quire_raft::placement::DEFAULT_REGION.into(),
            zone: None,
            capacity: quire_raft::placement::DEFAULT_CAPACITY,
        }
    }
}

impl Default for McpSection {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            max_request_body_bytes: 4 * 1024 * 1024,
            session_idle_timeout_secs: 300,
            max_sessions_per_tenant: 1_000,
            max_sessions: 10_000,
        }
    }
}

impl Default for NotionSection {
    fn default() -> Self {
        Self {
            base_url: "https://api.notion.com".into(),
            version: "2025-09-03".into(),
            request_timeout_ms: 30_000,
            max_retries: 2,
            retry_base_ms: 200,
            max_response_bytes: 8 * 1024 * 1024,
            local_address: None,
            default_requests_per_second: 3,
            default_burst: 5,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            call_deadline_ms: 60_000,
            limiter_queue_capacity: 1024,
            limiter_per_session_capacity: 256,
            max_in_flight_per_session: 16,
            max_tenants: 10_000,
            idle_tenant_ms: 300_000,
            admin_max_in_flight: 64,
            audit_queue_capacity: 10_000,
            audit_max_batch: 512,
        }
    }
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every_logs: 5_000,
        }
    }
}

impl Default for SandboxSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            rate_limit_per_second: 3,
            rate_limit_capacity: 10,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?} is not valid: {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    #[error("the configuration has {} problem(s):\n  - {}", .0.len(), .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads a TOML config file. Unknown keys are errors (a typo must not be ignored).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `QUIRE_*` environment variables (see the README's configuration reference).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse::<T>().map_err(|e| ConfigError::Env {
                name,
                value,
                message: e.to_string(),
            })
        }
        if let Some(v) = get("QUIRE_NODE_ID") {
            self.node.id = parse("QUIRE_NODE_ID", v)?;
        }
        if let Some(v) = get("QUIRE_CLUSTER_NAME") {
            self.node.cluster_name = v;
        }
        if let Some(v) = get("QUIRE_DATA_DIR") {
            self.node.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("QUIRE_LISTEN") {
            self.node.listen = parse("QUIRE_LISTEN", v)?;
        }
        if let Some(v) = get("QUIRE_PUBLIC_URL") {
            self.node.public_url = Some(v);
        }
        if let Some(v) = get("QUIRE_TLS_CERT_FILE") {
            self.node.tls_cert_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("QUIRE_TLS_KEY_FILE") {
            self.node.tls_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("QUIRE_TLS_MIN_VERSION") {
            self.node.tls_min_version = v;
        }
        if let Some(v) = get("QUIRE_ALLOW_PLAIN_HTTP") {
            self.node.allow_plain_http = parse("QUIRE_ALLOW_PLAIN_HTTP", v)?;
        }
        if let Some(v) = get("QUIRE_REGION") {
            self.node.region = v;
        }
        if let Some(v) = get("QUIRE_ZONE") {
            self.node.zone = Some(v).filter(|z| !z.is_empty());
        }
        if let Some(v) = get("QUIRE_SHUTDOWN_GRACE_MS") {
            self.node.shutdown_grace_ms = parse("QUIRE_SHUTDOWN_GRACE_MS", v)?;
        }
        if let Some(v) = get("QUIRE_ALLOWED_HOSTS") {
            self.mcp.allowed_hosts = v
                .split(',')
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect();
        }
        if let Some(v) = get("QUIRE_NOTION_BASE_URL") {
            self.notion.base_url = v;
        }
        if let Some(v) = get("QUIRE_NOTION_LOCAL_ADDRESS") {
            self.notion.local_address = if v.trim().is_empty() {
                None
            } else {
                Some(parse("QUIRE_NOTION_LOCAL_ADDRESS", v)?)
            };
        }
        if let Some(v) = get("QUIRE_PEER_LISTEN") {
            self.peer.listen = Some(parse("QUIRE_PEER_LISTEN", v)?);
        }
        if let Some(v) = get("QUIRE_PEER_ADVERTISE") {
            self.peer.advertise = Some(v);
        }
        if let Some(v) = get("QUIRE_TLS_DIR") {
            self.peer.tls_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("QUIRE_JOIN") {
            self.peer.join = Some(v);
        }
        if let Some(v) = get("QUIRE_FAULT_INJECTION") {
            self.peer.fault_injection = parse("QUIRE_FAULT_INJECTION", v)?;
        }
        if let Some(v) = get("QUIRE_MASTER_KEY_FILE") {
            self.security.master_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("QUIRE_PREVIOUS_MASTER_KEY_FILES") {
            self.security.previous_master_key_files = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        if let Some(v) = get("QUIRE_AUDIT_MAX_BATCH") {
            self.limits.audit_max_batch = parse("QUIRE_AUDIT_MAX_BATCH", v)?;
        }
        if let Some(v) = get("QUIRE_METRICS_REQUIRE_TOKEN") {
            self.metrics.require_token = parse("QUIRE_METRICS_REQUIRE_TOKEN", v)?;
        }
        if let Some(v) = get("QUIRE_LOG_FORMAT") {
            self.log.format = parse("QUIRE_LOG_FORMAT", v)?;
        }
        if let Some(v) = get("QUIRE_AUTHZ_MAX_STALENESS_MS") {
            self.security.authz_max_staleness_ms = parse("QUIRE_AUTHZ_MAX_STALENESS_MS", v)?;
        }
        if let Some(v) = get("QUIRE_PLACEMENT_SUSPECT_AFTER_MS") {
            self.placement.suspect_after_ms = parse("QUIRE_PLACEMENT_SUSPECT_AFTER_MS", v)?;
        }
        if let Some(v) = get("QUIRE_PLACEMENT_GRACE_MS") {
            self.placement.grace_ms = parse("QUIRE_PLACEMENT_GRACE_MS", v)?;
        }
        Ok(())
    }

    /// Every problem with the configuration, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.node.id == 0 {
            problems.push("node.id must be at least 1".to_owned());
        }
        if !valid_name(&self.node.cluster_name) {
            problems.push(format!(
                "node.cluster_name {:?} must be 1-64 characters of a-z, 0-9, '-' or '_'",
                self.node.cluster_name
            ));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            problems.push("node.data_dir must not be empty".to_owned());
        }
        if let Some(url) = &self.node.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "node.public_url {url:?} must start with http:// or https://"
            ));
        }
        self.validate_http_front(&mut problems);
        if self.node.shutdown_grace_ms > MAX_SHUTDOWN_GRACE_MS {
            problems.push(format!(
                "node.shutdown_grace_ms must be at most {MAX_SHUTDOWN_GRACE_MS} (ten minutes)"
            ));
        }
        if self.mcp.allowed_hosts.is_empty() {
            problems.push("mcp.allowed_hosts must name at least one host".to_owned());
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.mcp.max_request_body_bytes) {
            problems
                .push("mcp.max_request_body_bytes must be between 1024 and 67108864".to_owned());
        }
        if self.mcp.session_idle_timeout_secs == 0 {
            problems.push("mcp.session_idle_timeout_secs must be at least 1".to_owned());
        }
        if self.mcp.session_idle_timeout_secs > 7 * 24 * 3600 {
            problems
                .push("mcp.session_idle_timeout_secs must be at most 604800 (a week)".to_owned());
        }
        if self.mcp.max_sessions_per_tenant == 0
            || self.mcp.max_sessions_per_tenant > self.mcp.max_sessions
            || self.mcp.max_sessions > quire_raft::sessions::MAX_SESSIONS_TOTAL
        {
            problems.push(format!(
                "mcp.max_sessions_per_tenant and mcp.max_sessions must satisfy 1 <= max_sessions_per_tenant <= max_sessions <= {}",
                quire_raft::sessions::MAX_SESSIONS_TOTAL
            ));
        }
        if !(self.notion.base_url.starts_with("http://")
            || self.notion.base_url.starts_with("https://"))
        {
            problems.push(format!(
                "notion.base_url {:?} must start with http:// or https://",
                self.notion.base_url
            ));
        }
        if self.notion.version.is_empty() {
            problems.push("notion.version must not be empty".to_owned());
        }
        if self.notion.request_timeout_ms == 0 {
            problems.push("notion.request_timeout_ms must be at least 1".to_owned());
        }
        if self.notion.max_retries > 10 {
            problems.push("notion.max_retries must be at most 10".to_owned());
        }
        if self.notion.default_requests_per_second == 0 || self.notion.default_burst == 0 {
            problems.push(
                "notion.default_requests_per_second and notion.default_burst must be at least 1"
                    .to_owned(),
            );
        }
        if !(50..=60_000).contains(&self.security.authz_max_staleness_ms) {
            problems.push("security.authz_max_staleness_ms must be in 50..=60000".to_owned());
        }
        self.validate_jwt(&mut problems);
        if self.limits.call_deadline_ms == 0 {
            problems.push("limits.call_deadline_ms must be at least 1".to_owned());
        }
        if self.limits.limiter_queue_capacity == 0
            || self.limits.limiter_per_session_capacity == 0
            || self.limits.max_in_flight_per_session == 0
            || self.limits.max_tenants == 0
            || self.limits.admin_max_in_flight == 0
            || self.limits.audit_queue_capacity == 0
            || self.limits.audit_max_batch == 0
        {
            problems.push("every limits.* capacity must be at least 1".to_owned());
        }
        if self.limits.audit_max_batch > quire_raft::audit::MAX_AUDIT_BATCH {
            problems.push(format!(
                "limits.audit_max_batch must be at most {}",
                quire_raft::audit::MAX_AUDIT_BATCH
            ));
        }
        if self.limits.idle_tenant_ms > quire_actors::supervisor::MAX_IDLE_TENANT_MS {
            problems.push(format!(
                "limits.idle_tenant_ms must be at most {} (a day; 0 never passivates tenants)",
                quire_actors::supervisor::MAX_IDLE_TENANT_MS
            ));
        }
        if self.limits.limiter_per_session_capacity > self.limits.limiter_queue_capacity {
            problems.push(
                "limits.limiter_per_session_capacity must not exceed limits.limiter_queue_capacity"
                    .to_owned(),
            );
        }
        if self.raft.heartbeat_ms == 0
            || self.raft.election_timeout_min_ms <= self.raft.heartbeat_ms
            || self.raft.election_timeout_max_ms <= self.raft.election_timeout_min_ms
        {
            problems.push(
                "raft timings must satisfy 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms"
                    .to_owned(),
            );
        }
        if self.raft.snapshot_every_logs == 0 {
            problems.push("raft.snapshot_every_logs must be at least 1".to_owned());
        }
        self.validate_peer(&mut problems);
        self.validate_placement(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The node's labels as the placement state records them.
    pub fn node_labels(&self) -> quire_raft::placement::NodeLabels {
        quire_raft::placement::NodeLabels {
            region: self.node.region.clone(),
            zone: self.node.zone.clone(),
            capacity: self.node.capacity,
        }
    }

    fn validate_placement(&self, problems: &mut Vec<String>) {
        use quire_raft::placement::{MAX_CAPACITY, MAX_MOVES_PER_COMMAND, check_label};
        if let Err(e) = check_label("node.region", &self.node.region) {
            problems.push(e.to_string());
        }
        if let Some(zone) = &self.node.zone
            && let Err(e) = check_label("node.zone", zone)
        {
            problems.push(e.to_string());
        }
        if !(1..=MAX_CAPACITY).contains(&self.node.capacity) {
            problems.push(format!("node.capacity must be in 1..={MAX_CAPACITY}"));
        }
        let p = &self.placement;
        if !(100..=MAX_PLACEMENT_MS).contains(&p.interval_ms) {
            problems.push(format!(
                "placement.interval_ms must be in 100..={MAX_PLACEMENT_MS}"
            ));
        }
        if !(1..=MAX_MOVES_PER_COMMAND).contains(&p.max_moves_per_round) {
            problems.push(format!(
                "placement.max_moves_per_round must be in 1..={MAX_MOVES_PER_COMMAND}"
            ));
        }
        if p.suspect_after_ms == 0
            || p.suspect_after_ms > p.grace_ms
            || p.grace_ms > MAX_PLACEMENT_MS
        {
            problems.push(format!(
                "placement timings must satisfy 0 < suspect_after_ms <= grace_ms <= {MAX_PLACEMENT_MS}"
            ));
        }
    }

    fn validate_http_front(&self, problems: &mut Vec<String>) {
        let node = &self.node;
        match (&node.tls_cert_file, &node.tls_key_file) {
            (Some(_), None) => problems
                .push("node.tls_cert_file needs node.tls_key_file (the certificate's key)".into()),
            (None, Some(_)) => problems
                .push("node.tls_key_file needs node.tls_cert_file (the certificate chain)".into()),
            _ => {}
        }
        for (name, path) in [
            ("node.tls_cert_file", &node.tls_cert_file),
            ("node.tls_key_file", &node.tls_key_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                problems.push(format!("{name} must not be empty"));
            }
        }
        if !TLS_MIN_VERSIONS.contains(&node.tls_min_version.as_str()) {
            problems.push(format!(
                "node.tls_min_version {:?} must be \"1.3\" or \"1.2\"",
                node.tls_min_version
            ));
        }
        if !self.https() && !node.listen.ip().is_loopback() && !node.allow_plain_http {
            problems.push(format!(
                "node.listen {} is not a loopback address: serve HTTPS (set node.tls_cert_file and node.tls_key_file), or set node.allow_plain_http = true to serve plain HTTP there (behind a TLS-terminating proxy)",
                node.listen
            ));
        }
    }

    /// Whether the HTTP front serves TLS (both certificate and key files are set).
    pub fn https(&self) -> bool {
        self.node.tls_cert_file.is_some() && self.node.tls_key_file.is_some()
    }

    fn validate_peer(&self, problems: &mut Vec<String>) {
        let peer = &self.peer;
        if peer.listen.is_some() && peer.tls_dir.is_none() && !peer.insecure {
            problems.push(
                "peer.listen needs peer.tls_dir (make one with `quire certs node`), or peer.insecure = true for a test on one machine"
                    .to_owned(),
            );
        }
        if peer.listen.is_none() && (peer.join.is_some() || !peer.members.is_empty()) {
            problems.push("peer.join and peer.members need peer.listen".to_owned());
        }
        if peer.join.is_some() && !peer.members.is_empty() {
            problems.push("set either peer.join or peer.members, not both".to_owned());
        }
        if !peer.members.is_empty() {
            let ids: std::collections::BTreeSet<u64> = peer.members.iter().map(|m| m.id).collect();
            if ids.len() != peer.members.len() {
                problems.push("peer.members names a node id twice".to_owned());
            }
            if !ids.contains(&self.node.id) {
                problems.push(format!(
                    "peer.members does not name this node (node.id = {})",
                    self.node.id
                ));
            }
            if ids.contains(&0) {
                problems.push("peer.members ids must be at least 1".to_owned());
            }
        }
        let addrs = peer
            .join
            .iter()
            .chain(peer.advertise.iter())
            .chain(peer.members.iter().map(|m| &m.addr));
        for addr in addrs {
            if addr.contains("://") || !addr.contains(':') {
                problems.push(format!(
                    "peer address {addr:?} must be host:port (no scheme)"
                ));
            }
        }
        if peer.request_timeout_ms == 0
            || peer.snapshot_timeout_ms == 0
            || peer.max_in_flight_per_peer == 0
        {
            problems.push(
                "peer.request_timeout_ms, peer.snapshot_timeout_ms and peer.max_in_flight_per_peer must be at least 1"
                    .to_owned(),
            );
        }
    }

    fn validate_jwt(&self, problems: &mut Vec<String>) {
        let s = &self.security;
        for (key, value) in [
            ("jwt_issuer", &s.jwt_issuer),
            ("jwt_audience", &s.jwt_audience),
        ] {
            if let Some(v) = value
                && (v.trim().is_empty() || v.len() > 512 || v.chars().any(char::is_control))
            {
                problems.push(format!(
                    "security.{key} must be 1-512 characters without control characters"
                ));
            }
        }
        if s.jwt_leeway_secs > 300 {
            problems.push("security.jwt_leeway_secs must be at most 300".to_owned());
        }
        if !(60..=366 * 24 * 3600).contains(&s.jwt_max_ttl_secs) {
            problems.push("security.jwt_max_ttl_secs must be in 60..=31622400".to_owned());
        }
        if s.jwt_default_ttl_secs == 0 || s.jwt_default_ttl_secs > s.jwt_max_ttl_secs {
            problems.push(
                "security.jwt_default_ttl_secs must be at least 1 and at most security.jwt_max_ttl_secs"
                    .to_owned(),
            );
        }
        if !(1..=86_400).contains(&s.oidc_jwks_cache_ttl_secs) {
            problems.push("security.oidc_jwks_cache_ttl_secs must be in 1..=86400".to_owned());
        }
        if s.oidc_refetch_min_interval_ms > 3_600_000 {
            problems
                .push("security.oidc_refetch_min_interval_ms must be at most 3600000".to_owned());
        }
        if let Some(bad) = s
            .oidc_allowed_issuers
            .iter()
            .find(|p| !p.starts_with("https://") || p.len() <= "https://".len())
        {
            problems.push(format!(
                "security.oidc_allowed_issuers: {bad:?} must be an https:// URL prefix"
            ));
        }
        if !(100..=60_000).contains(&s.oidc_fetch_timeout_ms) {
            problems.push("security.oidc_fetch_timeout_ms must be in 100..=60000".to_owned());
        }
    }

    /// The base URL agents use to reach this node.
    pub fn public_url(&self) -> String {
        match &self.node.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if self.https() => format!("https://{}", self.node.listen),
            None => format!("http://{}", self.node.listen),
        }
    }
}

/// Names used in config and identifiers: 1-64 of `[a-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn idle_tenant_ms_is_bounded_and_zero_is_off() {
        let c = Config::from_toml("[limits]\nidle_tenant_ms = 0\n").unwrap();
        assert_eq!(c.limits.idle_tenant_ms, 0);
        c.validate().unwrap();
        assert_eq!(Config::default().limits.idle_tenant_ms, 300_000);
        let mut c = Config::default();
        c.limits.idle_tenant_ms = quire_actors::supervisor::MAX_IDLE_TENANT_MS + 1;
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("limits.idle_tenant_ms"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("[node]\nlisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn file_values_override_defaults_and_keep_the_rest() {
        let c = Config::from_toml("[node]\nid = 3\n[notion]\nbase_url = \"http://127.0.0.1:9\"\n")
            .unwrap();
        assert_eq!(c.node.id, 3);
        assert_eq!(c.notion.base_url, "http://127.0.0.1:9");
        assert_eq!(c.notion.version, "2025-09-03");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = Config::default();
        c.node.id = 0;
        c.notion.base_url = "ftp://x".into();
        c.limits.call_deadline_ms = 0;
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn peer_settings_are_checked_together() {
        let mut c = Config::default();
        c.peer.listen = Some(SocketAddr::from(([127, 0, 0, 1], 7900)));
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert!(problems[0].contains("tls_dir"), "{problems:?}");
        c.peer.insecure = true;
        c.validate().unwrap();
        c.peer.join = Some("https://10.0.0.1:7900".into());
        c.peer.members = vec![StaticMember {
            id: 2,
            addr: "10.0.0.2:7900".into(),
        }];
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn the_http_front_needs_tls_off_loopback() {
        let mut c = Config::default();
        c.node.listen = SocketAddr::from(([10, 0, 0, 1], 7800));
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        for setting in ["node.tls_cert_file", "node.allow_plain_http"] {
            assert!(problems[0].contains(setting), "{problems:?}");
        }
        c.node.allow_plain_http = true;
        c.validate().unwrap();
        assert_eq!(c.public_url(), "http://10.0.0.1:7800");

        c.node.allow_plain_http = false;
        c.node.tls_cert_file = Some("/etc/quire/tls/http.pem".into());
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("node.tls_key_file"), "{problems:?}");
        c.node.tls_key_file = Some("/etc/quire/tls/http.key".into());
        c.validate().unwrap();
        assert_eq!(c.public_url(), "https://10.0.0.1:7800");

        c.node.tls_min_version = "1.1".into();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert!(problems[0].contains("tls_min_version"), "{problems:?}");
        c.node.tls_min_version = "1.2".into();
        c.validate().unwrap();

        // Loopback may serve plain HTTP without the setting ([::1] too).
        let mut c = Config::default();
        c.node.listen = "[::1]:7800".parse().unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn environment_overrides_and_rejects_bad_values() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "QUIRE_LISTEN" => Some("127.0.0.1:9000".into()),
            "QUIRE_ALLOWED_HOSTS" => Some("a.example, b.example".into()),
            "QUIRE_TLS_CERT_FILE" => Some("/c.pem".into()),
            "QUIRE_TLS_KEY_FILE" => Some("/c.key".into()),
            "QUIRE_TLS_MIN_VERSION" => Some("1.2".into()),
            "QUIRE_ALLOW_PLAIN_HTTP" => Some("true".into()),
            "QUIRE_PLACEMENT_SUSPECT_AFTER_MS" => Some("1500".into()),
            "QUIRE_PLACEMENT_GRACE_MS" => Some("3000".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.placement.suspect_after_ms, 1_500);
        assert_eq!(c.placement.grace_ms, 3_000);
        assert_eq!(c.node.tls_cert_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.node.tls_key_file, Some(PathBuf::from("/c.key")));
        assert_eq!(c.node.tls_min_version, "1.2");
        assert!(c.node.allow_plain_http);
        let err = c
            .apply_env(|k| (k == "QUIRE_ALLOW_PLAIN_HTTP").then(|| "yes".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("QUIRE_ALLOW_PLAIN_HTTP"), "{err}");
        assert_eq!(c.node.listen.port(), 9000);
        assert_eq!(c.mcp.allowed_hosts, vec!["a.example", "b.example"]);
        let err = c
            .apply_env(|k| (k == "QUIRE_NODE_ID").then(|| "one".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("QUIRE_NODE_ID"), "{err}");
    }

    #[test]
    fn the_notion_local_address_is_an_ip_address() {
        let c = Config::from_toml("[notion]\nlocal_address = \"127.0.0.2\"\n").unwrap();
        assert_eq!(c.notion.local_address, Some([127, 0, 0, 2].into()));
        assert!(Config::from_toml("[notion]\nlocal_address = \"host\"\n").is_err());
        let mut c = Config::default();
        c.apply_env(|k| (k == "QUIRE_NOTION_LOCAL_ADDRESS").then(|| "::1".to_owned()))
            .unwrap();
        assert_eq!(
            c.notion.local_address,
            Some(std::net::Ipv6Addr::LOCALHOST.into())
        );
        c.apply_env(|k| (k == "QUIRE_NOTION_LOCAL_ADDRESS").then(String::new))
            .unwrap();
        assert_eq!(c.notion.local_address, None);
        let err = c
            .apply_env(|k| (k == "QUIRE_NOTION_LOCAL_ADDRESS").then(|| "10.0.0".to_owned()))
            .unwrap_err();
        assert!(
            err.to_string().contains("QUIRE_NOTION_LOCAL_ADDRESS"),
            "{err}"
        );
    }
}
