//! Log output: human-readable lines on stderr, filtered by `QUIRE_LOG` (or `RUST_LOG`),
//! `info` by default.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("QUIRE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,hyper=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
