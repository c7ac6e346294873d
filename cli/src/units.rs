//! Byte counts and flash sizes as types, parsed and shown the way firmware engineers write them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A number of bytes. `Display` gives `1.18 MiB`; `{:#}` adds the exact count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n < 1024 {
            write!(f, "{n} B")?;
        } else if n < 1 << 20 {
            write!(f, "{:.1} KiB", n as f64 / 1024.0)?;
        } else {
            write!(f, "{:.2} MiB", n as f64 / f64::from(1u32 << 20))?;
        }
        if f.alternate() && n >= 1024 {
            write!(f, " ({n} B)")?;
        }
        Ok(())
    }
}

/// The size of an SPI flash chip: a power of two from 1 MB to 128 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlashSize(u32);

impl FlashSize {
    pub fn from_bytes(bytes: u32) -> Result<FlashSize, BadFlashSize> {
        if bytes.is_power_of_two() && ((1 << 20)..=(128 << 20)).contains(&bytes) {
            Ok(FlashSize(bytes))
        } else {
            Err(BadFlashSize(format!("{bytes:#x} bytes")))
        }
    }

    pub fn bytes(self) -> u32 {
        self.0
    }

    /// The same size as espflash names it.
    pub fn to_espflash(self) -> espflash::flasher::FlashSize {
        use espflash::flasher::FlashSize as E;
        match self.0 >> 20 {
            1 => E::_1Mb,
            2 => E::_2Mb,
            4 => E::_4Mb,
            8 => E::_8Mb,
            16 => E::_16Mb,
            32 => E::_32Mb,
            64 => E::_64Mb,
            _ => E::_128Mb,
        }
    }
}

impl fmt::Display for FlashSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}MB", self.0 >> 20)
    }
}

impl Serialize for FlashSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Text that is not a flash size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a flash size: expected a power of two from 1MB to 128MB, such as 4MB, 8MB or 0x800000"
)]
pub struct BadFlashSize(String);

impl FromStr for FlashSize {
    type Err = BadFlashSize;

    /// Accepts `8MB`, `8M`, `8MiB`, `8mb`, `8388608` and `0x800000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFlashSize(s.to_owned());
        let text = s.trim();
        let lower = text.to_ascii_lowercase();
        let bytes = if let Some(hex) = lower.strip_prefix("0x") {
            u32::from_str_radix(hex, 16).map_err(|_| bad())?
        } else if let Some(mb) = ["mib", "mb", "m"]
            .iter()
            .find_map(|u| lower.strip_suffix(u))
        {
            let mb: u32 = mb.trim().parse().map_err(|_| bad())?;
            mb.checked_mul(1 << 20).ok_or_else(bad)?
        } else {
            lower.parse().map_err(|_| bad())?
        };
        FlashSize::from_bytes(bytes).map_err(|_| bad())
    }
}

impl<'de> serde::Deserialize<'de> for FlashSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_sizes_parse_in_every_common_spelling() {
        for text in ["8MB", "8M", "8MiB", "8mb", " 8 MB", "0x800000", "8388608"] {
            assert_eq!(
                text.parse::<FlashSize>().unwrap().bytes(),
                8 << 20,
                "{text}"
            );
        }
        for text in [
            "3MB",
            "0MB",
            "256MB",
            "512K",
            "eight",
            "",
            "0x",
            "99999999999MB",
        ] {
            assert!(text.parse::<FlashSize>().is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn bytes_display_in_binary_units() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(3 << 20).to_string(), "3.00 MiB");
        assert_eq!(format!("{:#}", Bytes(1 << 20)), "1.00 MiB (1048576 B)");
    }
}
