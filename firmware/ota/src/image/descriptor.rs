//! `esp_app_desc_t`: the app's own description of itself, at the start of its first segment.
//!
//! Its `version` is what a device reports as running, so it must equal the manifest's
//! version or the fleet sees an "update" forever.

use core::fmt;

use super::header::{ChipRevision, ChipRevisions};

/// Magic word that opens `esp_app_desc_t`.
pub const DESCRIPTOR_MAGIC: u32 = 0xABCD_5432;
/// Size of `esp_app_desc_t`.
pub const DESCRIPTOR_LEN: usize = 256;
/// File offset of the descriptor: after the 24-byte header and the first 8-byte segment header.
pub const DESCRIPTOR_OFFSET: u64 = 0x20;

/// A NUL-padded text field of fixed size, as C structs keep them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedStr<const N: usize>(pub [u8; N]);

impl<const N: usize> FixedStr<N> {
    /// The bytes up to the first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        &self.0[..end]
    }

    /// The text up to the first NUL, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }
}

impl<const N: usize> fmt::Display for FixedStr<N> {
    /// Shows the text, escaping bytes that are not printable ASCII.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(text) if !text.chars().any(char::is_control) => f.write_str(text),
            _ => self
                .as_bytes()
                .iter()
                .try_for_each(|b| write!(f, "{}", core::ascii::escape_default(*b))),
        }
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// `esp_app_desc_t`, every field named as in ESP-IDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppDescriptor {
    /// +4: the anti-rollback counter; eFuses refuse images below the burnt value.
    pub secure_version: u32,
    /// +16.
    pub version: FixedStr<32>,
    /// +48.
    pub project_name: FixedStr<32>,
    /// +80: build time.
    pub time: FixedStr<16>,
    /// +96: build date.
    pub date: FixedStr<16>,
    /// +112: the ESP-IDF version the app was built with.
    pub idf_ver: FixedStr<32>,
    /// +144: SHA-256 of the ELF file the image was made from.
    pub app_elf_sha256: [u8; 32],
    /// +176: minimum eFuse block revision, `major * 100 + minor`.
    pub min_efuse_blk_rev_full: u16,
    /// +178: maximum eFuse block revision, `major * 100 + minor`.
    pub max_efuse_blk_rev_full: u16,
    /// +180: log2 of the MMU page size, or 0 when the image does not say.
    pub mmu_page_size: u8,
}

impl AppDescriptor {
    /// The eFuse block revisions the app runs on (`bootloader_common_check_efuse_blk_validity`):
    /// unlike the header's chip revisions, only 0xFFFF means no upper bound.
    pub fn efuse_block_revisions(&self) -> ChipRevisions {
        ChipRevisions {
            min: ChipRevision(self.min_efuse_blk_rev_full),
            max: (self.max_efuse_blk_rev_full != 0xFFFF)
                .then_some(ChipRevision(self.max_efuse_blk_rev_full)),
        }
    }

    /// Reads the descriptor from its 256 bytes; `Err` carries the magic word found instead.
    pub(crate) fn parse(raw: &[u8; DESCRIPTOR_LEN]) -> Result<AppDescriptor, u32> {
        let u32_at =
            |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let u16_at = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let magic = u32_at(0);
        if magic != DESCRIPTOR_MAGIC {
            return Err(magic);
        }
        Ok(AppDescriptor {
            secure_version: u32_at(4),
            version: FixedStr(field(raw, 16)),
            project_name: FixedStr(field(raw, 48)),
            time: FixedStr(field(raw, 80)),
            date: FixedStr(field(raw, 96)),
            idf_ver: FixedStr(field(raw, 112)),
            app_elf_sha256: field(raw, 144),
            min_efuse_blk_rev_full: u16_at(176),
            max_efuse_blk_rev_full: u16_at(178),
            mmu_page_size: raw[180],
        })
    }
}

fn field<const N: usize>(raw: &[u8; DESCRIPTOR_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&raw[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn fixed_str_stops_at_nul_and_escapes_control_bytes() {
        let mut raw = [0u8; 8];
        raw[..5].copy_from_slice(b"2.9.0");
        assert_eq!(FixedStr(raw).as_str(), Some("2.9.0"));
        raw[..3].copy_from_slice(b"a\nb");
        assert_eq!(format!("{}", FixedStr(raw)), "a\\nb.0");
        let full = FixedStr(*b"12345678");
        assert_eq!(full.as_str(), Some("12345678"));
        let bad = FixedStr([0xFF, b'x', 0, 0]);
        assert_eq!(bad.as_str(), None);
        assert_eq!(format!("{bad}"), "\\xffx");
    }
}
