//! Ed25519 signatures over a manifest, and the keys that make and check them.
//!
//! The signed message is a domain-separated, deterministic encoding of the manifest's
//! fields, so that reformatting the JSON (key order, white space, `v2.9.0` for `2.9.0`)
//! never breaks a signature, and no signature over anything else can pass for one.
//!
//! `firmware_url` is the one field left out: only the legacy fleet, which checks no
//! signature, reads it, and each source serves a copy whose URL points at itself.
//!
//! Encoding: [`DOMAIN`], then for each field in the order of [`Manifest::signed_message`]:
//! the field name as `u8 length, bytes`, then the value as a tag byte and its payload:
//! `0` absent; `1` text as `u32 LE length, UTF-8`; `2` integer as `u64 LE`; `3` boolean
//! as one byte; `4` 32 raw bytes (the SHA-256); `5` a list as `u32 LE count`, then
//! each item's fields, encoded as the fields are.
//!
//! `patches` comes last and only when the manifest lists any, so a manifest without
//! patches signs exactly as it did before the field existed.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{FORMAT, Manifest};
use crate::hex::{self, Hex};

/// Opens every signed message, so a manifest signature means nothing anywhere else.
pub const DOMAIN: &[u8] = b"clockrel manifest signature v1\n";
const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "clockrel-secret-ed25519:";

/// The first 8 bytes of the SHA-256 of a public key: names the key in a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex::write(f, &self.0)
    }
}

/// A public key devices trust, written `ed25519:<64 hex digits>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn id(&self) -> KeyId {
        let digest = crate::Sha256::of(self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.0[..8]);
        KeyId(id)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Reads a trusted-keys file: one key per line, `#` starts a comment, blank lines
    /// are skipped. The firmware embeds the same file the CLI reads. `Err` gives the
    /// 1-based line number.
    pub fn parse_list(text: &str) -> Result<Vec<PublicKey>, (usize, KeyError)> {
        text.lines()
            .enumerate()
            .map(|(n, line)| (n + 1, line.split('#').next().unwrap_or("").trim()))
            .filter(|(_, line)| !line.is_empty())
            .map(|(n, line)| line.parse().map_err(|e| (n, e)))
            .collect()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", Hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self}, id {})", self.id())
    }
}

/// Text that is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a public key: expected ed25519: followed by 64 hex digits")]
    BadPublicKey,
    #[error(
        "not a clockrel secret key: expected clockrel-secret-ed25519: followed by 64 hex digits"
    )]
    BadSecretKey,
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .and_then(hex::decode::<32>)
            .ok_or(KeyError::BadPublicKey)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::BadPublicKey)
    }
}

/// The release signing key. It never shows itself: `Debug` and errors print only its id.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key for a 32-byte seed (from a CSPRNG when making a new key).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key file's text: `clockrel-secret-ed25519:<64 hex digits>` and a newline.
    pub fn to_key_file(&self) -> String {
        alloc::format!("{SECRET_PREFIX}{}\n", Hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(redacted, id {})", self.public().id())
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;

    /// Reads the key file's text (surrounding white space ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .strip_prefix(SECRET_PREFIX)
            .and_then(hex::decode::<32>)
            .map(SecretKey::from_seed)
            .ok_or(KeyError::BadSecretKey)
    }
}

/// A manifest's signature: which key made it, and the 64 signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key_id: KeyId,
    pub ed25519: [u8; 64],
}

/// The JSON shape of [`Signature`]: `{"key_id": "<16 hex>", "ed25519": "<128 hex>"}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureJson<'a> {
    key_id: alloc::borrow::Cow<'a, str>,
    ed25519: alloc::borrow::Cow<'a, str>,
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SignatureJson {
            key_id: alloc::format!("{}", self.key_id).into(),
            ed25519: alloc::format!("{}", Hex(&self.ed25519)).into(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let json = SignatureJson::deserialize(deserializer)?;
        let key_id = hex::decode::<8>(&json.key_id)
            .ok_or_else(|| D::Error::custom("signature key_id must be 16 hex digits"))?;
        let ed25519 = hex::decode::<64>(&json.ed25519)
            .ok_or_else(|| D::Error::custom("signature ed25519 must be 128 hex digits"))?;
        Ok(Signature {
            key_id: KeyId(key_id),
            ed25519,
        })
    }
}

