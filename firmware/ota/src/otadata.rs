//! otadata as ESP-IDF reads and writes it, so the simulator boots and rolls back like a device.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// One flash sector; each of the two otadata copies owns one so that erasing one never
/// touches the other.
pub const SECTOR_SIZE: usize = 0x1000;
/// The whole otadata partition: two sectors.
pub const OTADATA_SIZE: usize = 2 * SECTOR_SIZE;
/// `sizeof(esp_ota_select_entry_t)`.
pub const ENTRY_SIZE: usize = 32;
/// ESP-IDF's `MAX_OTA_SLOTS`: subtypes ota_0 to ota_15.
pub const MAX_SLOTS: u8 = 16;

/// The CRC an entry stores for `seq`: `bootloader_common_ota_select_crc`, i.e.
/// `esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4)`, which is zlib's `crc32(seq_le, 0xFFFFFFFF)`.
pub fn seq_crc(seq: u32) -> u32 {
    crc32_le(u32::MAX, &seq.to_le_bytes())
}

/// CRC-32 (reflected, polynomial 0xEDB88320) continuing from `crc` the way zlib and the
/// ESP ROM do: `crc` is a previous *result*, so it is inverted going in and coming out.
/// Bitwise rather than table-driven: it only ever sees 4 bytes.
fn crc32_le(crc: u32, data: &[u8]) -> u32 {
    let mut reg = !crc;
    for &byte in data {
        reg ^= u32::from(byte);
        for _ in 0..8 {
            reg = if reg & 1 == 1 {
                (reg >> 1) ^ 0xEDB8_8320
            } else {
                reg >> 1
            };
        }
    }
    !reg
}

/// `esp_ota_img_states_t`. The bootloader only refuses `Invalid` and `Aborted`; any other
/// value, including ones ESP-IDF never writes, boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OtaState {
    /// Set by `esp_ota_set_boot_partition`; the bootloader turns it into `PendingVerify`.
    New,
    /// Booted once and not yet confirmed; found again at boot it becomes `Aborted`.
    PendingVerify,
    /// Confirmed by the app (`esp_ota_mark_app_valid_cancel_rollback`).
    Valid,
    /// Rejected by the app (`esp_ota_mark_app_invalid_rollback_and_reboot`).
    Invalid,
    /// Booted but never confirmed: rolled back by the bootloader.
    Aborted,
    /// 0xFFFFFFFF, what an erased sector reads as; boots without limits.
    Undefined,
    /// Any other value. `from_u32` never puts a named state's value here.
    Unknown(u32),
}

impl OtaState {
    pub const fn from_u32(value: u32) -> OtaState {
        match value {
            0 => OtaState::New,
            1 => OtaState::PendingVerify,
            2 => OtaState::Valid,
            3 => OtaState::Invalid,
            4 => OtaState::Aborted,
            u32::MAX => OtaState::Undefined,
            other => OtaState::Unknown(other),
        }
    }

    pub const fn to_u32(self) -> u32 {
        match self {
            OtaState::New => 0,
            OtaState::PendingVerify => 1,
            OtaState::Valid => 2,
            OtaState::Invalid => 3,
            OtaState::Aborted => 4,
            OtaState::Undefined => u32::MAX,
            OtaState::Unknown(value) => value,
        }
    }

    /// Whether the bootloader refuses an entry in this state (the state half of
    /// `bootloader_common_ota_select_invalid`).
    pub const fn is_rejected(self) -> bool {
        matches!(self, OtaState::Invalid | OtaState::Aborted)
    }
}

impl From<u32> for OtaState {
    fn from(value: u32) -> OtaState {
        OtaState::from_u32(value)
    }
}

impl From<OtaState> for u32 {
    fn from(state: OtaState) -> u32 {
        state.to_u32()
    }
}

impl fmt::Display for OtaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OtaState::New => f.write_str("new"),
            OtaState::PendingVerify => f.write_str("pending verify"),
            OtaState::Valid => f.write_str("valid"),
            OtaState::Invalid => f.write_str("invalid"),
            OtaState::Aborted => f.write_str("aborted"),
            OtaState::Undefined => f.write_str("undefined"),
            OtaState::Unknown(value) => write!(f, "unknown state {value:#010x}"),
        }
    }
}

