//! `quire certs`: the cluster's certificate authority, each node's certificate for the
//! peer network's mutual TLS, and server certificates for the HTTPS front agents use.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use quire_transport::tls;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// `quire certs init --out DIR`: a new cluster CA (`ca.pem`, `ca.key`).
pub fn init_ca(out: &Path, cluster_name: &str) -> anyhow::Result<()> {
    let ca = tls::generate_ca(cluster_name)?;
    tls::write_ca_dir(out, &ca)?;
    println!(
        "wrote the cluster CA to {} (keep ca.key secret and offline)",
        out.display()
    );
    Ok(())
}

/// `quire certs node --id N --host H --ca DIR --out DIR`: a node certificate signed by the
/// cluster CA, with the CA certificate beside it.
pub fn issue_node(id: u64, hosts: &[String], ca_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (make a CA with `quire certs init --out DIR`)",
                path.display()
            )
        })
    };
    let ca_cert = read(tls::CA_CERT_FILE)?;
    let ca_key = read(tls::CA_KEY_FILE)?;
    let node = tls::issue_node_cert(&ca_cert, &ca_key, id, hosts)?;
    tls::write_node_dir(out, &node, &ca_cert)?;
    println!(
        "wrote node {id}'s certificate for {} to {}",
        hosts.join(", "),
        out.display()
    );
    Ok(())
}

/// HTTPS front certificate file name (`quire certs http` writes it).
pub const HTTP_CERT_FILE: &str = "http.pem";
/// HTTPS front key file name.
pub const HTTP_KEY_FILE: &str = "http.key";

/// A server certificate for the HTTP front, in PEM.
#[derive(Clone)]
pub struct HttpCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for HttpCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Issues a server certificate for the HTTP front, signed by the CA: server auth only (it
/// cannot act as a peer), one SAN per host (IP addresses as IP SANs, names as DNS SANs).
pub fn issue_http_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    hosts: &[String],
) -> anyhow::Result<HttpCert> {
    if hosts.is_empty() || hosts.len() > tls::MAX_HOSTS_PER_CERT {
        anyhow::bail!(
            "an HTTPS certificate needs 1 to {} hosts (the names and addresses agents use), got {}",
            tls::MAX_HOSTS_PER_CERT,
            hosts.len()
        );
    }
    if let Some(bad) = hosts.iter().find(|h| {
        h.is_empty() || h.len() > 253 || h.contains(':') && h.parse::<std::net::IpAddr>().is_err()
    }) {
        anyhow::bail!("host {bad:?} is not an IP address or DNS name (give hosts without ports)");
    }
    let ca_key = KeyPair::from_pem(ca_key_pem).context("cannot read the CA key")?;
    let issuer =
        Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).context("cannot read the CA certificate")?;
    let mut params =
        CertificateParams::new(hosts.to_vec()).context("invalid host for a certificate")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Quire");
    dn.push(DnType::CommonName, "quire-http");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("cannot generate the key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the certificate")?;
    Ok(HttpCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// `quire certs http --host H --ca DIR --out DIR`: the HTTP front's certificate
/// (`http.pem`, `http.key`) signed by the CA in `ca_dir`. Refuses to overwrite either file.
pub fn issue_http(hosts: &[String], ca_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (make a CA with `quire certs init --out DIR`)",
                path.display()
            )
        })
    };
    let ca_cert = read(tls::CA_CERT_FILE)?;
    let ca_key = read(tls::CA_KEY_FILE)?;
    let cert = issue_http_cert(&ca_cert, &ca_key, hosts)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let cert_path = out.join(HTTP_CERT_FILE);
    let key_path = out.join(HTTP_KEY_FILE);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            anyhow::bail!(
                "{} already exists; remove it or choose another --out",
                path.display()
            );
        }
    }
    write_new(&key_path, &cert.key_pem, true)?;
    write_new(&cert_path, &cert.cert_pem, false)?;
    println!(
        "wrote the HTTPS certificate for {} to {} (agents trust {})",
        hosts.join(", "),
        out.display(),
        ca_dir.join(tls::CA_CERT_FILE).display()
    );
    Ok(())
}

fn write_new(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_certificates_carry_their_hosts_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        init_ca(&ca_dir, "test").unwrap();
        let out = dir.path().join("tls");
        let hosts = vec!["127.0.0.1".to_owned(), "quire.example.com".to_owned()];
        issue_http(&hosts, &ca_dir, &out).unwrap();
        let pem = std::fs::read_to_string(out.join(HTTP_CERT_FILE)).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes());
        let der: rustls::pki_types::CertificateDer<'_> = der.unwrap();
        let text = String::from_utf8_lossy(der.as_ref());
        assert!(text.contains("quire.example.com"), "DNS SAN missing");
        assert!(
            der.as_ref().windows(4).any(|w| w == [127, 0, 0, 1]),
            "IP SAN missing"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join(HTTP_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = issue_http(&hosts, &ca_dir, &out).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(issue_http(&["h:1".into()], &ca_dir, &dir.path().join("x")).is_err());
        assert!(issue_http(&[], &ca_dir, &dir.path().join("y")).is_err());
    }
}