/// Why a manifest is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0}")]
    Malformed(super::ManifestError),
    #[error("the manifest is in the legacy format, which carries no signature")]
    Legacy,
    #[error("the manifest is not signed")]
    Unsigned,
    #[error("the manifest is signed by key {0}, which is not trusted")]
    UnknownKey(KeyId),
    #[error("the manifest's signature by key {0} does not match its contents")]
    Invalid(KeyId),
}

impl Manifest {
    /// The exact bytes the signature covers (see the module docs for the encoding).
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Encoder(DOMAIN.to_vec());
        m.int("format", self.format.map(u64::from));
        m.text("version", Some(&alloc::format!("{}", self.version)));
        m.int("chip", self.chip.map(|c| u64::from(c.id())));
        m.int("secure_version", self.secure_version.map(u64::from));
        m.text("file", self.file.as_deref());
        m.digest("sha256", self.sha256.as_bytes());
        m.int("firmware_size", Some(self.firmware_size));
        m.boolean("requires_restart", self.requires_restart);
        m.text("build_date", self.build_date.as_deref());
        m.text("commit_hash", self.commit_hash.as_deref());
        m.text("title", self.title.as_deref());
        m.text("description", self.description.as_deref());
        m.text("release_date", self.release_date.as_deref());
        m.text("esp_idf_version", self.esp_idf_version.as_deref());
        if !self.patches.is_empty() {
            m.list("patches", self.patches.len());
            for patch in &self.patches {
                m.text("from", Some(&alloc::format!("{}", patch.from)));
                m.digest("base_digest", patch.base_digest.as_bytes());
                m.text("file", Some(&patch.file));
                m.int("size", Some(patch.size));
                m.digest("sha256", patch.sha256.as_bytes());
            }
        }
        m.0
    }

    /// Signs the manifest with `key`, replacing any signature it had.
    pub fn sign(&mut self, key: &SecretKey) {
        self.signature = None;
        let signature = key.0.sign(&self.signed_message());
        self.signature = Some(Signature {
            key_id: key.public().id(),
            ed25519: signature.to_bytes(),
        });
    }

    /// Checks the signature against the trusted keys; returns the key that made it.
    pub fn verify<'k>(&self, trusted: &'k [PublicKey]) -> Result<&'k PublicKey, SignatureError> {
        if self.format != Some(FORMAT) {
            return Err(SignatureError::Legacy);
        }
        self.validate().map_err(SignatureError::Malformed)?;
        let signature = self.signature.as_ref().ok_or(SignatureError::Unsigned)?;
        let key = trusted
            .iter()
            .find(|key| key.id() == signature.key_id)
            .ok_or(SignatureError::UnknownKey(signature.key_id))?;
        let ed25519 = ed25519_dalek::Signature::from_bytes(&signature.ed25519);
        key.0
            .verify_strict(&self.signed_message(), &ed25519)
            .map(|()| key)
            .map_err(|_| SignatureError::Invalid(signature.key_id))
    }
}

/// Builds the signed message field by field.
struct Encoder(Vec<u8>);

impl Encoder {
    fn name(&mut self, name: &str) {
        self.0.push(name.len() as u8);
        self.0.extend_from_slice(name.as_bytes());
    }

    fn text(&mut self, name: &str, value: Option<&str>) {
        self.name(name);
        match value {
            None => self.0.push(0),
            Some(text) => {
                self.0.push(1);
                self.0.extend_from_slice(&(text.len() as u32).to_le_bytes());
                self.0.extend_from_slice(text.as_bytes());
            }
        }
    }

    fn int(&mut self, name: &str, value: Option<u64>) {
        self.name(name);
        match value {
            None => self.0.push(0),
            Some(n) => {
                self.0.push(2);
                self.0.extend_from_slice(&n.to_le_bytes());
            }
        }
    }

    fn boolean(&mut self, name: &str, value: Option<bool>) {
        self.name(name);
        match value {
            None => self.0.push(0),
            Some(b) => self.0.extend_from_slice(&[3, u8::from(b)]),
        }
    }

    /// A list's header; its items' fields follow.
    fn list(&mut self, name: &str, count: usize) {
        self.name(name);
        self.0.push(5);
        self.0.extend_from_slice(&(count as u32).to_le_bytes());
    }

    fn digest(&mut self, name: &str, value: &[u8; 32]) {
        self.name(name);
        self.0.push(4);
        self.0.extend_from_slice(value);
    }
}
