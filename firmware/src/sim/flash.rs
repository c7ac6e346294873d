//! SPI NOR flash as the chip has it: erase sets 4 KiB sectors to 0xFF, writes can only
//! clear bits, and power can be cut after any byte. Sparse: an erased sector takes no
//! memory, so a simulated device costs what its flash holds, and a fleet of them fits.

use std::borrow::Cow;

/// The erase unit.
pub const SECTOR: usize = 0x1000;

/// An erased sector, as every read of one sees it.
static ERASED: [u8; SECTOR] = [0xFF; SECTOR];

/// Power was cut: the operation stopped part-way, and the device must restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("power cut during a flash operation")]
pub struct PowerCut;

/// The flash contents, surviving every simulated reboot.
#[derive(Debug, Clone)]
pub struct Flash {
    /// Each sector's bytes; `None` while it is erased.
    sectors: Vec<Option<Box<[u8; SECTOR]>>>,
    /// Bytes the flash may still erase or write before the power goes.
    budget: Option<u64>,
    /// Bytes erased or written so far, to place power cuts across a whole operation.
    spent: u64,
    /// Where each erase or write began and how long it was, in `spent` bytes.
    operations: Vec<(u64, u64)>,
}

impl Flash {
    /// A fresh chip of `size` bytes (whole sectors): all erased.
    pub fn new(size: usize) -> Flash {
        Flash {
            sectors: vec![None; size.div_ceil(SECTOR)],
            budget: None,
            spent: 0,
            operations: Vec::new(),
        }
    }

    /// A flash with these contents, as saved by a previous run.
    pub fn from_bytes(bytes: Vec<u8>) -> Flash {
        let mut flash = Flash::new(bytes.len());
        for (slot, chunk) in flash.sectors.iter_mut().zip(bytes.chunks(SECTOR)) {
            if chunk.iter().any(|&b| b != 0xFF) {
                let mut sector = Box::new(ERASED);
                sector[..chunk.len()].copy_from_slice(chunk);
                *slot = Some(sector);
            }
        }
        flash
    }

    pub fn len(&self) -> usize {
        self.sectors.len() * SECTOR
    }

    pub fn is_empty(&self) -> bool {
        self.sectors.is_empty()
    }

