//! Admin API writes and setup shared by the cluster scenarios: one admin request retried
//! after a 503 ("retry shortly"), the bench tenant with its integration and workspaces, a
//! writer that edits one workflow template against its version (a committed, non-revoking
//! write that changes the state every time: the template's version goes up), the
//! revocation-acknowledgement probe (create then delete a tenant), and what a run ran on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quire_node::local_cluster::{LocalCluster, Spec};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::load::{OpDetail, Worker};
use crate::machine::Machine;
use crate::raft_commit::{BenchError, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN, filesystem_of};
use crate::report::Figures;

/// The tenant the template writers work in.
pub const BENCH_TENANT: &str = "bench";
/// Its integration (the sandbox's alpha token; no Notion call is made by template edits).
pub const BENCH_INTEGRATION: &str = "bench";
/// Templates per workspace (a workspace holds at most 200).
pub const TEMPLATES_PER_WORKSPACE: usize = 100;
/// Template creations in flight at once during setup.
pub const SETUP_CONCURRENCY: usize = 32;
/// Longest error body kept, in characters.
const MAX_BODY_CHARS: usize = 200;
/// The template body every edit writes (the same each time: only the version changes).
const TEMPLATE_BODY: &str = "Summarise the page in three bullet points.";

/// One admin request's outcome after its 503 retries.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// 503 answers retried before this one.
    pub retries: u64,
    /// How long the answered attempt alone took.
    pub last_attempt: Duration,
}

impl Answer {
    /// `what answered STATUS: code: message`, cut short.
    pub fn describe(&self, what: &str) -> String {
        let body = match (
            self.body.get("error").and_then(Value::as_str),
            self.body.get("message").and_then(Value::as_str),
        ) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => self.body.to_string(),
        };
        let body: String = body.chars().take(MAX_BODY_CHARS).collect();
        format!("{what} answered {}: {body}", self.status)
    }
}

/// One admin API request to `url`, retried after each 503 with a backoff (2 ms doubling to
/// 50 ms) until it is answered otherwise. `Err` is a transport failure (or timeout).
pub async fn request(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<Answer, String> {
    let mut backoff = RETRY_BACKOFF_MIN;
    let mut retries = 0;
    loop {
        let started = Instant::now();
        let mut r = http.request(method.clone(), url).bearer_auth(token);
        if let Some(body) = body {
            r = r.json(body);
        }
        let response = r.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            continue;
        }
        return Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            retries,
            last_attempt: started.elapsed(),
        });
    }
}

/// [`request`] that must succeed (2xx), for setup steps.
pub async fn request_ok(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<Value, BenchError> {
    let what = format!("{method} {url}");
    let answer = request(http, method, url, token, body)
        .await
        .map_err(BenchError::Preflight)?;
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        Err(BenchError::Preflight(answer.describe(&what)))
    }
}

/// A reqwest client for admin requests with `timeout` per request.
pub fn admin_client(timeout: Duration) -> Result<reqwest::Client, BenchError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(crate::load::MAX_WRITERS)
        .build()
        .map_err(BenchError::Http)
}

/// Creates the bench tenant and its integration through node `node_http`.
pub async fn create_bench_tenant(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
) -> Result<(), BenchError> {
    let base = format!("{node_http}/admin/v1");
    request_ok(
        http,
        Method::POST,
        &format!("{base}/tenants"),
        token,
        Some(&json!({"id": BENCH_TENANT, "display_name": "bench"})),
    )
    .await?;
    request_ok(
        http,
        Method::POST,
        &format!("{base}/tenants/{BENCH_TENANT}/integrations"),
        token,
        Some(&json!({"id": BENCH_INTEGRATION, "display_name": "bench",
                     "notion_token": "secret_sandbox_alpha"})),
    )
    .await?;
    Ok(())
}

/// Creates workspace `id` of the bench tenant.
pub async fn create_bench_workspace(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    id: &str,
) -> Result<(), BenchError> {
    request_ok(
        http,
        Method::POST,
        &format!("{node_http}/admin/v1/tenants/{BENCH_TENANT}/workspaces"),
        token,
        Some(&json!({"id": id, "display_name": "bench", "integration": BENCH_INTEGRATION})),
    )
    .await?;
    Ok(())
}

/// A writer that edits its own workflow template, each edit against the version the last
/// one returned: one committed Raft entry per write (`workspace.templates.manage`, audited,
/// not a revocation, so its acknowledgement does not wait out the revocation bound).
pub struct TemplateWriter {
    http: reqwest::Client,
    /// `.../templates/<name>`.
    url: String,
    token: String,
    version: u64,
    detail: OpDetail,
}

