//! Sealing of secrets (Notion integration tokens) under the cluster's master key with
//! AES-256-GCM, and hashing of API-token secrets.
//!
//! A sealed secret is bound to its place by associated data (e.g. `"acme/notion-main"`), so a
//! ciphertext copied to another integration does not open there. The key version is bound
//! too. Plaintexts come back in [`Zeroizing`] buffers, and no type here prints a secret in
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

/// The cluster's 256-bit master key. Its bytes are wiped on drop and never printed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    version: u32,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl MasterKey {
    /// Wraps 32 raw bytes as a version-1 key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            version: CURRENT_KEY_VERSION,
        }
    }

    /// Parses a key from text: 64 hex characters, or base64 (standard or URL-safe) of 32
    /// bytes. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            hex::decode_to_slice(text, bytes.as_mut_slice())
                .map_err(|_| KeyError::Unrecognised { len: text.len() })?;
            return Ok(Self {
                bytes,
                version: CURRENT_KEY_VERSION,
            });
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
        Ok(Self {
            bytes,
            version: CURRENT_KEY_VERSION,
        })
    }

    /// Draws a fresh key from `rng` (which must be a CSPRNG in production).
    pub fn generate(rng: &mut impl rand::CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(bytes.as_mut_slice());
        Self {
            bytes,
            version: CURRENT_KEY_VERSION,
        }
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

    /// Seals `plaintext` for the place named by `aad`, with a nonce drawn from `rng`.
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
            nonce,
            ciphertext,
        })
    }

    /// Opens a secret sealed for the place named by `aad`.
    pub fn unseal(
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

    /// A known plaintext sealed under this key, recorded once in the cluster state by
    /// `InitCluster` so that a node can tell a wrong master key at start-up.
    pub fn key_check(&self, rng: &mut impl rand::CryptoRng) -> Result<SealedSecret, SealError> {
        self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD, rng)
    }

    /// Checks that `key_check` (from the cluster state) was sealed under this very key.
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
