//! `quire restore --from FILE`: starts a new cluster, on its first node, whose state is a
//! backup's (`GET /admin/v1/backup`, `quire ctl backup`).
//!
//! The backup's checksum is verified first, then its master-key check is opened with the key
//! the usual settings give (`QUIRE_MASTER_KEY` or `security.master_key_file`); the data dir
//! must be empty. The node then starts a group of one as `quire init` does (the cluster's own
//! key check, under the configured cluster name) and commits `RestoreState` with the backup's
//! state as the first change after it: every tenant, token, role, sealed secret and audit
//! chain as the backup holds them. The restored node's Raft log starts fresh; it snapshots the
//! restored state and purges the log behind it, so nodes that `--join` it later receive the
//! state as a snapshot. No bootstrap admin token is issued: the backup's admin tokens work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use quire_raft::backup::read_backup;
use quire_raft::command::Command;

use crate::config::Config;
use crate::serve::{self, ServeOptions};

/// Largest backup file read, in bytes.
pub const MAX_BACKUP_BYTES: u64 = quire_raft::store::MAX_SNAPSHOT_BYTES as u64;

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The data dir made.
    pub data_dir: PathBuf,
    /// The cluster the backup came from.
    pub from_cluster: String,
    /// The log index the backup was taken at.
    pub from_log_index: u64,
    /// The backup's body checksum.
    pub sha256: String,
    /// Tenants restored.
    pub tenants: usize,
    /// Audit chains restored.
    pub audit_chains: usize,
}

fn dir_is_empty(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot list {}", dir.display())),
    }
}

/// Runs `quire restore`.
pub async fn restore(
    config: Config,
    options: ServeOptions,
    from: &Path,
) -> anyhow::Result<RestoreReport> {
    quire_transport::tls::install_crypto_provider();
    let size = std::fs::metadata(from)
        .with_context(|| format!("cannot read the backup {}", from.display()))?
        .len();
    if size > MAX_BACKUP_BYTES {
        bail!(
            "the backup {} is {size} bytes, more than {MAX_BACKUP_BYTES}",
            from.display()
        );
    }
    let bytes = std::fs::read(from)
        .with_context(|| format!("cannot read the backup {}", from.display()))?;
    let (header, state) =
        read_backup(&bytes).with_context(|| format!("the backup {} is refused", from.display()))?;
    drop(bytes);
    let key = serve::master_key(&config, &options)?;
    if key.verify_key_check(&header.key_check).is_err() {
        bail!(
            "the master key does not open the backup's key check: the backup of cluster {:?} was sealed under another master key. Give the key that cluster ran with (QUIRE_MASTER_KEY or security.master_key_file, or one of security.previous_master_key_files)",
            header.cluster_name
        );
    }
    let data_dir = config.node.data_dir.clone();
    if !dir_is_empty(&data_dir)? {
        bail!(
            "the data dir {} is not empty; restore only into a new, empty data dir",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;

    let mut standalone = config.clone();
    standalone.peer.listen = None;
    let node = serve::open_node_advertising(&standalone, config.peer.advertised()).await?;
    let control = node.router.control.clone();
    if control.is_initialized().await? {
        drop(control);
        node.shutdown().await;
        bail!(
            "the data dir {} already belongs to a cluster",
            data_dir.display()
        );
    }
    control.bootstrap_single().await?;
    control
        .wait_leader(Duration::from_secs(30))
        .await
        .context("the new cluster elected no leader")?;
    serve::check_master_key(&node.router, &key, &config.node.cluster_name).await?;
    let tenants = state.tenant_count();
    let audit_chains = state.audit().chains().count();
    node.router
        .write(Command::RestoreState {
            state: Box::new(state),
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot install the backup's state: {e}"))?;
    // Snapshot the restored state and purge the log behind it, so that a joining node gets
    // the state as a snapshot rather than as one very large log entry.
    let raft = control.raft().clone();
    let applied = control.read_applied_indexed(|_, index| index);
    let snapshotted = async {
        raft.trigger().snapshot().await.ok()?;
        raft.wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "restored state snapshotted",
            )
            .await
            .ok()?;
        raft.trigger().purge_log(applied).await.ok()?;
        // The purge runs in the background: wait for it, or the node could stop first and
        // a joining node would still be sent the state as one log entry.
        raft.wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= applied),
                "restored state's log purged",
            )
            .await
            .ok()
            .map(|_| ())
    }
    .await;
    if snapshotted.is_none() {
        tracing::warn!(
            "the restored state was not snapshotted; nodes that join replicate it from the log"
        );
    }
    drop(raft);
    drop(control);
    node.shutdown().await;
    Ok(RestoreReport {
        data_dir,
        from_cluster: header.cluster_name,
        from_log_index: header.log_index,
        sha256: header.body_sha256,
        tenants,
        audit_chains,
    })
}