impl TemplateWriter {
    /// Creates template `name` in workspace `workspace` of the bench tenant through
    /// `node_http`; the writer then edits it through `write_node_http`.
    pub async fn create(
        http: reqwest::Client,
        node_http: &str,
        write_node_http: &str,
        token: &str,
        workspace: &str,
        name: &str,
    ) -> Result<TemplateWriter, BenchError> {
        let path = format!("/admin/v1/tenants/{BENCH_TENANT}/workspaces/{workspace}/templates");
        let created = request_ok(
            &http,
            Method::POST,
            &format!("{node_http}{path}"),
            token,
            Some(&json!({"name": name, "title": "bench", "body": TEMPLATE_BODY})),
        )
        .await?;
        Ok(TemplateWriter {
            url: format!("{write_node_http}{path}/{name}"),
            version: created["version"].as_u64().unwrap_or(1),
            http,
            token: token.to_owned(),
            detail: OpDetail::default(),
        })
    }

    /// The template's current version, read again (after a conflict).
    async fn refresh(&mut self) {
        if let Ok(a) = request(&self.http, Method::GET, &self.url, &self.token, None).await
            && let Some(v) = a.body["version"].as_u64()
        {
            self.version = v;
        }
    }

    /// One edit, retried after a 503 until it is answered otherwise.
    pub async fn write(&mut self) -> Result<(), String> {
        let body = json!({"title": "bench", "body": TEMPLATE_BODY, "version": self.version});
        let answer = request(&self.http, Method::PUT, &self.url, &self.token, Some(&body)).await?;
        self.detail = OpDetail {
            retries: answer.retries,
            last_attempt: (answer.retries > 0).then_some(answer.last_attempt),
        };
        if answer.status.is_success() {
            self.version = answer.body["version"].as_u64().unwrap_or(self.version + 1);
            return Ok(());
        }
        if answer.status == StatusCode::CONFLICT {
            // Someone (an earlier attempt whose answer was lost) moved the version on.
            self.refresh().await;
        }
        Err(answer.describe("PUT template"))
    }
}

impl Worker for TemplateWriter {
    async fn call(&mut self) -> Result<(), String> {
        self.write().await
    }

    fn take_detail(&mut self) -> OpDetail {
        std::mem::take(&mut self.detail)
    }
}

/// Template writers for one level: writer `w` edits `t-<level>-<w>` in workspace
/// `w-<level>-<w / 100>` and sends to `targets(w)`. Setup goes through `setup_node_http`,
/// [`SETUP_CONCURRENCY`] creations at a time.
pub async fn template_writers(
    http: &reqwest::Client,
    setup_node_http: &str,
    token: &str,
    level: usize,
    writers: usize,
    target_http: &dyn Fn(usize) -> String,
) -> Result<Vec<TemplateWriter>, BenchError> {
    for ws in 0..writers.div_ceil(TEMPLATES_PER_WORKSPACE) {
        create_bench_workspace(http, setup_node_http, token, &format!("w-{level}-{ws}")).await?;
    }
    let mut out = Vec::with_capacity(writers);
    let mut start = 0;
    while start < writers {
        let end = (start + SETUP_CONCURRENCY).min(writers);
        let mut set = tokio::task::JoinSet::new();
        for w in start..end {
            let (http, setup, target, token) = (
                http.clone(),
                setup_node_http.to_owned(),
                target_http(w),
                token.to_owned(),
            );
            set.spawn(async move {
                let workspace = format!("w-{level}-{}", w / TEMPLATES_PER_WORKSPACE);
                let name = format!("t-{level}-{w}");
                let writer =
                    TemplateWriter::create(http, &setup, &target, &token, &workspace, &name).await;
                (w, writer)
            });
        }
        let mut chunk = Vec::with_capacity(end - start);
        while let Some(joined) = set.join_next().await {
            let (w, writer) = joined.map_err(|e| BenchError::Preflight(e.to_string()))?;
            chunk.push((w, writer?));
        }
        chunk.sort_by_key(|(w, _)| *w);
        out.extend(chunk.into_iter().map(|(_, writer)| writer));
        start = end;
    }
    Ok(out)
}

/// The revocation acknowledgement: tenants created then deleted one after another. A tenant
/// deletion is a revocation, answered only once every node's access rules are current
/// (`security.authz_max_staleness_ms`, 1000 ms by default).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Revocations {
    /// Deletions measured.
    pub count: usize,
    /// Latency of each `DELETE /tenants/{t}`, in ms.
    pub delete_ms: Vec<f64>,
    /// Latency of the `POST /tenants` before each, in ms (not a revocation).
    pub create_ms: Vec<f64>,
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The largest of `v` (0 when empty).
pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

