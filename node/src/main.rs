//! `quire`: the Quire node binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use quire_node::config::Config;
use quire_node::serve::{ServeOptions, serve};

#[derive(Parser)]
#[command(
    name = "quire",
    version,
    about = "Governed, multi-tenant access to Notion for AI agents over MCP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the MCP endpoint, the control plane and the data plane.
    Serve(ServeArgs),
    /// Run the local Notion sandbox alone (a stand-in for api.notion.com).
    Sandbox(SandboxArgs),
    /// Print a new random master key (64 hex characters) for sealing Notion tokens.
    Keygen {
        /// Write the key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (see the README's configuration reference).
    #[arg(long, env = "QUIRE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides node.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (overrides node.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Start the Notion sandbox in-process with its demo content, provision a demo tenant,
    /// workspace, integration and user, and write `<data-dir>/client.json`.
    #[arg(long)]
    sandbox: bool,
}

#[derive(Args)]
struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7900")]
    listen: SocketAddr,
    /// Requests per second per integration, or `off`.
    #[arg(long, default_value = "3")]
    rate_limit: String,
    /// Bucket capacity of the rate limit.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Seed of the demo content, ids and injected faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Added latency per request, `MIN..MAX` milliseconds.
    #[arg(long)]
    latency_ms: Option<String>,
    /// Share of requests answered with an injected 500/503/529 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    quire_node::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => run_serve(args).await,
            Command::Sandbox(args) => run_sandbox(args).await,
            Command::Keygen { out } => quire_node::keys::keygen(out.as_deref()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(|name| std::env::var(name).ok())?;
    if let Some(dir) = args.data_dir {
        config.node.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.node.listen = listen;
    }
    config.validate()?;
    serve(
        config,
        ServeOptions {
            sandbox: args.sandbox,
            master_key_env: std::env::var("QUIRE_MASTER_KEY").ok(),
        },
    )
    .await
}

async fn run_sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    let mut config = quire_sandbox::SandboxConfig {
        seed: args.seed,
        error_rate: args.error_rate,
        ..Default::default()
    };
    config.rate_limit =
        quire_sandbox::parse_rate_limit(&args.rate_limit).map_err(anyhow::Error::msg)?;
    if let Some(limit) = config.rate_limit.as_mut() {
        limit.capacity = args.burst;
    }
    if let Some(range) = &args.latency_ms {
        config.latency_ms =
            Some(quire_node::serve::parse_range(range).map_err(anyhow::Error::msg)?);
    }
    if !(0.0..=1.0).contains(&args.error_rate) {
        anyhow::bail!(
            "--error-rate must be between 0.0 and 1.0, got {}",
            args.error_rate
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let sandbox = quire_sandbox::Sandbox::new(config);
    println!("Notion sandbox listening on http://{}", args.listen);
    for integration in sandbox.integrations() {
        println!(
            "  integration {:<8} token {}",
            integration.name, integration.token
        );
    }
    tokio::select! {
        result = quire_sandbox::serve(sandbox, listener) => result.map_err(Into::into),
        _ = quire_node::serve::shutdown_signal() => Ok(()),
    }
}
