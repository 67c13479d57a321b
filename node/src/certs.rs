//! `quire certs`: the cluster's certificate authority and each node's certificate for the
//! peer network's mutual TLS.

use std::path::Path;

use anyhow::Context;
use quire_transport::tls;

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
