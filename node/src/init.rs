//! `quire init`: starts a new cluster on its first node — the group of one, the cluster's
//! key check, the built-in JWT issuer's first signing key, and a bootstrap admin token
//! written to `<data-dir>/admin-token`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use quire_raft::command::Command;
use quire_raft::ids::TokenId;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::serve::{self, ServeOptions};

/// File (mode 0600) holding the bootstrap admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// A new admin token secret and its id.
pub fn new_admin_secret() -> (TokenId, String) {
    let mut rng = StdRng::from_os_rng();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let mut id = [0u8; 6];
    rng.fill_bytes(&mut id);
    let token_id = TokenId::new(format!("admin-{}", hex::encode(id)))
        .expect("admin- followed by hex is a valid token id");
    (token_id, format!("qa_{}", hex::encode(secret)))
}

/// Writes a secret to a file only its owner can read, replacing any earlier one atomically.
pub fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Issues the cluster's first admin token and writes it to `<data_dir>/admin-token`.
pub async fn issue_bootstrap_admin_token(
    router: &crate::cluster::Router,
    data_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let (token_id, secret) = new_admin_secret();
    router
        .write(Command::IssueAdminToken {
            token_id,
            secret_hash: quire_raft::seal::hash_api_token(&secret),
            display_name: "bootstrap".into(),
            issued_at_ms: SystemClock.now_ms(),
            expires_at_ms: None,
            subject: None,
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot issue the bootstrap admin token: {e}"))?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_secret_file(&path, &secret)?;
    Ok(path)
}

/// Gives the built-in JWT issuer its first signing key (EdDSA), unless it has one: the key is
/// generated here and its private half sealed under the master key before it is proposed.
pub async fn ensure_jwt_signing_key(
    router: &crate::cluster::Router,
    master_key: &quire_raft::seal::MasterKey,
    now_ms: u64,
) -> anyhow::Result<()> {
    if router
        .control
        .read_applied(|s| s.jwt().current_key().is_some())
    {
        return Ok(());
    }
    let key = crate::jwt::generate_key(master_key, quire_raft::jwt_keys::JwtAlg::EdDSA, now_ms)
        .map_err(|e| anyhow::anyhow!("cannot make the JWT signing key: {e}"))?;
    router
        .write(crate::jwt::add_key_command(key, now_ms, true, None))
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the JWT signing key: {e}"))?;
    Ok(())
}

/// Runs `quire init`; returns the path of the admin token file.
pub async fn init(config: Config, options: ServeOptions) -> anyhow::Result<PathBuf> {
    quire_transport::tls::install_crypto_provider();
    std::fs::create_dir_all(&config.node.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.node.data_dir.display()
        )
    })?;
    let key = serve::master_key(&config, &options)?;
    // Open without a peer listener: a group of one needs no network, and `serve` binds it.
    let mut standalone = config.clone();
    standalone.peer.listen = None;
    let node = serve::open_node_advertising(&standalone, config.peer.advertised()).await?;
    let control = node.router.control.clone();
    if control.is_initialized().await? {
        drop(control);
        node.shutdown().await;
        bail!(
            "the data dir {} already belongs to a cluster; `quire init` only starts new ones",
            config.node.data_dir.display()
        );
    }
    control.bootstrap_single().await?;
    control
        .wait_leader(Duration::from_secs(30))
        .await
        .context("the new cluster elected no leader")?;
    serve::check_master_key(&node.router, &key, &config.node.cluster_name).await?;
    ensure_jwt_signing_key(&node.router, &key, SystemClock.now_ms()).await?;
    let path = issue_bootstrap_admin_token(&node.router, &config.node.data_dir).await?;
    drop(control);
    node.shutdown().await;
    Ok(path)
}
