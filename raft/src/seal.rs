//! Sealing of secrets (Notion integration tokens) under the cluster's master key with
//! AES-256-GCM, and hashing of API-token secrets.
//!
//! A sealed secret is bound to its place by associated data (e.g. `"acme/notion-main"`), so a
//! ciphertext copied to another integration does not open there. The key version is bound
//! too.
//!
//! Every master key has a public [`MasterKey::id`] (derived from its bytes, domain-separated,
//! so it reveals nothing about the key), and a sealed secret records the id of the key that
//! sealed it. A node holds a key ring: the current key, which seals everything new, and the
//! previous keys (see [`MasterKey::with_previous`]), which only open what they sealed before
//! a rotation. Plaintexts come back in [`Zeroizing`] buffers, and no type here prints a secret in
//! `Debug` or `Display`.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use zeroize::Zeroizing;

/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// The key version that [`MasterKey`] seals under today.
pub const CURRENT_KEY_VERSION: u32 = 1;
/// Largest plaintext accepted by [`MasterKey::seal`], in bytes (Notion tokens are ~50).
pub const MAX_PLAINTEXT_BYTES: usize = 16 * 1024;

const AAD_PREFIX: &[u8] = b"quire-seal\0";
const KEY_CHECK_PLAINTEXT: &[u8] = b"quire master key check v1";
const KEY_CHECK_AAD: &[u8] = b"cluster/key-check";
const KEY_ID_DOMAIN: &[u8] = b"quire master key id v1\0";
/// Length of a [`MasterKey::id`] in hex characters.
pub const KEY_ID_LEN: usize = 16;

/// A master key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text was neither 64 hex characters nor base64 of 32 bytes.
    #[error(
        "master key is neither 64 hex characters nor base64 of 32 bytes ({len} characters after trimming); generate one with `quire init`"
    )]
    Unrecognised {
        /// Length of the trimmed text.
        len: usize,
    },
    /// The text decoded, but not to 32 bytes.
    #[error("master key decodes to {found} bytes, expected 32")]
    WrongLength {
        /// Decoded length.
        found: usize,
    },
}

/// A sealed secret could not be opened (or sealed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The secret was sealed under another key version than this key's.
    #[error("secret sealed under key version {found}, but this master key is version {expected}")]
    KeyVersion {
        /// Version recorded in the sealed secret.
        found: u32,
        /// Version of the key at hand.
        expected: u32,
    },
    /// The secret names the key that sealed it, and that key is not in this node's ring.
    #[error(
        "secret sealed under master key {id}, which is not in this node's key ring (current key {current})"
    )]
    UnknownKey {
        /// Id recorded in the sealed secret.
        id: String,
        /// Id of the node's current key.
        current: String,
    },
    /// Authentication failed: wrong master key, tampered ciphertext, or wrong place (AAD).
    #[error(
        "secret does not open: wrong master key, tampered ciphertext, or sealed for another place"
    )]
    Unauthentic,
    /// The opened plaintext was expected to be UTF-8 text and is not.
    #[error("opened secret is not UTF-8 text")]
    NotUtf8,
    /// The plaintext is larger than [`MAX_PLAINTEXT_BYTES`].
    #[error("secret is {len} bytes, more than the limit of {MAX_PLAINTEXT_BYTES}")]
    TooLarge {
        /// Plaintext length.
        len: usize,
    },
}

/// The cluster's 256-bit master key (the current key of a node's key ring, with the
/// previous keys it still opens secrets with). Its bytes are wiped on drop and never printed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    version: u32,
    id: String,
    /// Previous keys of the ring, oldest last; each has no previous keys of its own.
    previous: Vec<MasterKey>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("id", &self.id)
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("bytes", &"<redacted>")
            .finish()
    }
}

/// The public id of a key: the first [`KEY_ID_LEN`] hex characters of a domain-separated
/// SHA-256 of its bytes.
fn key_id(bytes: &[u8; KEY_LEN]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(KEY_ID_DOMAIN);
    hasher.update(bytes);
    let mut id = hex::encode(hasher.finalize());
    id.truncate(KEY_ID_LEN);
    id
}

impl MasterKey {
    fn new(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let id = key_id(&bytes);
        Self {
            bytes,
            version: CURRENT_KEY_VERSION,
            id,
            previous: Vec::new(),
        }
    }

