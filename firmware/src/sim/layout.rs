//! Where things sit in the simulated flash, read from the same partitions.csv the
//! firmware is built with.

use esp_idf_part::{AppType, DataType, PartitionTable, SubType, Type};
use ota_core::otadata::{OTADATA_SIZE, Slot};

/// The partition table's place in flash, where the bootloader reads it.
pub const TABLE_OFFSET: usize = 0x8000;

/// One partition's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: usize,
    pub size: usize,
}

/// The partitions the OTA logic touches.
#[derive(Debug, Clone)]
pub struct Layout {
    pub flash_size: usize,
    /// The binary table, as flashed at [`TABLE_OFFSET`].
    pub table: Vec<u8>,
    pub otadata: Extent,
    pub factory: Option<Extent>,
    /// `ota_0`, `ota_1`, ... in slot order.
    pub slots: Vec<Extent>,
}

impl Layout {
    pub fn from_csv(csv: &str, flash_size: usize) -> Result<Layout, String> {
        let table = PartitionTable::try_from_str(csv).map_err(|e| e.to_string())?;
        let extent = |p: &esp_idf_part::Partition| Extent {
            offset: p.offset() as usize,
            size: p.size() as usize,
        };
        let otadata = table
            .partitions()
            .iter()
            .find(|p| p.ty() == Type::Data && p.subtype() == SubType::Data(DataType::Ota))
            .map(extent)
            .ok_or("the table has no otadata partition")?;
        if otadata.size != OTADATA_SIZE {
            return Err(format!(
                "otadata is {:#x} bytes, not {OTADATA_SIZE:#x}",
                otadata.size
            ));
        }
        let factory = table
            .partitions()
            .iter()
            .find(|p| p.ty() == Type::App && p.subtype() == SubType::App(AppType::Factory))
            .map(extent);
        let mut slots: Vec<(u8, Extent)> = table
            .partitions()
            .iter()
            .filter_map(|p| match p.subtype() {
                SubType::App(app)
                    if p.ty() == Type::App && (0x10..=0x1F).contains(&(app as u8)) =>
                {
                    Some((app as u8 - 0x10, extent(p)))
                }
                _ => None,
            })
            .collect();
        slots.sort_by_key(|(index, _)| *index);
        if slots
            .iter()
            .enumerate()
            .any(|(i, (index, _))| usize::from(*index) != i)
        {
            return Err("OTA slots must be ota_0, ota_1, ... without gaps".to_owned());
        }
        let layout = Layout {
            flash_size,
            table: table.to_bin().map_err(|e| e.to_string())?,
            otadata,
            factory,
            slots: slots.into_iter().map(|(_, e)| e).collect(),
        };
        let end = |e: &Extent| e.offset + e.size;
        if layout
            .slots
            .iter()
            .chain(&layout.factory)
            .chain([&layout.otadata])
            .any(|e| end(e) > flash_size)
        {
            return Err(format!(
                "a partition ends past the {flash_size:#x}-byte flash"
            ));
        }
        Ok(layout)
    }

    pub fn slot_count(&self) -> u8 {
        self.slots.len() as u8
    }

    pub fn slot(&self, slot: Slot) -> Extent {
        self.slots[usize::from(slot.0)]
    }
}