    /// The whole contents, as a flash file holds them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.read(0, self.len()).into_owned()
    }

    /// Bytes of memory the contents take: the sectors that are not erased.
    pub fn resident(&self) -> usize {
        self.sectors.iter().flatten().count() * SECTOR
    }

    /// `len` bytes at `offset`: borrowed when they lie in one sector.
    pub fn read(&self, offset: usize, len: usize) -> Cow<'_, [u8]> {
        assert!(
            offset + len <= self.len(),
            "a read past the end of the flash"
        );
        if len == 0 {
            return Cow::Borrowed(&[]);
        }
        let within = offset % SECTOR;
        if within + len <= SECTOR {
            let sector = self.sectors[offset / SECTOR].as_deref().unwrap_or(&ERASED);
            return Cow::Borrowed(&sector[within..within + len]);
        }
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while at < offset + len {
            let within = at % SECTOR;
            let n = (SECTOR - within).min(offset + len - at);
            let sector = self.sectors[at / SECTOR].as_deref().unwrap_or(&ERASED);
            out.extend_from_slice(&sector[within..within + n]);
            at += n;
        }
        Cow::Owned(out)
    }

    /// Cuts the power once `bytes` more bytes have been erased or written.
    pub fn cut_power_after(&mut self, bytes: u64) {
        self.budget = Some(bytes);
    }

    /// Bytes erased or written since the flash was made.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// Every erase and write so far: where it began (in bytes spent) and its length, so
    /// that a test can cut the power inside each one.
    pub fn operations(&self) -> &[(u64, u64)] {
        &self.operations
    }

    /// Whether the cut has happened (or is armed and spent).
    pub fn power_is_cut(&self) -> bool {
        self.budget == Some(0)
    }

    /// Power is back: no cut is armed.
    pub fn restore_power(&mut self) {
        self.budget = None;
    }

    /// Spends up to `want` bytes of the budget: how many the power lasts for.
    fn allow(&mut self, want: usize) -> usize {
        let granted = match self.budget {
            Some(left) => want.min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => want,
        };
        if let Some(left) = &mut self.budget {
            *left -= granted as u64;
        }
        self.spent += granted as u64;
        granted
    }

    /// Erases the sectors covering `offset..offset + len` (both sector-aligned).
    pub fn erase(&mut self, offset: usize, len: usize) -> Result<(), PowerCut> {
        self.operations.push((self.spent, len as u64));
        assert!(
            offset.is_multiple_of(SECTOR) && len.is_multiple_of(SECTOR),
            "erase is per sector"
        );
        assert!(
            offset + len <= self.len(),
            "an erase past the end of the flash"
        );
        for index in offset / SECTOR..(offset + len) / SECTOR {
            let granted = self.allow(SECTOR);
            if granted == SECTOR {
                self.sectors[index] = None;
                continue;
            }
            // The power went inside this sector: erased up to there, as the chip leaves it.
            if let Some(sector) = self.sectors[index].as_mut() {
                sector[..granted].fill(0xFF);
            }
            return Err(PowerCut);
        }
        Ok(())
    }

    /// Programs `data` at `offset`: each bit can only go from 1 to 0, as on NOR flash.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), PowerCut> {
        self.operations.push((self.spent, data.len() as u64));
        assert!(
            offset + data.len() <= self.len(),
            "a write past the end of the flash"
        );
        let mut done = 0;
        while done < data.len() {
            let at = offset + done;
            let within = at % SECTOR;
            let n = (SECTOR - within).min(data.len() - done);
            let granted = self.allow(n);
            let piece = &data[done..done + granted];
            if piece.iter().any(|&b| b != 0xFF) {
                let sector = self.sectors[at / SECTOR].get_or_insert_with(|| Box::new(ERASED));
                for (byte, new) in sector[within..within + granted].iter_mut().zip(piece) {
                    *byte &= new;
                }
            }
            if granted < n {
                return Err(PowerCut);
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_clear_bits_and_erase_restores_them() {
        let mut flash = Flash::new(2 * SECTOR);
        flash.write(10, &[0x0F]).unwrap();
        flash.write(10, &[0xF0]).unwrap();
        assert_eq!(
            *flash.read(10, 1),
            [0x00],
            "NOR cannot set bits without an erase"
        );
        flash.erase(0, SECTOR).unwrap();
        assert_eq!(*flash.read(10, 1), [0xFF]);
    }

    #[test]
    fn a_power_cut_stops_an_operation_part_way() {
        let mut flash = Flash::new(SECTOR);
        flash.cut_power_after(3);
        assert_eq!(flash.write(0, &[0, 0, 0, 0, 0]), Err(PowerCut));
        assert_eq!(*flash.read(0, 5), [0, 0, 0, 0xFF, 0xFF]);
        assert!(flash.power_is_cut());
        flash.restore_power();
        flash.write(3, &[0]).unwrap();
    }

    #[test]
    fn erased_sectors_take_no_memory() {
        let mut flash = Flash::new(8 << 20);
        assert_eq!(flash.resident(), 0);
        flash.write(SECTOR + 10, &[0u8; 2 * SECTOR]).unwrap();
        assert_eq!(flash.resident(), 3 * SECTOR, "the sectors written, only");
        flash.erase(SECTOR, 3 * SECTOR).unwrap();
        assert_eq!(flash.resident(), 0, "an erase gives them back");
        flash.write(0, &[0xFF; SECTOR]).unwrap();
        assert_eq!(flash.resident(), 0, "writing ones changes nothing");
    }

    /// The dense flash the sparse one must behave as, byte for byte.
    struct Dense {
        bytes: Vec<u8>,
        budget: Option<u64>,
    }

    impl Dense {
        fn spend(&mut self) -> bool {
            match &mut self.budget {
                Some(0) => false,
                Some(left) => {
                    *left -= 1;
                    true
                }
                None => true,
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Erase { sector: usize, count: usize },
        Write { offset: usize, data: Vec<u8> },
        Cut(u64),
        Restore,
        Read { offset: usize, len: usize },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..4usize, 1..3usize).prop_map(|(sector, count)| Op::Erase { sector, count }),
            (
                0..5 * SECTOR,
                proptest::collection::vec(any::<u8>(), 0..2 * SECTOR)
            )
                .prop_map(|(offset, data)| Op::Write { offset, data }),
            // Cuts and positions near sector edges, where a sparse flash could slip.
            (0..3 * SECTOR as u64).prop_map(Op::Cut),
            (0..6u64, 0..3u64).prop_map(|(s, d)| Op::Cut((s * SECTOR as u64).saturating_sub(d))),
            Just(Op::Restore),
            (0..8 * SECTOR, 0..2 * SECTOR).prop_map(|(offset, len)| Op::Read { offset, len }),
            (
                1..8usize,
                0..3usize,
                proptest::collection::vec(any::<u8>(), 0..8)
            )
                .prop_map(|(s, d, data)| Op::Write {
                    offset: s * SECTOR - d,
                    data
                }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn the_sparse_flash_behaves_as_a_dense_one(ops in proptest::collection::vec(op(), 1..24)) {
            const SIZE: usize = 8 * SECTOR;
            let mut sparse = Flash::new(SIZE);
            let mut dense = Dense { bytes: vec![0xFF; SIZE], budget: None };
            let mut spent = 0u64;
            for op in ops {
                match op {
                    Op::Erase { sector, count } => {
                        let (offset, len) = (sector * SECTOR, count * SECTOR);
                        let mut cut = false;
                        for byte in offset..offset + len {
                            if !dense.spend() { cut = true; break; }
                            spent += 1;
                            dense.bytes[byte] = 0xFF;
                        }
                        proptest::prop_assert_eq!(sparse.erase(offset, len).is_err(), cut);
                    }
                    Op::Write { offset, data } => {
                        let data = &data[..data.len().min(SIZE - offset)];
                        let mut cut = false;
                        for (i, new) in data.iter().enumerate() {
                            if !dense.spend() { cut = true; break; }
                            spent += 1;
                            dense.bytes[offset + i] &= new;
                        }
                        proptest::prop_assert_eq!(sparse.write(offset, data).is_err(), cut);
                    }
                    Op::Cut(bytes) => {
                        dense.budget = Some(bytes);
                        sparse.cut_power_after(bytes);
                    }
                    Op::Restore => {
                        dense.budget = None;
                        sparse.restore_power();
                    }
                    Op::Read { offset, len } => {
                        let len = len.min(SIZE - offset);
                        proptest::prop_assert_eq!(&*sparse.read(offset, len), &dense.bytes[offset..offset + len]);
                    }
                }
                proptest::prop_assert_eq!(sparse.spent(), spent);
                proptest::prop_assert_eq!(&sparse.to_bytes(), &dense.bytes);
                proptest::prop_assert_eq!(sparse.power_is_cut(), dense.budget == Some(0));
            }
            let reloaded = Flash::from_bytes(sparse.to_bytes());
            proptest::prop_assert_eq!(reloaded.to_bytes(), dense.bytes);
        }
    }
}
