//! Espressif chip identities, as the image header's `chip_id` field encodes them.

use core::fmt;
use core::str::FromStr;

/// A chip family, identified by the `chip_id` of ESP-IDF's `esp_image_header_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chip {
    Esp32,
    Esp32S2,
    Esp32C3,
    Esp32S3,
    Esp32C2,
    Esp32C6,
    Esp32H2,
    Esp32P4,
    Esp32C61,
    Esp32C5,
    /// An id this crate does not name; kept so that it can be reported.
    Unknown(u16),
}

impl Chip {
    const NAMED: [(Chip, u16, &'static str); 10] = [
        (Chip::Esp32, 0x0000, "esp32"),
        (Chip::Esp32S2, 0x0002, "esp32s2"),
        (Chip::Esp32C3, 0x0005, "esp32c3"),
        (Chip::Esp32S3, 0x0009, "esp32s3"),
        (Chip::Esp32C2, 0x000C, "esp32c2"),
        (Chip::Esp32C6, 0x000D, "esp32c6"),
        (Chip::Esp32H2, 0x0010, "esp32h2"),
        (Chip::Esp32P4, 0x0012, "esp32p4"),
        (Chip::Esp32C61, 0x0014, "esp32c61"),
        (Chip::Esp32C5, 0x0017, "esp32c5"),
    ];

    /// The chip for an image header's `chip_id`.
    pub fn from_id(id: u16) -> Chip {
        Self::NAMED
            .iter()
            .find(|(_, known, _)| *known == id)
            .map_or(Chip::Unknown(id), |(chip, _, _)| *chip)
    }

    /// The image header's `chip_id` for this chip.
    pub fn id(self) -> u16 {
        match self {
            Chip::Unknown(id) => id,
            named => Self::NAMED
                .iter()
                .find(|(chip, _, _)| *chip == named)
                .map_or(0xFFFF, |(_, id, _)| *id),
        }
    }

    /// The lower-case name ESP-IDF and esptool use (`esp32s3`), if the chip is named.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(chip, _, _)| *chip == self)
            .map(|(_, _, name)| *name)
    }
}

impl fmt::Display for Chip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown chip id {:#06x}", self.id()),
        }
    }
}

/// The name given is not a chip this crate knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown chip name (expected one of esp32, esp32s2, esp32s3, esp32c2, esp32c3, esp32c5, esp32c6, esp32c61, esp32h2, esp32p4)"
)]
pub struct UnknownChip;

impl FromStr for Chip {
    type Err = UnknownChip;

    /// Accepts `esp32s3`, `ESP32-S3` and `esp32_s3` alike.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut normalized = [0u8; 16];
        let mut len = 0;
        for byte in s.bytes().filter(|b| !matches!(b, b'-' | b'_')) {
            let slot = normalized.get_mut(len).ok_or(UnknownChip)?;
            *slot = byte.to_ascii_lowercase();
            len += 1;
        }
        Self::NAMED
            .iter()
            .find(|(_, _, name)| name.as_bytes() == &normalized[..len])
            .map(|(chip, _, _)| *chip)
            .ok_or(UnknownChip)
    }
}

impl serde::Serialize for Chip {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Chip {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_s3_is_nine() {
        assert_eq!(Chip::Esp32S3.id(), 9);
        for id in 0..=0x20u16 {
            assert_eq!(Chip::from_id(id).id(), id);
        }
        assert_eq!(Chip::from_id(0x99), Chip::Unknown(0x99));
    }

    #[test]
    fn names_parse_in_common_spellings() {
        assert_eq!("esp32s3".parse(), Ok(Chip::Esp32S3));
        assert_eq!("ESP32-S3".parse(), Ok(Chip::Esp32S3));
        assert_eq!("esp32".parse(), Ok(Chip::Esp32));
        assert_eq!("esp8266".parse::<Chip>(), Err(UnknownChip));
        assert_eq!("esp32s3esp32s3esp32s3".parse::<Chip>(), Err(UnknownChip));
    }
}