/// An OTA app partition, `ota_N` (subtype 0x10 + N). Whether it exists depends on the
/// partition table, so operations take the slot count alongside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u8);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ota_{}", self.0)
    }
}

/// The app partition the bootloader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootTarget {
    Factory,
    Ota(Slot),
}

impl fmt::Display for BootTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootTarget::Factory => f.write_str("factory"),
            BootTarget::Ota(slot) => slot.fmt(f),
        }
    }
}

/// The slot an entry with `seq` selects: `(seq - 1) % slot_count`, with ESP-IDF's unsigned
/// wrap-around for seq 0. `None` when there are no slots.
fn slot_of(seq: u32, slot_count: u8) -> Option<Slot> {
    let index = seq.wrapping_sub(1).checked_rem(u32::from(slot_count))?;
    u8::try_from(index).ok().map(Slot)
}

/// A trusted entry: what the bootloader reads from a sector whose CRC matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OtaEntry {
    pub seq: u32,
    pub state: OtaState,
}

impl OtaEntry {
    pub const fn new(seq: u32, state: OtaState) -> OtaEntry {
        OtaEntry { seq, state }
    }

    /// The 32 bytes ESP-IDF writes for this entry: seq, `seq_label` left erased (0xFF, as
    /// `set_actual_ota_seq` leaves it), state, CRC of seq.
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        RawEntry::from(*self).to_bytes()
    }

    /// The entry in `bytes`, or `None` when the bootloader would ignore them: erased
    /// (`seq == 0xFFFFFFFF`) or a CRC that does not match (a torn or corrupted write).
    /// `Invalid` and `Aborted` entries decode: the app still reads them
    /// (`esp_ota_get_last_invalid_partition`).
    pub fn decode(bytes: &[u8; ENTRY_SIZE]) -> Option<OtaEntry> {
        RawEntry::from_bytes(bytes).entry()
    }

    /// The slot this entry selects among `slot_count`; `None` when there are none.
    pub fn slot(&self, slot_count: u8) -> Option<Slot> {
        slot_of(self.seq, slot_count)
    }
}

/// One sector's `esp_ota_select_entry_t` exactly as stored, whatever it holds: a bad CRC
/// and a non-erased `seq_label` must survive a rewrite, because ESP-IDF rewrites the
/// struct it read rather than a clean one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawEntry {
    pub seq: u32,
    pub seq_label: [u8; 20],
    pub state: OtaState,
    pub crc: u32,
}

impl RawEntry {
    /// An erased sector's entry: every byte 0xFF.
    pub const ERASED: RawEntry = RawEntry {
        seq: u32::MAX,
        seq_label: [0xFF; 20],
        state: OtaState::Undefined,
        crc: u32::MAX,
    };

    pub fn from_bytes(bytes: &[u8; ENTRY_SIZE]) -> RawEntry {
        let [
            s0,
            s1,
            s2,
            s3,
            seq_label @ ..,
            t0,
            t1,
            t2,
            t3,
            c0,
            c1,
            c2,
            c3,
        ] = *bytes;
        RawEntry {
            seq: u32::from_le_bytes([s0, s1, s2, s3]),
            seq_label,
            state: OtaState::from_u32(u32::from_le_bytes([t0, t1, t2, t3])),
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
        }
    }

    pub fn to_bytes(&self) -> [u8; ENTRY_SIZE] {
        let fields = (self.seq.to_le_bytes().into_iter())
            .chain(self.seq_label)
            .chain(self.state.to_u32().to_le_bytes())
            .chain(self.crc.to_le_bytes());
        let mut out = [0xFF; ENTRY_SIZE];
        for (byte, field) in out.iter_mut().zip(fields) {
            *byte = field;
        }
        out
    }

    pub fn crc_ok(&self) -> bool {
        self.crc == seq_crc(self.seq)
    }

    /// `bootloader_common_ota_select_invalid`: erased, `Invalid` or `Aborted`. It does not
    /// look at the CRC, which matters in [`Otadata::boot`].
    fn select_invalid(&self) -> bool {
        self.seq == u32::MAX || self.state.is_rejected()
    }

    /// `bootloader_common_ota_select_valid`: the bootloader may boot from this entry.
    pub fn is_valid(&self) -> bool {
        !self.select_invalid() && self.crc_ok()
    }

