//! The simulated device: a flash laid out by the partition table, a boot step that picks
//! the slot as ESP-IDF's bootloader does, and the engine's slot ports over that flash.

use ota_core::engine::health::BootSlot;
use ota_core::engine::{RunningImage, SlotError, Slots};
use ota_core::image::{ChipRevision, ImageInfo, ImageReader};
use ota_core::otadata::{BootTarget, ENTRY_SIZE, OtaState, Otadata, SECTOR_SIZE, Slot};
use ota_core::{Chip, Version};

use super::flash::{Flash, PowerCut, SECTOR};
use super::layout::{Extent, Layout, TABLE_OFFSET};

/// The simulated board's chip: an ESP32-S3 of revision v0.2, with an eFuse block of
/// revision v0.0 (the one the test kit's images declare as their maximum).
pub const CHIP: Chip = Chip::Esp32S3;
pub const CHIP_REVISION: ChipRevision = ChipRevision(2);
pub const EFUSE_BLOCK_REVISION: ChipRevision = ChipRevision(0);

/// Why the device did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    #[error("no partition holds a bootable image")]
    NothingBootable,
    #[error("otadata: {0}")]
    Otadata(String),
    #[error(transparent)]
    PowerCut(#[from] PowerCut),
}

/// What runs after a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    pub target: BootTarget,
    pub version: Version,
    pub secure_version: u32,
    pub chip: Chip,
    /// The partition otadata chose held no valid image, and another one was started.
    pub fell_back: bool,
}

/// A device: its flash (which survives restarts) and the layout it was built with.
#[derive(Debug, Clone)]
pub struct Device {
    pub flash: Flash,
    pub layout: Layout,
}

impl Device {
    /// A freshly flashed device: table at 0x8000, blank otadata, and the given images in
    /// the factory partition and/or ota_0.
    pub fn provision(
        layout: Layout,
        factory: Option<&[u8]>,
        ota_0: Option<&[u8]>,
    ) -> Result<Device, String> {
        let mut flash = Flash::new(layout.flash_size);
        let power = |e: PowerCut| e.to_string();
        flash.write(TABLE_OFFSET, &layout.table).map_err(power)?;
        for (image, extent) in [
            (factory, layout.factory),
            (ota_0, layout.slots.first().copied()),
        ] {
            if let Some(image) = image {
                let extent = extent.ok_or("no partition for that image")?;
                if image.len() > extent.size {
                    return Err(format!(
                        "a {} byte image does not fit {:#x} bytes",
                        image.len(),
                        extent.size
                    ));
                }
                flash.write(extent.offset, image).map_err(power)?;
            }
        }
        Ok(Device { flash, layout })
    }

    fn otadata(&self) -> Otadata {
        let bytes = self
            .flash
            .read(self.layout.otadata.offset, self.layout.otadata.size);
        Otadata::from_bytes(&bytes).unwrap_or_else(|_| Otadata::blank())
    }

    /// Writes the sectors of `new` that differ from what the flash holds, one sector at
    /// a time as ESP-IDF does: erase, then program the entry.
    fn store_otadata(&mut self, new: &Otadata) -> Result<(), PowerCut> {
        let old = self.otadata().to_bytes();
        let new = new.to_bytes();
        for sector in 0..2 {
            let range = sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE;
            if old[range.clone()] != new[range.clone()] {
                let at = self.layout.otadata.offset + range.start;
                self.flash.erase(at, SECTOR_SIZE)?;
                self.flash
                    .write(at, &new[range.start..range.start + ENTRY_SIZE])?;
            }
        }
        Ok(())
    }

    fn has_factory(&self) -> bool {
        self.layout.factory.is_some()
    }

    fn extent(&self, target: BootTarget) -> Option<Extent> {
        match target {
            BootTarget::Factory => self.layout.factory,
            BootTarget::Ota(slot) => self.layout.slots.get(usize::from(slot.0)).copied(),
        }
    }

    /// The image in a partition, if ESP-IDF's loader would take it: well formed, for
    /// this chip and its revision, and within every rule of the loader (ota-core's
    /// reader applies them all), so the simulator boots what the chip boots.
    pub fn image_in(&self, target: BootTarget) -> Option<ImageInfo> {
        let extent = self.extent(target)?;
        let mut reader = ImageReader::new()
            .expect_chip(CHIP)
            .expect_chip_revision(CHIP_REVISION)
            .expect_efuse_block_revision(EFUSE_BLOCK_REVISION)
            .expect_partition(extent.size as u64);
        for at in (extent.offset..extent.offset + extent.size).step_by(SECTOR) {
            let len = SECTOR.min(extent.offset + extent.size - at);
            reader.feed_partial(&self.flash.read(at, len)).ok()?;
            if reader.is_complete() {
                return reader.finish().ok();
            }
        }
        None
    }

    /// Starts the device the way ESP-IDF's bootloader does with rollback enabled: the
    /// otadata decides (rewriting it when states change), and a partition whose image
    /// does not verify is skipped for the next one that does.
    pub fn boot(&mut self) -> Result<Booted, BootError> {
        let mut otadata = self.otadata();
        let slot_count = self.layout.slot_count();
        let boot = otadata
            .boot(slot_count, self.has_factory())
            .map_err(|e| BootError::Otadata(e.to_string()))?;
        if boot.otadata_changed() {
            self.store_otadata(&otadata)?;
        }
        for target in self.boot_order(boot.target) {
            if let Some(info) = self.image_in(target) {
                let version = info
                    .descriptor
                    .version
                    .as_str()
                    .and_then(|v| v.parse().ok());
                if let Some(version) = version {
                    return Ok(Booted {
                        target,
                        version,
                        secure_version: info.descriptor.secure_version,
                        chip: info.header.chip,
                        fell_back: target != boot.target,
                    });
                }
            }
        }
        Err(BootError::NothingBootable)
    }

