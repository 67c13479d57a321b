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

/// Makes the node's key ring: `current` seals, and the keys of `previous_files`
/// (`security.previous_master_key_files`) open what they sealed before a rotation.
pub fn key_ring(
    current: MasterKey,
    previous_files: &[std::path::PathBuf],
) -> anyhow::Result<MasterKey> {
    let previous = previous_files
        .iter()
        .map(|path| read_key_file(path).context("in security.previous_master_key_files"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(current.with_previous(previous))
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

#[cfg(test)]
mod tests {
    use quire_raft::seal::{SealError, integration_aad};

    use super::*;

    #[test]
    fn the_ring_seals_under_the_current_key_and_opens_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.key");
        let old = write_new_key(&old_path).unwrap();
        let new_path = dir.path().join("new.key");
        let new = write_new_key(&new_path).unwrap();
        let aad = integration_aad("acme", "main");
        let mut rng = StdRng::seed_from_u64(1);
        let under_old = old.seal(b"ntn_old", &aad, &mut rng).unwrap();

        let ring = key_ring(
            read_key_file(&new_path).unwrap(),
            std::slice::from_ref(&old_path),
        )
        .unwrap();
        assert_eq!(ring.id(), new.id());
        assert_eq!(ring.previous_ids().collect::<Vec<_>>(), [old.id()]);
        assert_eq!(
            ring.unseal(&under_old, &aad).unwrap().as_slice(),
            b"ntn_old"
        );
        let sealed = ring.seal(b"ntn_new", &aad, &mut rng).unwrap();
        assert_eq!(sealed.key_id.as_deref(), Some(new.id()));
        assert_eq!(new.unseal(&sealed, &aad).unwrap().as_slice(), b"ntn_new");

        // Dropped from the ring too early: the error names the missing key.
        let alone = key_ring(new.clone(), &[]).unwrap();
        match alone.unseal(&under_old, &aad) {
            Err(SealError::UnknownKey { id, .. }) => assert_eq!(id, old.id()),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
    }

    #[test]
    fn a_secret_sealed_before_ids_existed_opens_with_a_previous_key() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.key");
        let old = write_new_key(&old_path).unwrap();
        let new = MasterKey::generate(&mut StdRng::seed_from_u64(2));
        let aad = integration_aad("acme", "main");
        let mut legacy = old
            .seal(b"ntn_legacy", &aad, &mut StdRng::seed_from_u64(3))
            .unwrap();
        legacy.key_id = None;
        let ring = key_ring(new.clone(), &[old_path]).unwrap();
        assert_eq!(
            ring.unseal(&legacy, &aad).unwrap().as_slice(),
            b"ntn_legacy"
        );
        assert_eq!(new.unseal(&legacy, &aad), Err(SealError::Unauthentic));
    }

    #[test]
    fn a_bad_previous_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        let err = key_ring(MasterKey::from_bytes([1; 32]), std::slice::from_ref(&bad)).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("bad.key") && text.contains("previous_master_key_files"),
            "{text}"
        );
    }
}