    /// The trusted entry, if the bootloader would read one here (see [`OtaEntry::decode`]).
    pub fn entry(&self) -> Option<OtaEntry> {
        (self.seq != u32::MAX && self.crc_ok()).then_some(OtaEntry::new(self.seq, self.state))
    }

    /// `rewrite_ota_seq`: the CRC is recomputed on every app-side write.
    fn rewrite(&mut self, seq: u32, state: OtaState) {
        self.seq = seq;
        self.state = state;
        self.crc = seq_crc(seq);
    }
}

impl From<OtaEntry> for RawEntry {
    fn from(entry: OtaEntry) -> RawEntry {
        let mut raw = RawEntry::ERASED;
        raw.rewrite(entry.seq, entry.state);
        raw
    }
}

/// Why otadata could not be read or an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtadataError {
    #[error("otadata must be exactly {expected:#x} bytes (two 4 KiB sectors), got {actual:#x}")]
    Size { expected: usize, actual: usize },
    #[error("the partition table cannot have {slot_count} OTA slots: ESP-IDF allows at most 16")]
    TooManySlots { slot_count: u8 },
    #[error("{slot} does not exist: the partition table has {slot_count} OTA slots")]
    NoSuchSlot { slot: Slot, slot_count: u8 },
    #[error("nothing can boot: the partition table has neither a factory app nor OTA slots")]
    NoApp,
    #[error("no otadata entry is active: the running app is the factory app (or ota_0 by default)")]
    NoActiveEntry,
    #[error(
        "rollback is impossible: the other otadata entry is not valid and there is no factory app"
    )]
    RollbackImpossible,
    #[error(
        "no sequence number above {current:#x} selects {slot}: the next would reach 0xFFFFFFFF, which reads as erased"
    )]
    SeqExhausted { current: u32, slot: Slot },
}

fn check_slot_count(slot_count: u8) -> Result<(), OtadataError> {
    if slot_count > MAX_SLOTS {
        return Err(OtadataError::TooManySlots { slot_count });
    }
    Ok(())
}

/// What one boot did: the app it starts and the sectors it rewrote (a simulator persists
/// those before starting the app, as the bootloader does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    pub target: BootTarget,
    /// The sector (0 or 1) whose entry selected `target`; `None` when the bootloader fell
    /// back to factory or ota_0 because no entry was valid.
    pub chosen: Option<usize>,
    /// Which sectors the bootloader erased and rewrote, by index.
    pub rewritten: [bool; 2],
}

impl Boot {
    pub fn otadata_changed(&self) -> bool {
        self.rewritten.contains(&true)
    }
}

/// What marking the running app valid or invalid touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    /// The slot the active entry selects, which is the one marked. ESP-IDF marks the
    /// active entry, not the running partition: after an unrebooted `set_boot` they differ.
    pub slot: Slot,
    pub sector: usize,
    /// False when the entry already had that state and nothing was written.
    pub rewritten: bool,
}

/// The otadata partition: one entry per sector. Bytes after an entry are not kept: the
/// bootloader never reads them and ESP-IDF only ever leaves them erased.
///
/// The operations mirror ESP-IDF built with `CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE` and
/// without `CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK`; each names the ESP-IDF function it
/// follows. Every app partition selected is assumed to hold an image that verifies: what
/// the bootloader does when one does not load (`bootloader_utility_load_boot_image` tries
/// the others) is left to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otadata {
    sectors: [RawEntry; 2],
}

impl Default for Otadata {
    fn default() -> Otadata {
        Otadata::blank()
    }
}

impl Otadata {
    /// Erased otadata, as `esptool erase_flash` or `esp_ota_set_boot_partition(factory)`
    /// leave it.
    pub const fn blank() -> Otadata {
        Otadata {
            sectors: [RawEntry::ERASED; 2],
        }
    }

    pub const fn from_sectors(sectors: [RawEntry; 2]) -> Otadata {
        Otadata { sectors }
    }

    pub const fn sectors(&self) -> &[RawEntry; 2] {
        &self.sectors
    }

