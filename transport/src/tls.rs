//! Mutual TLS material: a cluster CA, node certificates it signs (server and client auth,
//! one SAN per host), the files they live in, and loading them back with clear errors.
//!
//! Every node presents its certificate on both sides of a connection: the server requires a
//! client certificate signed by the cluster CA, and the client verifies the server against
//! the same CA. Certificates carry rcgen's fixed validity window (no clock is read here).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use quire_raft::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TransportError;

/// CA certificate file name (in both the CA dir and each node dir).
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA private key file name (CA dir only; keep it off the nodes).
pub const CA_KEY_FILE: &str = "ca.key";
/// Node certificate file name.
pub const NODE_CERT_FILE: &str = "node.pem";
/// Node private key file name.
pub const NODE_KEY_FILE: &str = "node.key";
/// A node certificate's subject common name is this prefix and the node id; under mutual
/// TLS a peer may speak (vote, lead, join) only for the node its certificate names.
pub const NODE_CN_PREFIX: &str = "quire-node-";
/// Largest TLS file read (a PEM chain of a few certificates is a few KiB).
pub const MAX_TLS_FILE_BYTES: u64 = 64 * 1024;
/// Most hosts (SANs) on one node certificate.
pub const MAX_HOSTS_PER_CERT: usize = 32;

/// A cluster CA in PEM.
#[derive(Clone)]
pub struct CaFiles {
    /// The CA certificate.
    pub cert_pem: String,
    /// The CA private key.
    pub key_pem: String,
}

/// A node certificate and key in PEM.
#[derive(Clone)]
pub struct NodeCert {
    /// The node certificate (signed by the cluster CA).
    pub cert_pem: String,
    /// The node private key.
    pub key_pem: String,
}

impl std::fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFiles")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn cert_err(what: &str, e: rcgen::Error) -> TransportError {
    TransportError::Certificate(format!("{what}: {e}"))
}

