//! A chip's address map as ESP-IDF's image loader judges segments by it: which load
//! addresses are mapped from flash, which RAM a segment may be loaded into, and which RAM
//! the second-stage bootloader itself occupies while it loads.
//!
//! The facts are those of the pinned ESP-IDF release (v5.5: `soc.h` of each chip,
//! `esp_image_format.c`, the bootloader's link script); a chip without a map here gets
//! no address rules, only the format's.

use crate::Chip;

/// The MMU maps flash in pages of this size: a mapped segment's file offset and load
/// address must agree modulo it (`SPI_FLASH_MMU_PAGE_SIZE`).
pub const MMU_PAGE: u32 = 0x1_0000;

/// Addresses below this are never loaded: esptool's padding segments sit at 0
/// (`should_load`'s "reserved for non-loaded addresses").
const FIRST_LOADED: u32 = 0x1000_0000;

/// A half-open address range with the name `soc.h` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub name: &'static str,
    pub start: u32,
    pub end: u32,
}

impl Region {
    const fn new(name: &'static str, start: u32, end: u32) -> Region {
        Region { name, start, end }
    }

    pub fn contains(&self, addr: u32) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// Whether `[start, end)` and this region share a byte.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start < u64::from(self.end) && u64::from(self.start) < end
    }
}

/// How the bootloader treats a segment, by its load address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Mapped from flash through the MMU (`should_map`): IROM or DROM.
    Mapped,
    /// Copied into RAM (`should_load`).
    Loaded,
    /// Neither: padding, never read.
    Skipped,
}

/// What the loader knows about one chip's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMap {
    /// Flash seen through the MMU cache (`SOC_IROM_*`, `SOC_DROM_*`).
    pub mapped: &'static [Region],
    /// Where a loaded segment may go, each segment wholly inside one
    /// (`verify_load_addresses`: DRAM, IRAM, RTC fast and slow memory).
    pub ram: &'static [Region],
    /// RAM the second-stage bootloader runs from while it loads the app: its loader
    /// code, its data and its stack, in both the data and the instruction view of the
    /// shared SRAM. A segment loaded there would overwrite the loader mid-load.
    pub bootloader: &'static [Region],
}

/// ESP32-S3, as ESP-IDF v5.5's `soc.h` and its bootloader lay it out.
pub const ESP32S3: MemoryMap = MemoryMap {
    mapped: &[
        Region::new("IROM", 0x4200_0000, 0x4400_0000),
        Region::new("DROM", 0x3C00_0000, 0x3E00_0000),
    ],
    ram: &[
        Region::new("DRAM", 0x3FC8_8000, 0x3FD0_0000),
        Region::new("IRAM", 0x4037_0000, 0x403E_0000),
        Region::new("RTC fast memory", 0x600F_E000, 0x6010_0000),
        Region::new("RTC slow memory", 0x5000_0000, 0x5000_2000),
    ],
    // The loader's code starts at 0x403CC700 (the `load:0x403cc700` line of every v5
    // boot log), its data follows, and its stack reaches up to the ROM stack's top
    // (SOC_ROM_STACK_START, 0x3FCEBF10). IRAM and DRAM alias one SRAM 0x6F0000 apart.
    bootloader: &[
        Region::new("the bootloader's RAM", 0x3FCD_C700, 0x3FCE_BF10),
        Region::new("the bootloader's RAM", 0x403C_C700, 0x403D_BF10),
    ],
};

impl MemoryMap {
    /// The map of `chip`, when this crate knows it.
    pub fn of(chip: Chip) -> Option<&'static MemoryMap> {
        match chip {
            Chip::Esp32S3 => Some(&ESP32S3),
            _ => None,
        }
    }

    /// `should_map` / `should_load` of `esp_image_format.c`.
    pub fn placement(&self, load_addr: u32) -> Placement {
        if self.mapped.iter().any(|r| r.contains(load_addr)) {
            Placement::Mapped
        } else if load_addr < FIRST_LOADED {
            Placement::Skipped
        } else {
            Placement::Loaded
        }
    }

    /// The RAM region a loaded segment of `len` bytes at `load_addr` lies wholly inside.
    pub fn ram_holding(&self, load_addr: u32, len: u32) -> Option<&'static Region> {
        let end = u64::from(load_addr) + u64::from(len);
        self.ram
            .iter()
            .find(|r| r.contains(load_addr) && end <= u64::from(r.end))
    }

    /// The part of the bootloader's own RAM that a loaded segment would overwrite.
    pub fn bootloader_overlap(&self, load_addr: u32, len: u32) -> Option<&'static Region> {
        let end = u64::from(load_addr) + u64::from(len);
        self.bootloader
            .iter()
            .find(|r| r.overlaps(u64::from(load_addr), end))
    }
}