    /// Reads the partition as `bootloader_common_read_otadata` does: the first 32 bytes of
    /// each 4 KiB sector.
    pub fn from_bytes(bytes: &[u8]) -> Result<Otadata, OtadataError> {
        let size = OtadataError::Size {
            expected: OTADATA_SIZE,
            actual: bytes.len(),
        };
        if bytes.len() != OTADATA_SIZE {
            return Err(size);
        }
        let (first, second) = bytes.split_at(SECTOR_SIZE);
        let entry = |sector: &[u8]| sector.first_chunk::<ENTRY_SIZE>().map(RawEntry::from_bytes);
        match (entry(first), entry(second)) {
            (Some(a), Some(b)) => Ok(Otadata { sectors: [a, b] }),
            _ => Err(size),
        }
    }

    /// The partition's bytes: each entry at the start of its sector, the rest erased.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0xFF; OTADATA_SIZE];
        for (sector, entry) in out.chunks_exact_mut(SECTOR_SIZE).zip(&self.sectors) {
            if let Some(head) = sector.first_chunk_mut::<ENTRY_SIZE>() {
                *head = entry.to_bytes();
            }
        }
        out
    }

    /// The sector in charge: `bootloader_common_get_active_otadata`. Of the valid entries
    /// the one with the higher seq; on a tie sector 0, as `bootloader_common_select_otadata`
    /// compares against sector 0 first.
    pub fn active(&self) -> Option<usize> {
        let [a, b] = &self.sectors;
        match (a.is_valid(), b.is_valid()) {
            (true, true) if a.seq >= b.seq => Some(0),
            (true, true) => Some(1),
            (true, false) => Some(0),
            (false, true) => Some(1),
            (false, false) => None,
        }
    }

    /// One pass of the second-stage bootloader: `bootloader_utility_get_selected_boot_partition`
    /// followed by `set_actual_ota_seq`, with rollback enabled.
    ///
    /// Where ESP-IDF differs from the short description ("take the valid entry with the
    /// highest seq; NEW becomes PENDING_VERIFY; PENDING_VERIFY becomes ABORTED"):
    /// - every PENDING_VERIFY entry becomes ABORTED first, in both sectors and whatever its
    ///   CRC (the bad CRC is written back unchanged), so it is already refused when the
    ///   bootloader chooses;
    /// - the factory / ota_0 fallback is taken when both entries are erased, INVALID or
    ///   ABORTED regardless of CRC, or when no entry is valid;
    /// - without a factory app, and only when both sectors are erased or fail their CRC,
    ///   the bootloader writes `{seq 1, VALID}` into sector 0 when it starts ota_0.
    pub fn boot(&mut self, slot_count: u8, has_factory: bool) -> Result<Boot, OtadataError> {
        check_slot_count(slot_count)?;
        if slot_count == 0 && !has_factory {
            return Err(OtadataError::NoApp);
        }
        let mut rewritten = [false; 2];
        for (entry, written) in self.sectors.iter_mut().zip(&mut rewritten) {
            if entry.state == OtaState::PendingVerify {
                entry.state = OtaState::Aborted;
                *written = true;
            }
        }
        let fallback = Boot {
            target: if has_factory {
                BootTarget::Factory
            } else {
                BootTarget::Ota(Slot(0))
            },
            chosen: None,
            rewritten,
        };

        let [a, b] = &self.sectors;
        if (a.select_invalid() && b.select_invalid()) || slot_count == 0 {
            let initial = self
                .sectors
                .iter()
                .all(|e| e.seq == u32::MAX || !e.crc_ok());
            if !has_factory && initial {
                self.sectors[0] = OtaEntry::new(1, OtaState::Valid).into();
                rewritten[0] = true;
            }
            return Ok(Boot {
                rewritten,
                ..fallback
            });
        }

        let Some(active) = self.active() else {
            // No factory: ESP-IDF "tries all partitions", of which ota_0 comes first.
            return Ok(fallback);
        };
        let entry = &mut self.sectors[active];
        let Some(slot) = slot_of(entry.seq, slot_count) else {
            return Ok(fallback);
        };
        if entry.state == OtaState::New {
            entry.state = OtaState::PendingVerify;
            rewritten[active] = true;
        }
        Ok(Boot {
            target: BootTarget::Ota(slot),
            chosen: Some(active),
            rewritten,
        })
    }

    /// The app the next boot will start, read-only: `esp_ota_get_boot_partition`. Unlike
    /// [`Otadata::boot`] it does not know that a PENDING_VERIFY entry is about to be aborted.
    pub fn boot_partition(
        &self,
        slot_count: u8,
        has_factory: bool,
    ) -> Result<BootTarget, OtadataError> {
        check_slot_count(slot_count)?;
        // find_default_boot_partition: factory, else the first OTA slot.
        let default = match (has_factory, slot_count) {
            (true, _) => BootTarget::Factory,
            (false, 0) => return Err(OtadataError::NoApp),
            (false, _) => BootTarget::Ota(Slot(0)),
        };
        let [a, b] = &self.sectors;
        if a.select_invalid() && b.select_invalid() {
            return Ok(default);
        }
        let slot = self
            .active()
            .and_then(|i| slot_of(self.sectors[i].seq, slot_count));
        Ok(slot.map_or(default, BootTarget::Ota))
    }

    /// `esp_ota_set_boot_partition` for an OTA slot (via `esp_rewrite_ota_data` and
    /// `rewrite_ota_seq`): the next boot starts `slot`, in state NEW. Returns the sector
    /// written.
    ///
    /// If the active entry already selects `slot`, only its state is rewritten in place, as
    /// current ESP-IDF does; releases before `compute_ota_seq_for_target_slot` wrote the
    /// same seq into the other sector instead. Otherwise the other sector gets the smallest
    /// seq above the active one that selects `slot`; with no active entry, sector 0 gets
    /// `slot + 1`. ESP-IDF's search would overflow where this returns
    /// [`OtadataError::SeqExhausted`].
    pub fn set_boot(&mut self, slot: Slot, slot_count: u8) -> Result<usize, OtadataError> {
        check_slot_count(slot_count)?;
        if slot.0 >= slot_count {
            return Err(OtadataError::NoSuchSlot { slot, slot_count });
        }
        let (sector, seq) = match self.active() {
            Some(active) => {
                let current = self.sectors[active].seq;
                if slot_of(current, slot_count) == Some(slot) {
                    (active, current)
                } else {
                    let seq = next_seq(current, slot, slot_count)
                        .ok_or(OtadataError::SeqExhausted { current, slot })?;
                    (1 - active, seq)
                }
            }
            None => (0, u32::from(slot.0) + 1),
        };
        self.sectors[sector].rewrite(seq, OtaState::New);
        Ok(sector)
    }

    /// The state of the running app's entry: `esp_ota_get_state_partition` on the running
    /// partition. `None` for the factory app (ESP_ERR_NOT_SUPPORTED) or when no sector with
    /// a matching CRC selects the slot (ESP_ERR_NOT_FOUND). Like ESP-IDF it takes the first
    /// sector that selects the slot, valid or not.
    pub fn running_state(&self, running: BootTarget, slot_count: u8) -> Option<OtaState> {
        let BootTarget::Ota(slot) = running else {
            return None;
        };
        if slot_count > MAX_SLOTS {
            return None;
        }
        self.sectors
            .iter()
            .find(|e| slot_of(e.seq, slot_count) == Some(slot) && e.crc_ok())
            .map(|e| e.state)
    }

    /// `esp_ota_mark_app_valid_cancel_rollback`: the active entry becomes VALID, so the
    /// next boot keeps this app.
    pub fn mark_valid(&mut self, slot_count: u8) -> Result<Marked, OtadataError> {
        let (sector, slot) = self.active_slot(slot_count)?;
        let entry = &mut self.sectors[sector];
        let rewritten = entry.state != OtaState::Valid;
        if rewritten {
            entry.rewrite(entry.seq, OtaState::Valid);
        }
        Ok(Marked {
            slot,
            sector,
            rewritten,
        })
    }

    /// `esp_ota_mark_app_invalid_rollback_and_reboot` without the reboot: the active entry
    /// becomes INVALID so the next boot falls back. Refused, as
    /// `esp_ota_check_rollback_is_possible` refuses it, when the other entry is not valid
    /// and there is no factory app (ESP-IDF also checks that image verifies; here it is
    /// assumed to).
    pub fn mark_invalid(
        &mut self,
        slot_count: u8,
        has_factory: bool,
    ) -> Result<Marked, OtadataError> {
        let (sector, slot) = self.active_slot(slot_count)?;
        let other_valid = self.sectors[1 - sector].is_valid();
        if !other_valid && !has_factory {
            return Err(OtadataError::RollbackImpossible);
        }
        let entry = &mut self.sectors[sector];
        entry.rewrite(entry.seq, OtaState::Invalid);
        Ok(Marked {
            slot,
            sector,
            rewritten: true,
        })
    }

    /// `esp_ota_invalidate_inactive_ota_data_slot`, which `esp_ota_begin` calls before an
    /// OTA slot is overwritten: erases the inactive sector unless it selects the running
    /// slot, so that a rollback cannot land on a half-written image. Returns the sector
    /// erased, if any.
    pub fn invalidate_inactive(&mut self, running: BootTarget, slot_count: u8) -> Option<usize> {
        let active = self.active()?;
        let inactive = 1 - active;
        let entry = &self.sectors[inactive];
        if slot_count > MAX_SLOTS || entry.seq == u32::MAX || !entry.crc_ok() {
            return None;
        }
        let slot = slot_of(entry.seq, slot_count)?;
        if running == BootTarget::Ota(slot) {
            return None;
        }
        self.sectors[inactive] = RawEntry::ERASED;
        Some(inactive)
    }

    /// The slot that was rolled back from: `esp_ota_get_last_invalid_partition`. Of the
    /// INVALID or ABORTED entries with a good CRC, the one with the lower seq (sector 0 on
    /// a tie), as ESP-IDF picks it. ESP-IDF further hides it if its image is corrupted.
    pub fn last_invalid(&self, slot_count: u8) -> Option<Slot> {
        if slot_count > MAX_SLOTS {
            return None;
        }
        let rejected = |e: &RawEntry| e.seq != u32::MAX && e.crc_ok() && e.state.is_rejected();
        let [a, b] = &self.sectors;
        let entry = match (rejected(a), rejected(b)) {
            (true, true) if a.seq <= b.seq => a,
            (true, true) => b,
            (true, false) => a,
            (false, true) => b,
            (false, false) => return None,
        };
        slot_of(entry.seq, slot_count)
    }

    /// The active sector and the slot it selects, as `esp_ota_current_ota_is_workable`
    /// requires them ("Running firmware is factory" otherwise).
    fn active_slot(&self, slot_count: u8) -> Result<(usize, Slot), OtadataError> {
        check_slot_count(slot_count)?;
        let active = self.active().ok_or(OtadataError::NoActiveEntry)?;
        let slot =
            slot_of(self.sectors[active].seq, slot_count).ok_or(OtadataError::NoActiveEntry)?;
        Ok((active, slot))
    }
}

