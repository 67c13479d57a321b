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
    /// Log format on stderr: text or json (overrides QUIRE_LOG_FORMAT and log.format).
    #[arg(long, global = true, value_name = "text|json")]
    log_format: Option<quire_node::config::LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the MCP endpoint, the control plane and the data plane.
    Serve(ServeArgs),
    /// Start a new cluster on its first node: a group of one, the master key's check, and a
    /// bootstrap admin token in `<data-dir>/admin-token`. Then run `quire serve`.
    Init(NodeArgs),
    /// Start a new cluster on its first node from a backup (`quire ctl backup`): the backup's
    /// checksum and master-key check are verified, the data dir must be empty. Then run
    /// `quire serve` with the same settings; other nodes `--join` it.
    Restore(RestoreArgs),
    /// Administer a running cluster over its admin API.
    Ctl(quire_node::ctl::CtlArgs),
    /// Certificates for the peer network's mutual TLS and for the HTTPS front.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run the local Notion sandbox alone (a stand-in for api.notion.com).
    Sandbox(SandboxArgs),
    /// A cluster of real nodes on loopback, for trying Quire out and for tests
    /// (`deploy/local-cluster.sh` wraps it).
    #[command(subcommand)]
    LocalCluster(LocalClusterCommand),
    /// Print a new random master key (64 hex characters) for sealing Notion tokens.
    Keygen {
        /// Write the key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Report every problem of a config file at once, each as FILE:LINE:COL. Exit 0 when
    /// clean, 1 with problems, 2 when the file cannot be read.
    Check {
        file: PathBuf,
        /// Skip checking that the files the config names (master key, TLS directory) exist:
        /// for a config meant for another machine.
        #[arg(long)]
        no_files: bool,
        /// Apply the `QUIRE_*` environment variables over the file, as `quire serve` does.
        #[arg(long)]
        env: bool,
    },
}

