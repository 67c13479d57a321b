//! Sealing: round trip, wrong key, tampering, AAD mismatch, key parsing, redaction.

#![allow(clippy::unwrap_used, reason = "tests")]

use quire_raft::seal::{KeyError, MasterKey, SealError, hash_api_token, integration_aad};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

#[test]
fn seal_unseal_round_trip() {
    let mut r = rng(1);
    let key = MasterKey::generate(&mut r);
    let aad = integration_aad("acme", "main");
    let sealed = key.seal(b"ntn_secret_token", &aad, &mut r).unwrap();
    assert_ne!(sealed.ciphertext.as_slice(), b"ntn_secret_token".as_slice());
    assert_eq!(sealed.key_version, 1);
    let opened = key.unseal(&sealed, &aad).unwrap();
    assert_eq!(opened.as_slice(), b"ntn_secret_token");
    assert_eq!(
        key.unseal_string(&sealed, &aad).unwrap().as_str(),
        "ntn_secret_token"
    );
    // Two seals of the same plaintext differ (fresh nonces).
    let again = key.seal(b"ntn_secret_token", &aad, &mut r).unwrap();
    assert_ne!(again.nonce, sealed.nonce);
    // Serde round trip as base64 strings.
    let json = serde_json::to_string(&sealed).unwrap();
    assert!(json.contains("\"nonce\":\""), "{json}");
    let back = serde_json::from_str(&json).unwrap();
    assert_eq!(sealed, back);
}

#[test]
fn wrong_key_fails() {
    let mut r = rng(2);
    let key = MasterKey::generate(&mut r);
    let other = MasterKey::generate(&mut r);
    let sealed = key.seal(b"secret", b"a/b", &mut r).unwrap();
    // The secret names the key that sealed it: another key says which one it lacks.
    assert_eq!(
        other.unseal(&sealed, b"a/b").unwrap_err(),
        SealError::UnknownKey {
            id: key.id().to_owned(),
            current: other.id().to_owned()
        }
    );
    // Without that id (sealed before keys had ids), the other key simply does not open it.
    let mut legacy = sealed.clone();
    legacy.key_id = None;
    assert_eq!(
        other.unseal(&legacy, b"a/b").unwrap_err(),
        SealError::Unauthentic
    );
    let check = key.key_check(&mut r).unwrap();
    key.verify_key_check(&check).unwrap();
    assert!(other.verify_key_check(&check).is_err());
}

#[test]
fn tampered_ciphertext_fails() {
    let mut r = rng(3);
    let key = MasterKey::generate(&mut r);
    let sealed = key.seal(b"secret", b"a/b", &mut r).unwrap();
    for pos in [0, sealed.ciphertext.len() - 1] {
        let mut bad = sealed.clone();
        bad.ciphertext[pos] ^= 0x01;
        assert_eq!(
            key.unseal(&bad, b"a/b").unwrap_err(),
            SealError::Unauthentic
        );
    }
    let mut bad_nonce = sealed.clone();
    bad_nonce.nonce[0] ^= 0x80;
    assert_eq!(
        key.unseal(&bad_nonce, b"a/b").unwrap_err(),
        SealError::Unauthentic
    );
    let mut bad_version = sealed;
    bad_version.key_version = 2;
    assert!(matches!(
        key.unseal(&bad_version, b"a/b").unwrap_err(),
        SealError::KeyVersion {
            found: 2,
            expected: 1
        }
    ));
}

#[test]
fn aad_mismatch_fails() {
    let mut r = rng(4);
    let key = MasterKey::generate(&mut r);
    let sealed = key
        .seal(b"secret", &integration_aad("acme", "main"), &mut r)
        .unwrap();
    assert_eq!(
        key.unseal(&sealed, &integration_aad("evil", "main"))
            .unwrap_err(),
        SealError::Unauthentic
    );
    assert_eq!(
        key.unseal(&sealed, &integration_aad("acme", "other"))
            .unwrap_err(),
        SealError::Unauthentic
    );
}

#[test]
fn key_text_parsing() {
    let mut r = rng(5);
    let key = MasterKey::generate(&mut r);
    let hex_text = key.to_text();
    assert_eq!(hex_text.len(), 64);
    let parsed = MasterKey::parse(&format!("  {}\n", hex_text.as_str())).unwrap();
    let sealed = key.seal(b"x", b"y", &mut r).unwrap();
    assert_eq!(parsed.unseal(&sealed, b"y").unwrap().as_slice(), b"x");

    use base64::Engine as _;
    let bytes = hex::decode(hex_text.as_str()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let from_b64 = MasterKey::parse(&b64).unwrap();
    assert_eq!(from_b64.to_text().as_str(), hex_text.as_str());

    assert!(matches!(
        MasterKey::parse("nothex!"),
        Err(KeyError::Unrecognised { .. })
    ));
    let short = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
    assert_eq!(
        MasterKey::parse(&short).unwrap_err(),
        KeyError::WrongLength { found: 16 }
    );
    assert!(MasterKey::parse("").is_err());
}

#[test]
fn secrets_never_in_debug() {
    let mut r = rng(6);
    let key = MasterKey::generate(&mut r);
    let text = key.to_text();
    let dbg = format!("{key:?}");
    assert!(
        !dbg.contains(text.as_str()) && dbg.contains("redacted"),
        "{dbg}"
    );
    let sealed = key.seal(b"plain-secret", b"a", &mut r).unwrap();
    let dbg = format!("{sealed:?}");
    assert!(!dbg.contains("plain-secret"), "{dbg}");
}

#[test]
fn api_token_hash_is_sha256_hex() {
    assert_eq!(
        hash_api_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_ne!(hash_api_token("abc"), hash_api_token("abd"));
}
