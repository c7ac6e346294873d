//! SPI NOR flash as the chip has it: erase sets 4 KiB sectors to 0xFF, writes can only
//! clear bits, and power can be cut after any byte.

/// The erase unit.
pub const SECTOR: usize = 0x1000;

/// Power was cut: the operation stopped part-way, and the device must restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("power cut during a flash operation")]
pub struct PowerCut;

/// The flash contents, surviving every simulated reboot.
#[derive(Debug, Clone)]
pub struct Flash {
    bytes: Vec<u8>,
    /// Bytes the flash may still erase or write before the power goes.
    budget: Option<u64>,
    /// Bytes erased or written so far, to place power cuts across a whole operation.
    spent: u64,
    /// Where each erase or write began and how long it was, in `spent` bytes.
    operations: Vec<(u64, u64)>,
}

impl Flash {
    /// A fresh chip of `size` bytes: all erased.
    pub fn new(size: usize) -> Flash {
        Flash {
            bytes: vec![0xFF; size],
            budget: None,
            spent: 0,
            operations: Vec::new(),
        }
    }

    /// A flash with these contents, as saved by a previous run.
    pub fn from_bytes(bytes: Vec<u8>) -> Flash {
        Flash {
            bytes,
            budget: None,
            spent: 0,
            operations: Vec::new(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn read(&self, offset: usize, len: usize) -> &[u8] {
        &self.bytes[offset..offset + len]
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

    /// Erases the sectors covering `offset..offset + len` (both sector-aligned).
    pub fn erase(&mut self, offset: usize, len: usize) -> Result<(), PowerCut> {
        self.operations.push((self.spent, len as u64));
        debug_assert!(
            offset.is_multiple_of(SECTOR) && len.is_multiple_of(SECTOR),
            "erase is per sector"
        );
        for byte in &mut self.bytes[offset..offset + len] {
            spend(&mut self.budget)?;
            self.spent += 1;
            *byte = 0xFF;
        }
        Ok(())
    }

    /// Programs `data` at `offset`: each bit can only go from 1 to 0, as on NOR flash.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), PowerCut> {
        self.operations.push((self.spent, data.len() as u64));
        for (byte, new) in self.bytes[offset..offset + data.len()].iter_mut().zip(data) {
            spend(&mut self.budget)?;
            self.spent += 1;
            *byte &= new;
        }
        Ok(())
    }
}

fn spend(budget: &mut Option<u64>) -> Result<(), PowerCut> {
    match budget {
        Some(0) => Err(PowerCut),
        Some(left) => {
            *left -= 1;
            Ok(())
        }
        None => Ok(()),
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
            flash.read(10, 1),
            [0x00],
            "NOR cannot set bits without an erase"
        );
        flash.erase(0, SECTOR).unwrap();
        assert_eq!(flash.read(10, 1), [0xFF]);
    }

    #[test]
    fn a_power_cut_stops_an_operation_part_way() {
        let mut flash = Flash::new(SECTOR);
        flash.cut_power_after(3);
        assert_eq!(flash.write(0, &[0, 0, 0, 0, 0]), Err(PowerCut));
        assert_eq!(flash.read(0, 5), [0, 0, 0, 0xFF, 0xFF]);
        assert!(flash.power_is_cut());
        flash.restore_power();
        flash.write(3, &[0]).unwrap();
    }
}
