//! Turning a firmware ELF into the app image an OTA slot takes, with espflash, as `release` will.

use ota_core::Chip;

use crate::guard::{Panicked, catch_panic};
use crate::units::FlashSize;

/// Why an ELF could not become an app image.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("espflash cannot make images for {0}")]
    UnsupportedChip(Chip),
    #[error("cannot make an app image from {what}: {message}")]
    Espflash { what: String, message: String },
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

/// Makes the app image for `chip` from `elf`, with the flash size written into its header.
/// `what` names the ELF in errors.
pub fn app_image(
    elf: &[u8],
    chip: Chip,
    flash: FlashSize,
    what: &str,
) -> Result<Vec<u8>, ElfError> {
    use espflash::flasher::{FlashData, FlashSettings};
    use espflash::image_format::idf::IdfBootloaderFormat;

    let target =
        espflash::target::Chip::try_from(chip.id()).map_err(|_| ElfError::UnsupportedChip(chip))?;
    let flash_data = FlashData::new(
        FlashSettings::new(None, Some(flash.to_espflash()), None),
        0,
        None,
        target,
        target.default_xtal_frequency(),
    );
    let elf = elf.to_vec();
    let made = catch_panic(what, move || -> Result<Vec<u8>, String> {
        // No partition table: the image bytes do not depend on it, and the slot sizing
        // is judged by our own rules, with headroom, not by espflash's bare fit test.
        let format = IdfBootloaderFormat::new(&elf, &flash_data, None, None, None, None)
            .map_err(|e| e.to_string())?;
        let mut segments = format.ota_segments();
        match (segments.next(), segments.next()) {
            (Some(image), None) => Ok(image.data().to_vec()),
            _ => Err("espflash returned other than one OTA segment".to_owned()),
        }
    })?;
    made.map_err(|message| ElfError::Espflash {
        what: what.to_owned(),
        message,
    })
}
