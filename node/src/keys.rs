//! The master key that seals Notion tokens: where it comes from and how a new one is made.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::SeedableRng;
use rand::rngs::StdRng;

use quire_raft::seal::MasterKey;

/// Where the master key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    File(std::path::PathBuf),
    Generated(std::path::PathBuf),
}

/// Reads a master key file (64 hex characters or base64 of 32 bytes).
pub fn read_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the master key file {}", path.display()))?;
    MasterKey::parse(&text)
        .with_context(|| format!("the master key file {} is not a key", path.display()))
}

/// Writes a new key to `path` with mode 0600; refuses to overwrite.
pub fn write_new_key(path: &Path) -> anyhow::Result<MasterKey> {
    let key = MasterKey::generate(&mut StdRng::from_os_rng());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the master key file {}", path.display()))?;
    file.write_all(key.to_text().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(key)
}

/// `quire keygen`.
pub fn keygen(out: Option<&Path>) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            write_new_key(path)?;
            eprintln!("wrote a new master key to {}", path.display());
        }
        None => {
            let key = MasterKey::generate(&mut StdRng::from_os_rng());
            println!("{}", key.to_text().as_str());
        }
    }
    Ok(())
}