impl Revocations {
    pub fn summary(&self) -> String {
        format!(
            "revocation acknowledgement (DELETE /tenants/{{t}}, one at a time, {} times): median {:.1} ms, \
             max {:.1} ms; answered after the revocation bound (security.authz_max_staleness_ms, \
             default 1000 ms) by design. The POST /tenants before each: median {:.1} ms",
            self.count,
            median(&self.delete_ms),
            max(&self.delete_ms),
            median(&self.create_ms)
        )
    }
}

/// Creates and deletes `count` tenants `b-revoke-<i>` one after another through `node_http`.
pub async fn measure_revocations(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    count: usize,
) -> Result<Revocations, BenchError> {
    let base = format!("{node_http}/admin/v1/tenants");
    let mut out = Revocations {
        count,
        ..Revocations::default()
    };
    for i in 0..count {
        let id = format!("b-revoke-{i}");
        let started = Instant::now();
        request_ok(
            http,
            Method::POST,
            &base,
            token,
            Some(&json!({"id": id, "display_name": "bench"})),
        )
        .await?;
        out.create_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        request_ok(http, Method::DELETE, &format!("{base}/{id}"), token, None).await?;
        out.delete_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// Starts a cluster of `nodes` in a new temporary directory under `work_dir`; on failure
/// the directory is kept (with the nodes' logs) and named in the error.
pub async fn start_cluster(
    quire_bin: &Path,
    work_dir: Option<&Path>,
    nodes: usize,
    env: Vec<(String, String)>,
    sandbox_args: Vec<String>,
) -> Result<(tempfile::TempDir, LocalCluster), BenchError> {
    let dir = run_dir(quire_bin, work_dir)?;
    cluster_in(dir, quire_bin, nodes, env, sandbox_args).await
}

/// A new temporary directory `quire-bench-*` under `work_dir` (default: the system temp
/// dir) for one run, once `quire_bin` is known to exist.
pub fn run_dir(quire_bin: &Path, work_dir: Option<&Path>) -> Result<tempfile::TempDir, BenchError> {
    if !quire_bin.is_file() {
        return Err(BenchError::MissingBinary(quire_bin.to_owned()));
    }
    let parent = work_dir.map_or_else(std::env::temp_dir, Path::to_owned);
    tempfile::Builder::new()
        .prefix("quire-bench-")
        .tempdir_in(&parent)
        .map_err(|source| BenchError::WorkDir {
            dir: parent.clone(),
            source,
        })
}

/// [`start_cluster`] in a directory made by [`run_dir`] (which may already hold files the
/// nodes read, such as a config file named in `env`).
pub async fn cluster_in(
    dir: tempfile::TempDir,
    quire_bin: &Path,
    nodes: usize,
    env: Vec<(String, String)>,
    sandbox_args: Vec<String>,
) -> Result<(tempfile::TempDir, LocalCluster), BenchError> {
    let up = LocalCluster::up(Spec {
        dir: dir.path().join("cluster"),
        binary: quire_bin.to_owned(),
        nodes,
        tls: true,
        fault_injection: false,
        env,
        sandbox_args,
    })
    .await;
    match up {
        Ok(cluster) => Ok((dir, cluster)),
        Err(e) => {
            let kept = dir.keep();
            Err(BenchError::Cluster(
                e.context(format!("logs kept in {}", kept.display())),
            ))
        }
    }
}

/// A run's outcome with its directory: removed when the run succeeded, kept (with the
/// nodes' logs) and named in the error when it failed. Drop the cluster before calling this,
/// so its processes are gone.
pub fn keep_on_error<T>(
    dir: tempfile::TempDir,
    outcome: Result<T, BenchError>,
) -> Result<T, BenchError> {
    match outcome {
        Ok(v) => Ok(v),
        Err(source) => Err(BenchError::Kept {
            dir: dir.keep(),
            source: Box::new(source),
        }),
    }
}

/// What a run ran on, for the lines under its figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunContext {
    pub command: String,
    pub git_commit: String,
    pub machine: Machine,
    pub load_average_start: String,
    pub load_average_end: String,
    pub quire_bin: PathBuf,
    pub quire_bin_modified: String,
    pub data_filesystem: String,
}

impl RunContext {
    /// Taken when the run starts; [`RunContext::finish`] records the end.
    pub fn start(command: String, quire_bin: &Path, data_dir: &Path) -> RunContext {
        RunContext {
            command,
            git_commit: crate::machine::git_commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
            machine: Machine::current(),
            load_average_start: crate::machine::load_average(),
            load_average_end: String::new(),
            quire_bin: quire_bin
                .canonicalize()
                .unwrap_or_else(|_| quire_bin.to_owned()),
            quire_bin_modified: crate::machine::modified_utc(quire_bin),
            data_filesystem: filesystem_of(data_dir),
        }
    }

    pub fn finish(&mut self) {
        self.load_average_end = crate::machine::load_average();
    }

    /// `machine: ...`, `load: ...`, `data on: ...`, `commit: ...`, `quire: ...`, `command: ...`.
    pub fn lines(&self) -> Vec<String> {
        ran_on(
            &self.machine,
            (&self.load_average_start, &self.load_average_end),
            Some(&self.data_filesystem),
            &self.git_commit,
            (&self.quire_bin, &self.quire_bin_modified),
            &self.command,
        )
    }
}

/// The lines under a report's figures that say what the run ran on and what started it:
/// `machine: ...`, the load averages at its start and end, `data on: ...` when `data_on`
/// names the filesystem of the nodes' data, `commit: ...`, the `quire` binary and when it was
/// built, `command: ...`.
pub fn ran_on(
    machine: &Machine,
    (load_start, load_end): (&str, &str),
    data_on: Option<&str>,
    git_commit: &str,
    (quire_bin, quire_bin_modified): (&Path, &str),
    command: &str,
) -> Vec<String> {
    let mut lines = vec![
        format!("machine: {}", machine.summary()),
        format!("load average (1/5/15 min): {load_start} at start, {load_end} at end"),
    ];
    lines.extend(data_on.map(|fs| format!("data on: {fs}")));
    lines.push(format!("commit: {git_commit}"));
    lines.push(format!(
        "quire: {} (built {quire_bin_modified})",
        quire_bin.display()
    ));
    lines.push(format!("command: {command}"));
    lines
}

/// `VmRSS` (or another `/proc/PID/status` field in kB) of a process, in KiB (0 when
/// unreadable).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status_field_kib(&text, field)
}