    /// Wraps 32 raw bytes as a version-1 key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self::new(Zeroizing::new(bytes))
    }

    /// This key's public id (16 hex characters), recorded in everything it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Makes a key ring: `self` stays the current key (it seals everything), and `previous`
    /// (their own previous keys ignored, duplicates of a key already in the ring dropped)
    /// open what they sealed before.
    pub fn with_previous(mut self, previous: impl IntoIterator<Item = MasterKey>) -> Self {
        for mut key in previous {
            key.previous.clear();
            if key.id != self.id && !self.previous.iter().any(|k| k.id == key.id) {
                self.previous.push(key);
            }
        }
        self
    }

    /// The ids of the previous keys of the ring (see [`MasterKey::with_previous`]).
    pub fn previous_ids(&self) -> impl Iterator<Item = &str> {
        self.previous.iter().map(|k| k.id.as_str())
    }

    /// Whether the key with this id is in the ring (current or previous).
    pub fn holds(&self, id: &str) -> bool {
        self.id == id || self.previous.iter().any(|k| k.id == id)
    }

    /// Whether `sealed` was sealed under the current key (a secret without a key id, sealed
    /// before ids existed, counts as not current).
    pub fn is_current(&self, sealed: &SealedSecret) -> bool {
        sealed.key_id.as_deref() == Some(self.id.as_str())
    }

    /// Parses a key from text: 64 hex characters, or base64 (standard or URL-safe) of 32
    /// bytes. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            hex::decode_to_slice(text, bytes.as_mut_slice())
                .map_err(|_| KeyError::Unrecognised { len: text.len() })?;
            return Ok(Self::new(bytes));
        }
        let decoded = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(text))
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Unrecognised { len: text.len() })?;
        if decoded.len() != KEY_LEN {
            return Err(KeyError::WrongLength {
                found: decoded.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Ok(Self::new(bytes))
    }

    /// Draws a fresh key from `rng` (which must be a CSPRNG in production).
    pub fn generate(rng: &mut impl rand::CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(bytes.as_mut_slice());
        Self::new(bytes)
    }

    /// The key as 64 lowercase hex characters (what [`MasterKey::parse`] reads back).
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_slice()))
    }

    /// The key version recorded in everything sealed under this key.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn cipher(&self) -> Aes256Gcm {
        // A 32-byte slice always has the length AES-256 needs.
        #[allow(clippy::expect_used, reason = "the key is a fixed 32-byte array")]
        Aes256Gcm::new_from_slice(self.bytes.as_slice()).expect("32-byte key")
    }

    fn full_aad(version: u32, aad: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(AAD_PREFIX.len() + 4 + aad.len());
        full.extend_from_slice(AAD_PREFIX);
        full.extend_from_slice(&version.to_be_bytes());
        full.extend_from_slice(aad);
        full
    }

    /// Seals `plaintext` under the current key for the place named by `aad`, with a nonce
    /// drawn from `rng`.
    pub fn seal(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<SealedSecret, SealError> {
        if plaintext.len() > MAX_PLAINTEXT_BYTES {
            return Err(SealError::TooLarge {
                len: plaintext.len(),
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let full_aad = Self::full_aad(self.version, aad);
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &full_aad,
                },
            )
            .map_err(|_| SealError::TooLarge {
                len: plaintext.len(),
            })?;
        Ok(SealedSecret {
            key_version: self.version,
            key_id: Some(self.id.clone()),
            nonce,
            ciphertext,
        })
    }

    /// Opens a secret sealed for the place named by `aad`, with the key of the ring whose id
    /// the secret records; a secret sealed before ids existed is tried under the current key,
    /// then under each previous key.
    pub fn unseal(
        &self,
        sealed: &SealedSecret,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        match &sealed.key_id {
            Some(id) => {
                let key = std::iter::once(self)
                    .chain(self.previous.iter())
                    .find(|k| &k.id == id)
                    .ok_or_else(|| SealError::UnknownKey {
                        id: id.clone(),
                        current: self.id.clone(),
                    })?;
                key.unseal_one(sealed, aad)
            }
            None => {
                let mut result = self.unseal_one(sealed, aad);
                for key in &self.previous {
                    if result.is_ok() {
                        break;
                    }
                    result = key.unseal_one(sealed, aad);
                }
                result
            }
        }
    }

    /// Opens `sealed` with this very key (not the rest of the ring).
    fn unseal_one(
        &self,
        sealed: &SealedSecret,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.key_version != self.version {
            return Err(SealError::KeyVersion {
                found: sealed.key_version,
                expected: self.version,
            });
        }
        let full_aad = Self::full_aad(sealed.key_version, aad);
        self.cipher()
            .decrypt(
                &Nonce::from(sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &full_aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Unauthentic)
    }

    /// Opens a secret that must be UTF-8 text (a Notion token).
    pub fn unseal_string(
        &self,
        sealed: &SealedSecret,
        aad: &[u8],
    ) -> Result<Zeroizing<String>, SealError> {
        let bytes = self.unseal(sealed, aad)?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(Zeroizing::new(text.to_string())),
            Err(_) => Err(SealError::NotUtf8),
        }
    }

    /// Opens `sealed` (sealed for `aad`) with whichever key of the ring sealed it and seals it
    /// again under the current key. Used by key rotation.
    pub fn reseal(
        &self,
        sealed: &SealedSecret,
        aad: &[u8],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<SealedSecret, SealError> {
        let plaintext = self.unseal(sealed, aad)?;
        self.seal(&plaintext, aad, rng)
    }

    /// Reseals the cluster's key check under the current key (see [`MasterKey::reseal`]).
    pub fn reseal_key_check(
        &self,
        key_check: &SealedSecret,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<SealedSecret, SealError> {
        self.verify_key_check(key_check)?;
        self.key_check(rng)
    }

    /// A known plaintext sealed under this key, recorded once in the cluster state by
    /// `InitCluster` so that a node can tell a wrong master key at start-up.
    pub fn key_check(&self, rng: &mut impl rand::CryptoRng) -> Result<SealedSecret, SealError> {
        self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD, rng)
    }

    /// Checks that `key_check` (from the cluster state) was sealed under a key of this ring.
    pub fn verify_key_check(&self, key_check: &SealedSecret) -> Result<(), SealError> {
        let opened = self.unseal(key_check, KEY_CHECK_AAD)?;
        if opened.as_slice() == KEY_CHECK_PLAINTEXT {
            Ok(())
        } else {
            Err(SealError::Unauthentic)
        }
    }
}

/// The associated data that binds an integration's Notion token to its place.
pub fn integration_aad(tenant: &str, integration: &str) -> Vec<u8> {
    format!("integration/{tenant}/{integration}").into_bytes()
}

/// A secret sealed under a master key: AES-256-GCM ciphertext (with its tag) and nonce.
/// Serialised with the nonce and ciphertext as base64 strings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// Version of the master key it was sealed under.
    pub key_version: u32,
    /// Id of the master key it was sealed under ([`MasterKey::id`]); `None` for a secret
    /// sealed before keys had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The 96-bit nonce.
    #[serde(with = "b64_nonce")]
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    #[serde(with = "b64_bytes")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("key_version", &self.key_version)
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

mod b64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() > 2 * super::MAX_PLAINTEXT_BYTES {
            return Err(serde::de::Error::custom("sealed ciphertext too long"));
        }
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("ciphertext is not base64: {e}")))
    }
}