/// Generates a new cluster CA (ECDSA P-256) named after `cluster_name`.
pub fn generate_ca(cluster_name: &str) -> Result<CaFiles, TransportError> {
    if cluster_name.trim().is_empty() || cluster_name.len() > 64 {
        return Err(TransportError::Certificate(
            "cluster name must be 1 to 64 bytes and not blank".into(),
        ));
    }
    let key = KeyPair::generate().map_err(|e| cert_err("generating the CA key", e))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_err("CA parameters", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Quire");
    dn.push(
        DnType::CommonName,
        format!("Quire cluster CA {cluster_name}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| cert_err("self-signing the CA", e))?;
    Ok(CaFiles {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a certificate for node `node_id`, signed by the CA, valid for server and client
/// auth, with one SAN per host (IP addresses as IP SANs, names as DNS SANs).
pub fn issue_node_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    node_id: NodeId,
    hosts: &[String],
) -> Result<NodeCert, TransportError> {
    if hosts.is_empty() || hosts.len() > MAX_HOSTS_PER_CERT {
        return Err(TransportError::Certificate(format!(
            "a node certificate needs 1 to {MAX_HOSTS_PER_CERT} hosts (its peer address hosts), got {}",
            hosts.len()
        )));
    }
    if let Some(bad) = hosts.iter().find(|h| {
        h.is_empty() || h.len() > 253 || h.contains(':') && h.parse::<std::net::IpAddr>().is_err()
    }) {
        return Err(TransportError::Certificate(format!(
            "host {bad:?} is not an IP address or DNS name (give hosts without ports)"
        )));
    }
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| cert_err("reading the CA key", e))?;
    let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| TransportError::Certificate(format!("reading the CA certificate: {e}")))?;
    // The CA certificate's subject public key must be the CA key's, or every certificate
    // issued here would fail verification at the first handshake.
    if !contains(ca_der.as_ref(), &ca_key.subject_public_key_info()) {
        return Err(TransportError::Certificate(
            "the CA key does not belong to the CA certificate".into(),
        ));
    }
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
        .map_err(|e| cert_err("reading the CA certificate", e))?;
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| cert_err("node certificate hosts", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Quire");
    dn.push(DnType::CommonName, format!("{NODE_CN_PREFIX}{node_id}"));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| cert_err("generating the node key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| cert_err("signing the node certificate", e))?;
    Ok(NodeCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes `ca.pem` and `ca.key` into `dir` (created if missing). Refuses to overwrite either
/// file; checks both before writing anything. The key gets mode 0600.
pub fn write_ca_dir(dir: &Path, ca: &CaFiles) -> Result<(), TransportError> {
    write_files(
        dir,
        &[
            (CA_CERT_FILE, ca.cert_pem.as_str(), false),
            (CA_KEY_FILE, ca.key_pem.as_str(), true),
        ],
    )
}

/// Writes `node.pem`, `node.key` and `ca.pem` into `dir` (created if missing). Refuses to
/// overwrite any of them; checks all before writing anything. The key gets mode 0600.
pub fn write_node_dir(
    dir: &Path,
    node: &NodeCert,
    ca_cert_pem: &str,
) -> Result<(), TransportError> {
    write_files(
        dir,
        &[
            (NODE_CERT_FILE, node.cert_pem.as_str(), false),
            (NODE_KEY_FILE, node.key_pem.as_str(), true),
            (CA_CERT_FILE, ca_cert_pem, false),
        ],
    )
}

fn write_files(dir: &Path, files: &[(&str, &str, bool)]) -> Result<(), TransportError> {
    fs::create_dir_all(dir).map_err(|source| TransportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, _, _) in files {
        let path = dir.join(name);
        if path.exists() {
            return Err(TransportError::AlreadyExists(path));
        }
    }
    for (name, contents, secret) in files {
        let path = dir.join(name);
        write_new(&path, contents, *secret).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => TransportError::AlreadyExists(path.clone()),
            _ => TransportError::Write {
                path: path.clone(),
                source,
            },
        })?;
    }
    Ok(())
}

fn write_new(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// A node's TLS material, checked to parse: the cluster CA, its certificate and its key.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_cert_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl TlsMaterial {
    /// Material from PEM strings; each is checked to hold what it should.
    pub fn from_pem(
        ca_cert_pem: impl Into<String>,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Result<Self, TransportError> {
        let m = TlsMaterial {
            ca_cert_pem: ca_cert_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        check_certs(&m.ca_cert_pem).map_err(|reason| TransportError::TlsFile {
            path: PathBuf::from(CA_CERT_FILE),
            reason,
        })?;
        check_certs(&m.cert_pem).map_err(|reason| TransportError::TlsFile {
            path: PathBuf::from(NODE_CERT_FILE),
            reason,
        })?;
        check_key(&m.key_pem).map_err(|reason| TransportError::TlsFile {
            path: PathBuf::from(NODE_KEY_FILE),
            reason,
        })?;
        Ok(m)
    }

    /// Material for a freshly issued certificate.
    pub fn from_node_cert(ca_cert_pem: &str, node: &NodeCert) -> Result<Self, TransportError> {
        Self::from_pem(ca_cert_pem, node.cert_pem.clone(), node.key_pem.clone())
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// This node's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub(crate) fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    pub(crate) fn ca(&self) -> tonic::transport::Certificate {
        tonic::transport::Certificate::from_pem(&self.ca_cert_pem)
    }
}

fn check_certs(pem: &str) -> Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

fn check_key(pem: &str) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| format!("not a PEM private key: {e}"))
}

/// The files of a node's TLS directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `ca.pem`.
    pub ca_cert: PathBuf,
    /// `node.pem`.
    pub cert: PathBuf,
    /// `node.key`.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The file paths inside `node_dir`.
    pub fn in_dir(node_dir: &Path) -> Self {
        Self {
            ca_cert: node_dir.join(CA_CERT_FILE),
            cert: node_dir.join(NODE_CERT_FILE),
            key: node_dir.join(NODE_KEY_FILE),
        }
    }

    /// Loads and checks `ca.pem`, `node.pem` and `node.key` from `node_dir`; an error names
    /// the file that is missing or invalid.
    pub fn load(node_dir: impl AsRef<Path>) -> Result<TlsMaterial, TransportError> {
        let files = Self::in_dir(node_dir.as_ref());
        let ca = read_tls_file(&files.ca_cert)?;
        check_certs(&ca).map_err(|reason| tls_file(&files.ca_cert, reason))?;
        let cert = read_tls_file(&files.cert)?;
        check_certs(&cert).map_err(|reason| tls_file(&files.cert, reason))?;
        let key = read_tls_file(&files.key)?;
        check_key(&key).map_err(|reason| tls_file(&files.key, reason))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = fs::metadata(&files.key)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %files.key.display(), "node key is readable by group or others; chmod 600 it");
            }
        }
        Ok(TlsMaterial {
            ca_cert_pem: ca,
            cert_pem: cert,
            key_pem: key,
        })
    }
}

fn tls_file(path: &Path, reason: String) -> TransportError {
    TransportError::TlsFile {
        path: path.to_path_buf(),
        reason,
    }
}

fn read_tls_file(path: &Path) -> Result<String, TransportError> {
    let meta = fs::metadata(path).map_err(|e| {
        tls_file(
            path,
            match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "missing; issue the node's certificate into this directory first".into()
                }
                _ => format!("cannot be read: {e}"),
            },
        )
    })?;
    if meta.len() > MAX_TLS_FILE_BYTES {
        return Err(tls_file(
            path,
            format!(
                "is {} bytes, more than the {MAX_TLS_FILE_BYTES} a TLS file may be",
                meta.len()
            ),
        ));
    }
    fs::read_to_string(path).map_err(|e| tls_file(path, format!("cannot be read: {e}")))
}

