//! The 24-byte `esp_image_header_t` that opens every ESP app image.

use core::fmt;

use crate::Chip;

/// The first byte of every ESP image.
pub const IMAGE_MAGIC: u8 = 0xE9;
/// Size of `esp_image_header_t` (the common header plus the extended header).
pub const HEADER_LEN: usize = 24;
/// ESP-IDF's `ESP_IMAGE_MAX_SEGMENTS`: the bootloader refuses images with more.
pub const MAX_SEGMENTS: usize = 16;

/// SPI flash read mode (`spi_mode`, byte 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashMode {
    Qio,
    Qout,
    Dio,
    Dout,
    FastRead,
    SlowRead,
    Unknown(u8),
}

impl FlashMode {
    pub fn from_byte(byte: u8) -> FlashMode {
        match byte {
            0 => FlashMode::Qio,
            1 => FlashMode::Qout,
            2 => FlashMode::Dio,
            3 => FlashMode::Dout,
            4 => FlashMode::FastRead,
            5 => FlashMode::SlowRead,
            other => FlashMode::Unknown(other),
        }
    }
}

impl fmt::Display for FlashMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashMode::Qio => f.write_str("QIO"),
            FlashMode::Qout => f.write_str("QOUT"),
            FlashMode::Dio => f.write_str("DIO"),
            FlashMode::Dout => f.write_str("DOUT"),
            FlashMode::FastRead => f.write_str("FAST_READ"),
            FlashMode::SlowRead => f.write_str("SLOW_READ"),
            FlashMode::Unknown(byte) => write!(f, "unknown ({byte:#04x})"),
        }
    }
}

/// The flash chip size the image was built for (high nibble of byte 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashSizeCode(pub u8);

impl FlashSizeCode {
    /// The size in bytes: 1 MB for code 0, doubling per step up to 128 MB.
    pub fn bytes(self) -> Option<u32> {
        (self.0 <= 7).then(|| (1u32 << 20) << self.0)
    }
}

impl fmt::Display for FlashSizeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bytes() {
            Some(bytes) => write!(f, "{}MB", bytes >> 20),
            None => write!(f, "unknown ({:#x})", self.0),
        }
    }
}

/// The SPI flash clock (low nibble of byte 3). The encoding is chip-specific; this one
/// is that of the ESP32, ESP32-S2, ESP32-S3 and ESP32-C3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashFreqCode(pub u8);

impl FlashFreqCode {
    pub fn megahertz(self) -> Option<u32> {
        match self.0 {
            0x0 => Some(40),
            0x1 => Some(26),
            0x2 => Some(20),
            0xF => Some(80),
            _ => None,
        }
    }
}

impl fmt::Display for FlashFreqCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.megahertz() {
            Some(mhz) => write!(f, "{mhz}MHz"),
            None => write!(f, "code {:#x}", self.0),
        }
    }
}

/// A chip revision in ESP-IDF's `*_chip_rev_full` encoding, `major * 100 + minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChipRevision(pub u16);

impl fmt::Display for ChipRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.0 / 100, self.0 % 100)
    }
}

/// The chip revisions an image runs on, as `bootloader_common_check_chip_validity` judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChipRevisions {
    pub min: ChipRevision,
    /// `None`: no upper bound.
    pub max: Option<ChipRevision>,
}

impl ChipRevisions {
    pub fn contains(&self, revision: ChipRevision) -> bool {
        self.min <= revision && self.max.is_none_or(|max| revision <= max)
    }

    /// Whether no chip revision at all is inside.
    pub fn is_empty(&self) -> bool {
        self.max.is_some_and(|max| max < self.min)
    }
}

impl fmt::Display for ChipRevisions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(max) => write!(f, "{} to {max}", self.min),
            None => write!(f, "{} and later", self.min),
        }
    }
}

/// `esp_image_header_t`, every field named as in ESP-IDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Byte 1: number of segments that follow the header.
    pub segment_count: u8,
    /// Byte 2.
    pub spi_mode: FlashMode,
    /// Byte 3, high nibble.
    pub flash_size: FlashSizeCode,
    /// Byte 3, low nibble.
    pub flash_freq: FlashFreqCode,
    /// Bytes 4..8: the entry point address.
    pub entry_addr: u32,
    /// Byte 8: the SPI WP pin, 0xEE when unused.
    pub wp_pin: u8,
    /// Bytes 9..12: SPI pin drive strengths.
    pub spi_pin_drv: [u8; 3],
    /// Bytes 12..14.
    pub chip: Chip,
    /// Byte 14: the deprecated one-byte minimum chip revision.
    pub min_chip_rev: u8,
    /// Bytes 15..17: minimum chip revision as `major * 100 + minor`.
    pub min_chip_rev_full: u16,
    /// Bytes 17..19: maximum chip revision as `major * 100 + minor`.
    pub max_chip_rev_full: u16,
    /// Byte 23: whether a SHA-256 of the image follows the checksum.
    pub hash_appended: bool,
}

/// Why a header was refused; the reader adds the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderFault {
    Magic(u8),
    SegmentCount(u8),
    HashAppendedFlag(u8),
}

impl ImageHeader {
    /// The chip revisions the image runs on: from `min_chip_rev_full`, up to
    /// `max_chip_rev_full` unless that is not set (0 or 0xFFFF, ESP-IDF's `IS_MAX_REV_SET`).
    pub fn chip_revisions(&self) -> ChipRevisions {
        ChipRevisions {
            min: ChipRevision(self.min_chip_rev_full),
            max: (!matches!(self.max_chip_rev_full, 0 | 0xFFFF))
                .then_some(ChipRevision(self.max_chip_rev_full)),
        }
    }

    /// Reads the header from its 24 bytes.
    pub(crate) fn parse(raw: &[u8; HEADER_LEN]) -> Result<ImageHeader, (usize, HeaderFault)> {
        if raw[0] != IMAGE_MAGIC {
            return Err((0, HeaderFault::Magic(raw[0])));
        }
        let segment_count = raw[1];
        if segment_count == 0 || usize::from(segment_count) > MAX_SEGMENTS {
            return Err((1, HeaderFault::SegmentCount(segment_count)));
        }
        let hash_appended = match raw[23] {
            0 => false,
            1 => true,
            other => return Err((23, HeaderFault::HashAppendedFlag(other))),
        };
        Ok(ImageHeader {
            segment_count,
            spi_mode: FlashMode::from_byte(raw[2]),
            flash_size: FlashSizeCode(raw[3] >> 4),
            flash_freq: FlashFreqCode(raw[3] & 0x0F),
            entry_addr: u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]),
            wp_pin: raw[8],
            spi_pin_drv: [raw[9], raw[10], raw[11]],
            chip: Chip::from_id(u16::from_le_bytes([raw[12], raw[13]])),
            min_chip_rev: raw[14],
            min_chip_rev_full: u16::from_le_bytes([raw[15], raw[16]]),
            max_chip_rev_full: u16::from_le_bytes([raw[17], raw[18]]),
            hash_appended,
        })
    }
}