/// A `kB` field from a `/proc/PID/status` text.
pub fn status_field_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Writes `text` to `path`.
pub fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The `quire` binary a benchmark starts: the one given, else [`default_quire_bin`].
pub fn quire_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => default_quire_bin(),
    }
}

/// Prints a benchmark's figures: the text table on stdout, then the Markdown (to
/// `markdown_file` when given, else stdout), and the JSON to `json_file` when given.
pub fn emit<R: serde::Serialize>(
    text: &str,
    markdown: &str,
    report: &R,
    markdown_file: Option<&Path>,
    json_file: Option<&Path>,
) -> anyhow::Result<()> {
    print!("{text}");
    match markdown_file {
        Some(path) => write_file(path, markdown)?,
        None => print!("\n{markdown}"),
    }
    if let Some(path) = json_file {
        write_file(path, &serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}

/// The options every scenario benchmark takes: the `quire` it starts, where its cluster's
/// directory is made, and where its JSON and Markdown go.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunOpts {
    /// The quire binary (default: `quire` next to this executable).
    #[arg(long)]
    pub quire_bin: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the Markdown to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Where the cluster's temporary directory is made.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

impl RunOpts {
    /// Options naming only the directory the cluster's is made in (files are written by the
    /// caller).
    pub fn in_dir(work_dir: Option<PathBuf>) -> RunOpts {
        RunOpts {
            work_dir,
            ..RunOpts::default()
        }
    }

    /// [`emit`] for `report`: its text, its Markdown, and itself as the JSON.
    pub fn emit(&self, report: &impl Figures) -> anyhow::Result<()> {
        emit(
            &report.to_text(),
            &report.to_markdown(),
            report,
            self.markdown.as_deref(),
            self.json.as_deref(),
        )
    }
}

/// Prints a line of a benchmark's progress on stderr.
pub fn progress(line: &str) {
    eprintln!("quire-bench: {line}");
}

/// `quire` next to this executable.
pub fn default_quire_bin() -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let me = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = me
        .parent()
        .context("this executable's path has no directory")?;
    Ok(dir.join(format!("quire{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\tquire\nVmHWM:\t   52340 kB\nVmRSS:\t   41000 kB\n";
        assert_eq!(status_field_kib(text, "VmRSS"), 41_000);
        assert_eq!(status_field_kib(text, "VmHWM"), 52_340);
        assert_eq!(status_field_kib(text, "VmSwap"), 0);
    }

    #[test]
    fn a_failed_run_keeps_its_directory_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        assert_eq!(keep_on_error(dir, Ok(7)).unwrap(), 7);
        assert!(!path.exists(), "a run that succeeded leaves nothing");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let e = keep_on_error::<()>(dir, Err(BenchError::Step("the drain stalled".into())))
            .unwrap_err()
            .to_string();
        assert!(path.is_dir(), "{e}");
        assert!(e.starts_with("the drain stalled"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn medians_and_maxima() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(max(&[1.0, 7.5, 2.0]), 7.5);
    }
}