/// How peers talk: mutual TLS under the cluster CA, or plaintext (tests, local clusters).
#[derive(Debug, Clone)]
pub enum TransportSecurity {
    /// Both sides present certificates signed by the cluster CA and verify the other's.
    MutualTls(TlsMaterial),
    /// Plaintext HTTP/2: anyone who can reach the port can act as a peer.
    Insecure,
}

/// Installs aws-lc-rs as rustls' process-wide crypto provider unless one is installed.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_node_files_round_trip_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("test").unwrap();
        let node = issue_node_cert(
            &ca.cert_pem,
            &ca.key_pem,
            1,
            &["127.0.0.1".into(), "node1.local".into()],
        )
        .unwrap();
        write_ca_dir(&dir.path().join("ca"), &ca).unwrap();
        let node_dir = dir.path().join("n1");
        write_node_dir(&node_dir, &node, &ca.cert_pem).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(node_dir.join(NODE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(dir.path().join("ca").join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let m = TlsFiles::load(&node_dir).unwrap();
        assert_eq!(m.ca_cert_pem(), ca.cert_pem);
        assert_eq!(m.cert_pem(), node.cert_pem);
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));

        let before = fs::read_to_string(node_dir.join(NODE_KEY_FILE)).unwrap();
        let other = issue_node_cert(&ca.cert_pem, &ca.key_pem, 1, &["127.0.0.1".into()]).unwrap();
        let err = write_node_dir(&node_dir, &other, &ca.cert_pem).unwrap_err();
        assert!(matches!(err, TransportError::AlreadyExists(_)), "{err}");
        assert_eq!(
            fs::read_to_string(node_dir.join(NODE_KEY_FILE)).unwrap(),
            before
        );
    }

    #[test]
    fn load_names_the_missing_or_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = TlsFiles::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        let ca = generate_ca("test").unwrap();
        let node = issue_node_cert(&ca.cert_pem, &ca.key_pem, 2, &["localhost".into()]).unwrap();
        write_node_dir(dir.path(), &node, &ca.cert_pem).unwrap();
        fs::write(dir.path().join(NODE_KEY_FILE), "not a key").unwrap();
        let err = TlsFiles::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("node.key"), "{err}");
        fs::write(dir.path().join(NODE_CERT_FILE), "garbage").unwrap();
        let err = TlsFiles::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("node.pem"), "{err}");
    }

    #[test]
    fn bad_issue_inputs_are_refused() {
        let ca = generate_ca("a").unwrap();
        let other = generate_ca("b").unwrap();
        assert!(issue_node_cert(&ca.cert_pem, &ca.key_pem, 1, &[]).is_err());
        assert!(issue_node_cert(&ca.cert_pem, &ca.key_pem, 1, &["host:7000".into()]).is_err());
        let err =
            issue_node_cert(&ca.cert_pem, &other.key_pem, 1, &["127.0.0.1".into()]).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert!(issue_node_cert("nope", &ca.key_pem, 1, &["127.0.0.1".into()]).is_err());
        assert!(generate_ca(" ").is_err());
    }
}
