//! The 64-byte header ESP-IDF's `esp_delta_ota` puts before a detools patch, every field
//! named where it sits; it says which running image the patch applies to.

use crate::Sha256;

/// Offset 0, little-endian: `esp_delta_ota`'s magic.
pub const MAGIC: u32 = 0xfccd_de10;
/// The header's whole length; the detools patch starts here.
pub const LEN: usize = 64;
/// Offset 4: the base image's appended digest (the SHA-256 of the image file without its
/// last 32 bytes, which is what `esp_partition_get_sha256()` gives for the running slot).
const DIGEST_AT: usize = 4;
/// Offset 36 to 63: reserved, zero.
const RESERVED_AT: usize = DIGEST_AT + 32;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The image the patch applies to, by its appended digest.
    pub base: Sha256,
}

/// Why 64 bytes are not an `esp_delta_ota` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("byte 0: magic 0x{0:08x}, not esp_delta_ota's 0x{MAGIC:08x}")]
    Magic(u32),
    #[error("byte {0}: the reserved bytes of the header are not zero")]
    Reserved(usize),
}

impl Header {
    pub fn parse(bytes: &[u8; LEN]) -> Result<Header, HeaderError> {
        let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic != MAGIC {
            return Err(HeaderError::Magic(magic));
        }
        if let Some(at) = bytes[RESERVED_AT..].iter().position(|&b| b != 0) {
            return Err(HeaderError::Reserved(RESERVED_AT + at));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[DIGEST_AT..RESERVED_AT]);
        Ok(Header {
            base: Sha256(digest),
        })
    }

    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut bytes = [0u8; LEN];
        bytes[..DIGEST_AT].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[DIGEST_AT..RESERVED_AT].copy_from_slice(self.base.as_bytes());
        bytes
    }
}
