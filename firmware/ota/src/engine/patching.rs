//! A delta patch applied as it downloads: the running slot read where the patch points,
//! the new image written in order into the inactive slot through the same checks a
//! downloaded image passes ([`IntoSlot`]), so a patch changes how the bytes arrive and
//! never what is verified before the boot slot changes.

use alloc::format;
use alloc::string::{String, ToString};
use core::cell::RefCell;

use sha2::Digest as _;

use super::UpdateError;
use super::download::{IntoSlot, Sink};
use super::ports::{RunningImage, Slots};
use crate::delta::{Base, DeltaError, DeltaPatch};
use crate::manifest::Patch;

/// The patch `spec` from the running image `base`, turned into the new image.
pub(super) struct Patching<'a> {
    spec: &'a Patch,
    base: RunningImage,
    patch: DeltaPatch,
    /// The patch file's own SHA-256, checked against the manifest's before the result is.
    hasher: sha2::Sha256,
    out: IntoSlot<'a>,
}

impl<'a> Patching<'a> {
    pub(super) fn new(spec: &'a Patch, base: RunningImage, out: IntoSlot<'a>) -> Patching<'a> {
        Patching {
            spec,
            base,
            patch: DeltaPatch::new(base.digest),
            hasher: sha2::Sha256::new(),
            out,
        }
    }
}

impl Sink for Patching<'_> {
    fn begin(&mut self, slots: &mut dyn Slots) -> Result<(), UpdateError> {
        self.patch = DeltaPatch::new(self.base.digest);
        self.hasher = sha2::Sha256::new();
        self.out.begin(slots)
    }

    fn take(&mut self, slots: &mut dyn Slots, chunk: &[u8]) -> Result<(), UpdateError> {
        self.hasher.update(chunk);
        let patch = &mut self.patch;
        apply(
            slots,
            self.base,
            &mut self.out,
            &self.spec.file,
            |base, out| patch.feed(chunk, base, out),
        )
    }

    fn verify(&mut self, slots: &mut dyn Slots) -> Result<(), UpdateError> {
        let digest = crate::Sha256(core::mem::take(&mut self.hasher).finalize().into());
        if digest != self.spec.sha256 {
            return Err(UpdateError::Verify(format!(
                "the patch {} has SHA-256 {digest}, the manifest says {}",
                self.spec.file, self.spec.sha256
            )));
        }
        let patch = core::mem::replace(&mut self.patch, DeltaPatch::new(self.base.digest));
        apply(
            slots,
            self.base,
            &mut self.out,
            &self.spec.file,
            |base, out| patch.finish(base, out).map(|_| ()),
        )?;
        self.out.verify(slots)
    }
}

/// Runs `step` with the running slot as the patch's base and `out` as its output. Both
/// reach the one flash port, one call at a time. A flash error writing the new image
/// stays a flash error, not a fault of the patch.
fn apply(
    slots: &mut dyn Slots,
    base: RunningImage,
    out: &mut IntoSlot<'_>,
    file: &str,
    step: impl FnOnce(
        &mut dyn Base,
        &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), DeltaError>,
) -> Result<(), UpdateError> {
    let slots = RefCell::new(slots);
    let mut running = Running {
        slots: &slots,
        len: base.len,
    };
    let mut failed: Option<UpdateError> = None;
    let mut write = |bytes: &[u8]| {
        out.take(&mut **slots.borrow_mut(), bytes).map_err(|e| {
            let why = e.to_string();
            failed = Some(e);
            why
        })
    };
    let applied = step(&mut running, &mut write);
    match (applied, failed) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(write_error)) => Err(write_error),
        (Err(patch_error), None) => Err(UpdateError::Verify(format!(
            "the patch {file} does not apply: {patch_error}"
        ))),
    }
}

/// The running slot as the patch's base.
struct Running<'s, 'f> {
    slots: &'s RefCell<&'f mut dyn Slots>,
    len: u64,
}

impl Base for Running<'_, '_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.slots
            .borrow_mut()
            .read_running(offset, buf)
            .map_err(|e| e.0)
    }
}