    /// `bootloader_utility_load_boot_image`'s order: the chosen partition, then down
    /// through the lower OTA slots to factory, then up through the higher ones.
    fn boot_order(&self, chosen: BootTarget) -> Vec<BootTarget> {
        let count = self.layout.slot_count();
        let factory = self.layout.factory.map(|_| BootTarget::Factory);
        let (below, above): (Vec<u8>, Vec<u8>) = match chosen {
            BootTarget::Factory => (Vec::new(), (0..count).collect()),
            BootTarget::Ota(slot) => ((0..slot.0).rev().collect(), (slot.0 + 1..count).collect()),
        };
        let ota = |i: u8| BootTarget::Ota(Slot(i));
        std::iter::once(chosen)
            .chain(below.into_iter().map(ota))
            .chain(factory.filter(|f| *f != chosen))
            .chain(above.into_iter().map(ota))
            .collect()
    }

    /// The engine's view of the slots while `running` runs.
    pub fn slots(&mut self, running: BootTarget) -> SimSlots<'_> {
        SimSlots {
            device: self,
            running,
            target: None,
        }
    }
}

/// [`Slots`] and [`BootSlot`] over the simulated flash.
#[derive(Debug)]
pub struct SimSlots<'d> {
    device: &'d mut Device,
    running: BootTarget,
    target: Option<(Slot, Extent)>,
}

fn cut(e: PowerCut) -> SlotError {
    SlotError(e.to_string())
}

impl SimSlots<'_> {
    /// `esp_ota_get_next_update_partition`: the OTA slot after the running one.
    fn next_slot(&self) -> Result<Slot, SlotError> {
        let count = self.device.layout.slot_count();
        if count == 0 {
            return Err(SlotError("no OTA slots".to_owned()));
        }
        Ok(match self.running {
            BootTarget::Factory => Slot(0),
            BootTarget::Ota(slot) => Slot((slot.0 + 1) % count),
        })
    }
}

impl Slots for SimSlots<'_> {
    fn begin(&mut self, size: u64) -> Result<(), SlotError> {
        // esp_ota_begin refuses too (ESP_ERR_OTA_ROLLBACK_INVALID_STATE): an update now
        // would erase the image a failed health check must fall back to.
        if self.pending_verify() {
            return Err(SlotError(
                "the running image is still on probation: confirm it first".to_owned(),
            ));
        }
        let slot = self.next_slot()?;
        let extent = self.device.layout.slot(slot);
        if size > extent.size as u64 {
            return Err(SlotError(format!(
                "{size} bytes do not fit {slot} ({:#x} bytes)",
                extent.size
            )));
        }
        // esp_ota_begin forgets a slot that otadata may still point at as a fallback.
        let mut otadata = self.device.otadata();
        if otadata
            .invalidate_inactive(self.running, self.device.layout.slot_count())
            .is_some()
        {
            self.device.store_otadata(&otadata).map_err(cut)?;
        }
        let erase = (size as usize).div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        self.device.flash.erase(extent.offset, erase).map_err(cut)?;
        self.target = Some((slot, extent));
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SlotError> {
        let (_, extent) = self
            .target
            .ok_or_else(|| SlotError("write before begin".to_owned()))?;
        if offset as usize + data.len() > extent.size {
            return Err(SlotError("write past the end of the slot".to_owned()));
        }
        self.device
            .flash
            .write(extent.offset + offset as usize, data)
            .map_err(cut)
    }

    fn abort(&mut self) {
        self.target = None;
    }

    fn set_boot(&mut self) -> Result<(), SlotError> {
        let (slot, _) = self
            .target
            .ok_or_else(|| SlotError("set_boot before begin".to_owned()))?;
        let mut otadata = self.device.otadata();
        otadata
            .set_boot(slot, self.device.layout.slot_count())
            .map_err(|e| SlotError(e.to_string()))?;
        self.device.store_otadata(&otadata).map_err(cut)
    }

    fn running_image(&mut self) -> Result<RunningImage, SlotError> {
        let info = self
            .device
            .image_in(self.running)
            .ok_or_else(|| SlotError(format!("{:?} holds no bootable image", self.running)))?;
        RunningImage::of(&info)
    }

    fn read_running(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SlotError> {
        let extent = self
            .device
            .extent(self.running)
            .ok_or_else(|| SlotError(format!("no partition for {:?}", self.running)))?;
        let inside = usize::try_from(offset)
            .ok()
            .filter(|&at| at.saturating_add(buf.len()) <= extent.size)
            .ok_or_else(|| SlotError(format!("read at {offset} past the running slot")))?;
        buf.copy_from_slice(&self.device.flash.read(extent.offset + inside, buf.len()));
        Ok(())
    }
}

impl BootSlot for SimSlots<'_> {
    fn pending_verify(&self) -> bool {
        let otadata = self.device.otadata();
        otadata.running_state(self.running, self.device.layout.slot_count())
            == Some(OtaState::PendingVerify)
    }

    fn mark_valid(&mut self) -> Result<(), SlotError> {
        let mut otadata = self.device.otadata();
        otadata
            .mark_valid(self.device.layout.slot_count())
            .map_err(|e| SlotError(e.to_string()))?;
        self.device.store_otadata(&otadata).map_err(cut)
    }

    fn mark_invalid_and_reboot(&mut self) -> Result<(), SlotError> {
        let mut otadata = self.device.otadata();
        let has_factory = self.device.has_factory();
        otadata
            .mark_invalid(self.device.layout.slot_count(), has_factory)
            .map_err(|e| SlotError(e.to_string()))?;
        self.device.store_otadata(&otadata).map_err(cut)
    }
}
