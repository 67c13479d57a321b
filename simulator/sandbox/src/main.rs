//! `quire-sandbox`: serves the Notion sandbox on a local address.

use anyhow::{Context, Result, bail};
use clap::Parser;
use quire_sandbox::{Sandbox, SandboxConfig, parse_rate_limit};

/// A local, seeded, in-memory stand-in for Notion's public API v1.
#[derive(Debug, Parser)]
#[command(name = "quire-sandbox", version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:7070 (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// Requests per second per integration, or `off`.
    #[arg(long, default_value = "3")]
    rate_limit: String,
    /// Token bucket capacity (burst) per integration.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Seed for ids, demo content, latency and injected failures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Added latency per request, `MIN..MAX` milliseconds (e.g. 20..80).
    #[arg(long)]
    latency_ms: Option<String>,
    /// Probability (0..=1) of an injected 500/503/529 per request.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Start with an empty workspace instead of the demo content.
    #[arg(long)]
    no_demo: bool,
}

fn parse_latency(text: &str) -> Result<(u64, u64)> {
    let (lo, hi) = text
        .split_once("..")
        .with_context(|| format!("--latency-ms must look like MIN..MAX, got `{text}`"))?;
    let lo: u64 = lo
        .trim()
        .parse()
        .with_context(|| format!("--latency-ms: `{lo}` is not a number of milliseconds"))?;
    let hi: u64 = hi
        .trim()
        .parse()
        .with_context(|| format!("--latency-ms: `{hi}` is not a number of milliseconds"))?;
    if lo > hi || hi > quire_sandbox::MAX_LATENCY_MS {
        bail!(
            "--latency-ms needs MIN <= MAX <= {} ms, got {lo}..{hi}",
            quire_sandbox::MAX_LATENCY_MS
        );
    }
    Ok((lo, hi))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut rate_limit = parse_rate_limit(&args.rate_limit).map_err(anyhow::Error::msg)?;
    if let Some(r) = rate_limit.as_mut() {
        if args.burst == 0 {
            bail!("--burst must be at least 1");
        }
        r.capacity = args.burst;
    }
    if !(0.0..=1.0).contains(&args.error_rate) {
        bail!(
            "--error-rate must be between 0 and 1, got {}",
            args.error_rate
        );
    }
    let config = SandboxConfig {
        seed: args.seed,
        rate_limit,
        latency_ms: args.latency_ms.as_deref().map(parse_latency).transpose()?,
        error_rate: args.error_rate,
        error_statuses: Vec::new(),
        demo_content: !args.no_demo,
    };
    let sandbox = Sandbox::new(config);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    println!(
        "Notion sandbox listening on http://{addr}/v1 (Notion-Version {})",
        quire_sandbox::NOTION_VERSION
    );
    for i in sandbox.integrations() {
        println!(
            "  integration {:<6} token {}  bot user {}",
            i.name, i.token, i.bot_user_id
        );
    }
    println!("  stats: http://{addr}/__sandbox/stats");
    quire_sandbox::serve(sandbox, listener)
        .await
        .context("sandbox server failed")
}