/// `compute_ota_seq_for_target_slot`: the smallest `(slot + 1) % slot_count + i * slot_count`
/// not below `current`. `None` when that reaches 0xFFFFFFFF (erased) or beyond, where
/// ESP-IDF's `u32` arithmetic would wrap.
fn next_seq(current: u32, slot: Slot, slot_count: u8) -> Option<u32> {
    let count = u64::from(slot_count);
    let base = (u64::from(slot.0) + 1).checked_rem(count)?;
    let current = u64::from(current);
    let steps = current.saturating_sub(base).div_ceil(count);
    let seq = base + steps * count;
    u32::try_from(seq).ok().filter(|&seq| seq != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_seq_matches_esp_idf_loop() {
        fn reference(current: u32, slot: u8, count: u8) -> u32 {
            let base = (u32::from(slot) + 1) % u32::from(count);
            let mut i = 0;
            while current > base + i * u32::from(count) {
                i += 1;
            }
            base + i * u32::from(count)
        }
        for count in 1..=MAX_SLOTS {
            for slot in 0..count {
                for current in 0..100 {
                    assert_eq!(
                        next_seq(current, Slot(slot), count),
                        Some(reference(current, slot, count)),
                        "current {current}, slot {slot}, count {count}"
                    );
                }
            }
        }
    }

    #[test]
    fn crc_of_erased_seq_is_not_erased() {
        // An erased sector must never pass its CRC check.
        assert_ne!(seq_crc(u32::MAX), u32::MAX);
    }
}