#[derive(Subcommand)]
enum LocalClusterCommand {
    /// Start N nodes with certificates, the Notion sandbox, a bootstrap admin token and a
    /// demo tenant; print the cluster's state as JSON.
    Up {
        nodes: usize,
        #[arg(long, env = "QUIRE_CLUSTER_DIR", default_value = "local-cluster")]
        dir: PathBuf,
        /// Plaintext between peers instead of mutual TLS.
        #[arg(long)]
        insecure: bool,
        /// Let the admin API cut links (failure tests).
        #[arg(long)]
        fault_injection: bool,
    },
    /// Stop every process of the cluster.
    Down {
        #[arg(long, env = "QUIRE_CLUSTER_DIR", default_value = "local-cluster")]
        dir: PathBuf,
    },
    /// Print the cluster's state as JSON.
    Status {
        #[arg(long, env = "QUIRE_CLUSTER_DIR", default_value = "local-cluster")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a new cluster certificate authority (`ca.pem`, `ca.key`) in DIR.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// Name written into the CA certificate.
        #[arg(long, default_value = "quire")]
        cluster_name: String,
    },
    /// Make node N's certificate, signed by the CA in --ca, into DIR (`node.pem`, `node.key`,
    /// `ca.pem`).
    Node {
        #[arg(long)]
        id: u64,
        /// A host name or IP address peers use for this node (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Directory of the cluster CA.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a server certificate for the HTTPS front (`http.pem`, `http.key`), signed by the
    /// CA in --ca, into DIR; point node.tls_cert_file / node.tls_key_file at them and give
    /// agents the CA's `ca.pem`.
    Http {
        /// A host name or IP address agents use for this node (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Directory of the CA (`quire certs init`; a CA of its own for agents, or the
        /// cluster's).
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Settings shared by `serve` and `init`; each flag overrides the config file and the
/// environment.
#[derive(Args)]
struct NodeArgs {
    /// TOML configuration file (see the README's configuration reference).
    #[arg(long, env = "QUIRE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides node.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (overrides node.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// This node's Raft id (overrides node.id).
    #[arg(long)]
    node_id: Option<u64>,
    /// Peer gRPC listen address (overrides peer.listen).
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// `host:port` other nodes use for this node's peer listener (overrides peer.advertise).
    #[arg(long)]
    advertise: Option<String>,
    /// Directory with node.pem, node.key and ca.pem (overrides peer.tls_dir).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Plaintext peer traffic (tests on one machine only; logs a warning).
    #[arg(long)]
    insecure_peer: bool,
    /// PEM certificate chain the HTTP front serves HTTPS with (overrides node.tls_cert_file).
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// PEM key of --tls-cert-file (overrides node.tls_key_file).
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// The region this node runs in (overrides node.region; tenants' residency names regions).
    #[arg(long)]
    region: Option<String>,
    /// The zone inside the region (overrides node.zone).
    #[arg(long)]
    zone: Option<String>,
}

impl NodeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        if let Some(dir) = &self.data_dir {
            config.node.data_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            config.node.listen = listen;
        }
        if let Some(id) = self.node_id {
            config.node.id = id;
        }
        if let Some(addr) = self.peer_listen {
            config.peer.listen = Some(addr);
        }
        if let Some(addr) = &self.advertise {
            config.peer.advertise = Some(addr.clone());
        }
        if let Some(dir) = &self.tls_dir {
            config.peer.tls_dir = Some(dir.clone());
        }
        if self.insecure_peer {
            config.peer.insecure = true;
        }
        if let Some(path) = &self.tls_cert_file {
            config.node.tls_cert_file = Some(path.clone());
        }
        if let Some(path) = &self.tls_key_file {
            config.node.tls_key_file = Some(path.clone());
        }
        if let Some(region) = &self.region {
            config.node.region = region.clone();
        }
        if let Some(zone) = &self.zone {
            config.node.zone = Some(zone.clone());
        }
        Ok(config)
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// On first start, join the cluster through this member's peer address (`host:port`).
    #[arg(long)]
    join: Option<String>,
    /// Start the Notion sandbox in-process with its demo content, provision a demo tenant,
    /// workspace, integration and user, and write `<data-dir>/client.json`.
    #[arg(long)]
    sandbox: bool,
}

#[derive(Args)]
struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    from: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
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
    if let Command::Config(ConfigCommand::Check {
        file,
        no_files,
        env,
    }) = &cli.command
    {
        use quire_node::config_check::{CheckOptions, run};
        let options = CheckOptions {
            check_files: !no_files,
            env: env.then(CheckOptions::process_env),
        };
        return ExitCode::from(run(file, &options));
    }
    let config_file = match &cli.command {
        Command::Serve(args) => args.node.config.as_deref(),
        Command::Init(args) | Command::Restore(RestoreArgs { node: args, .. }) => {
            args.config.as_deref()
        }
        _ => None,
    };
    quire_node::logging::init(quire_node::logging::format_for(
        cli.log_format,
        std::env::var("QUIRE_LOG_FORMAT").ok(),
        config_file,
    ));
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
            Command::Init(args) => run_init(args).await,
            Command::Restore(args) => run_restore(args).await,
            Command::Ctl(args) => quire_node::ctl::run(args).await,
            Command::LocalCluster(command) => run_local_cluster(command).await,
            Command::Certs(CertsCommand::Init { out, cluster_name }) => {
                quire_node::certs::init_ca(&out, &cluster_name)
            }
            Command::Certs(CertsCommand::Node { id, hosts, ca, out }) => {
                quire_node::certs::issue_node(id, &hosts, &ca, &out)
            }
            Command::Certs(CertsCommand::Http { hosts, ca, out }) => {
                quire_node::certs::issue_http(&hosts, &ca, &out)
            }
            Command::Sandbox(args) => run_sandbox(args).await,
            Command::Keygen { out } => quire_node::keys::keygen(out.as_deref()),
            Command::Config(ConfigCommand::Check { .. }) => Ok(()),
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
    let mut config = args.node.config()?;
    if let Some(join) = args.join {
        config.peer.join = Some(join);
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

async fn run_local_cluster(command: LocalClusterCommand) -> anyhow::Result<()> {
    use quire_node::local_cluster::{LocalCluster, Spec};
    match command {
        LocalClusterCommand::Up {
            nodes,
            dir,
            insecure,
            fault_injection,
        } => {
            let binary = std::env::current_exe()?;
            let cluster = LocalCluster::up(Spec {
                dir,
                binary,
                nodes,
                tls: !insecure,
                fault_injection,
                env: Vec::new(),
                sandbox_args: Vec::new(),
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&cluster.status)?);
            cluster.detach();
        }
        LocalClusterCommand::Down { dir } => {
            let stopped = LocalCluster::down(&dir)?;
            eprintln!("stopped {stopped} processes");
        }
        LocalClusterCommand::Status { dir } => {
            let status = LocalCluster::read_status(&dir)?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
    }
    Ok(())
}

async fn run_init(args: NodeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    config.validate()?;
    let path = quire_node::init::init(
        config,
        ServeOptions {
            sandbox: false,
            master_key_env: std::env::var("QUIRE_MASTER_KEY").ok(),
        },
    )
    .await?;
    println!(
        "started a new cluster; the bootstrap admin token is in {}",
        path.display()
    );
    println!("now run `quire serve` with the same settings");
    Ok(())
}

async fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = args.node.config()?;
    config.validate()?;
    let report = quire_node::restore::restore(
        config,
        ServeOptions {
            sandbox: false,
            master_key_env: std::env::var("QUIRE_MASTER_KEY").ok(),
        },
        &args.from,
    )
    .await?;
    println!(
        "restored cluster {:?} (log index {}, sha256 {}) into {}: {} tenants, {} audit chains",
        report.from_cluster,
        report.from_log_index,
        report.sha256,
        report.data_dir.display(),
        report.tenants,
        report.audit_chains
    );
    println!("now run `quire serve` with the same settings; the backup's admin tokens work");
    Ok(())
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