mod b64_nonce {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::NONCE_LEN;

    pub fn serialize<S: Serializer>(bytes: &[u8; NONCE_LEN], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; NONCE_LEN], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("nonce is not base64: {e}")))?;
        <[u8; NONCE_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
            serde::de::Error::custom(format!(
                "nonce is {} bytes, expected {NONCE_LEN}",
                bytes.len()
            ))
        })
    }
}

/// Hashes an API-token secret for storage and lookup: lowercase hex SHA-256.
pub fn hash_api_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn key(seed: u64) -> MasterKey {
        MasterKey::generate(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    #[test]
    fn the_id_is_stable_public_and_distinct() {
        let a = key(1);
        assert_eq!(a.id().len(), KEY_ID_LEN);
        assert!(a.id().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(MasterKey::parse(&a.to_text()).unwrap().id(), a.id());
        assert_ne!(a.id(), key(2).id());
        // Not a prefix of the key itself, nor of its plain SHA-256.
        assert!(!a.to_text().starts_with(a.id()));
        assert!(!hex::encode(Sha256::digest(a.bytes.as_slice())).starts_with(a.id()));
    }

    #[test]
    fn seals_under_the_current_key_and_records_its_id() {
        let (old, new) = (key(1), key(2));
        let ring = new.clone().with_previous([old.clone()]);
        let sealed = ring
            .seal(b"ntn_secret", b"here", &mut ChaCha20Rng::seed_from_u64(3))
            .unwrap();
        assert_eq!(sealed.key_id.as_deref(), Some(new.id()));
        assert!(ring.is_current(&sealed));
        assert_eq!(
            new.unseal(&sealed, b"here").unwrap().as_slice(),
            b"ntn_secret"
        );
        assert!(old.unseal(&sealed, b"here").is_err());
    }

    #[test]
    fn unseal_picks_the_key_by_id() {
        let (old, new) = (key(1), key(2));
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let under_old = old.seal(b"ntn_old", b"here", &mut rng).unwrap();
        let ring = new.clone().with_previous([old.clone()]);
        assert!(!ring.is_current(&under_old));
        assert_eq!(
            ring.unseal(&under_old, b"here").unwrap().as_slice(),
            b"ntn_old"
        );
        // Without the old key: a clear error naming the missing key.
        let err = new.unseal(&under_old, b"here").unwrap_err();
        assert_eq!(
            err,
            SealError::UnknownKey {
                id: old.id().to_owned(),
                current: new.id().to_owned()
            }
        );
        assert!(err.to_string().contains(old.id()), "{err}");
        // An id that names a key of the ring is opened by that key only.
        let mut lying = under_old.clone();
        lying.key_id = Some(new.id().to_owned());
        assert_eq!(ring.unseal(&lying, b"here"), Err(SealError::Unauthentic));
        // Reseal moves it under the current key.
        let resealed = ring.reseal(&under_old, b"here", &mut rng).unwrap();
        assert!(ring.is_current(&resealed));
        assert_eq!(
            new.unseal(&resealed, b"here").unwrap().as_slice(),
            b"ntn_old"
        );
        assert!(ring.reseal(&under_old, b"elsewhere", &mut rng).is_err());
    }

    #[test]
    fn a_secret_without_an_id_tries_the_current_then_the_previous_keys() {
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut legacy = k1.seal(b"ntn_legacy", b"here", &mut rng).unwrap();
        legacy.key_id = None;
        // Serialised as before ids existed, it still reads back.
        let json = serde_json::to_string(&legacy).unwrap();
        assert!(!json.contains("key_id"), "{json}");
        let back: SealedSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, legacy);

        assert_eq!(
            k1.unseal(&legacy, b"here").unwrap().as_slice(),
            b"ntn_legacy"
        );
        let ring = k3.clone().with_previous([k2.clone(), k1.clone()]);
        assert_eq!(
            ring.unseal(&legacy, b"here").unwrap().as_slice(),
            b"ntn_legacy"
        );
        assert!(!ring.is_current(&legacy));
        let without = k3.clone().with_previous([k2]);
        assert_eq!(
            without.unseal(&legacy, b"here"),
            Err(SealError::Unauthentic)
        );
        // The key check too.
        let mut check = k1.key_check(&mut rng).unwrap();
        check.key_id = None;
        assert!(ring.verify_key_check(&check).is_ok());
        assert!(without.verify_key_check(&check).is_err());
        let resealed = ring.reseal_key_check(&check, &mut rng).unwrap();
        assert!(k3.verify_key_check(&resealed).is_ok());
    }

    #[test]
    fn the_ring_drops_duplicates_and_nested_rings() {
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let nested = k2.clone().with_previous([k1.clone()]);
        let ring = k3.clone().with_previous([nested, k3.clone(), k2.clone()]);
        assert_eq!(ring.previous_ids().collect::<Vec<_>>(), [k2.id()]);
        assert!(ring.holds(k3.id()) && ring.holds(k2.id()) && !ring.holds(k1.id()));
        assert!(!format!("{ring:?}").contains(k3.to_text().as_str()));
    }
}
