//! `quire ctl backup` and `quire ctl tenants export|import`: envelopes of the whole control
//! plane or of one tenant (`quire_raft::backup`), written to a temporary file, checked
//! against their checksum, then renamed into place.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use quire_raft::backup::{
    BACKUP_FORMAT, EnvelopeHeader, TENANT_EXPORT_FORMAT, open_envelope, read_tenant_export,
};

use super::{Client, refused, request_error, seg};

/// Largest tenant export `tenants import` sends, in bytes.
const MAX_IMPORT_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Progress is reported every this many bytes.
const PROGRESS_EVERY: u64 = 1024 * 1024;

/// `quire ctl backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".partial");
    PathBuf::from(name)
}

fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Streams `GET path` into `file`'s temporary neighbour with progress on stderr, checks the
/// envelope's checksum on what was written, and renames it into place.
async fn download(
    c: &Client,
    path: &str,
    file: &Path,
    format: &'static str,
    progress: bool,
) -> anyhow::Result<(EnvelopeHeader, u64)> {
    let url = format!("{}{path}", c.base);
    let mut response = c
        .http
        .get(&url)
        .bearer_auth(&c.token)
        .send()
        .await
        .map_err(|e| request_error(&e, &url))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        return Err(refused(&reqwest::Method::GET, &url, status, &body));
    }
    let tmp = partial_path(file);
    let result = async {
        let mut out = create_private(&tmp)?;
        let mut written: u64 = 0;
        let mut reported: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| request_error(&e, &url))?
        {
            out.write_all(&chunk)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            written += chunk.len() as u64;
            if progress && written - reported >= PROGRESS_EVERY {
                eprint!("\r{written} bytes written");
                reported = written;
            }
        }
        if progress {
            eprintln!("\r{written} bytes written");
        }
        out.sync_all()
            .with_context(|| format!("cannot flush {}", tmp.display()))?;
        drop(out);
        let bytes =
            std::fs::read(&tmp).with_context(|| format!("cannot read back {}", tmp.display()))?;
        let (header, _) = open_envelope(&bytes, format)
            .with_context(|| format!("the file received from {url} is refused"))?;
        std::fs::rename(&tmp, file)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), file.display()))?;
        Ok((header, written))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `quire ctl backup --out FILE [--force]`.
pub(super) async fn backup(
    c: &Client,
    args: &BackupArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if args.out.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    let (header, size) = download(c, "/backup", &args.out, BACKUP_FORMAT, true).await?;
    if json {
        let v = serde_json::json!({
            "file": args.out.display().to_string(),
            "cluster_name": header.cluster_name,
            "log_index": header.log_index,
            "sha256": header.body_sha256,
            "bytes": size,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "backup of cluster {} written to {}\n  log index {}\n  size      {size} bytes\n  sha256    {}",
            header.cluster_name,
            args.out.display(),
            header.log_index,
            header.body_sha256
        )?;
    }
    Ok(())
}

/// `quire ctl tenants export ID [--out FILE]`: to the file, or to stdout.
pub(super) async fn export(
    c: &Client,
    tenant: &str,
    file: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let path = format!("/tenants/{}/export", seg(tenant));
    match file {
        Some(file) => {
            let (header, size) = download(c, &path, file, TENANT_EXPORT_FORMAT, false).await?;
            writeln!(
                out,
                "exported tenant {tenant} (log index {}, {size} bytes, sha256 {}) to {}",
                header.log_index,
                header.body_sha256,
                file.display()
            )?;
        }
        None => {
            let (status, bytes, url) = c
                .send(
                    reqwest::Method::GET,
                    &path,
                    None,
                    MAX_IMPORT_FILE_BYTES as usize,
                )
                .await?;
            if !status.is_success() {
                return Err(refused(&reqwest::Method::GET, &url, status, &bytes));
            }
            open_envelope(&bytes, TENANT_EXPORT_FORMAT)
                .with_context(|| format!("the export received from {url} is refused"))?;
            out.write_all(&bytes)?;
        }
    }
    Ok(())
}

/// `quire ctl tenants import FILE`.
pub(super) async fn import(
    c: &Client,
    file: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > MAX_IMPORT_FILE_BYTES {
        bail!(
            "{} is {size} bytes, more than {MAX_IMPORT_FILE_BYTES}",
            file.display()
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (header, _) =
        read_tenant_export(&bytes).with_context(|| format!("{} is refused", file.display()))?;
    let url = format!("{}/tenants/import", c.base);
    let response = c
        .http
        .post(&url)
        .bearer_auth(&c.token)
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .body(bytes)
        .send()
        .await
        .map_err(|e| request_error(&e, &url))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| request_error(&e, &url))?;
    if !status.is_success() {
        return Err(refused(&reqwest::Method::POST, &url, status, &body));
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else if let Some(held) = super::approvals::pending_message(&v) {
        writeln!(out, "{held}")?;
    } else {
        writeln!(
            out,
            "imported tenant {} from cluster {} (log index {}) with {} audit records",
            header.tenant.as_ref().map_or("?", |t| t.as_str()),
            header.cluster_name,
            header.log_index,
            v["audit_records"]
        )?;
    }
    Ok(())
}
