//! Writing what [`super::sequential`] reads: a detools sequential patch, heatshrink 8/7,
//! from the records of a binary diff. The host makes patches with it (`clockrel stage`);
//! detools' own `apply_patch` is its independent judge.

use alloc::vec::Vec;

use super::heatshrink::{LOOKAHEAD_BITS, WINDOW_BITS};
use super::sequential::{HEADER, HEATSHRINK_HEADER};

/// One record of a sequential patch: `diff` (the new bytes minus as many old ones from
/// the read position, byte by byte), then `extra` (new bytes as they are), then `step`,
/// how far the read position moves after the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub diff: Vec<u8>,
    pub extra: Vec<u8>,
    pub step: i64,
}

/// The patch that turns the old image into the `new_size` bytes `records` describe.
/// Records after the new image is complete are left out: a reader stops there, and
/// anything more would be trailing data to it.
pub fn sequential_patch(new_size: u64, records: &[Record]) -> Vec<u8> {
    let mut body = Vec::new();
    // No data-format transform.
    varint(&mut body, 0);
    let mut written = 0u64;
    for record in records {
        if written >= new_size {
            break;
        }
        written += (record.diff.len() + record.extra.len()) as u64;
        varint(&mut body, record.diff.len() as i64);
        body.extend_from_slice(&record.diff);
        varint(&mut body, record.extra.len() as i64);
        body.extend_from_slice(&record.extra);
        varint(&mut body, record.step);
    }
    let mut patch = alloc::vec![HEADER];
    varint(&mut patch, i64::try_from(new_size).unwrap_or(i64::MAX));
    // An empty image's patch ends with its size, as detools writes it.
    if new_size == 0 {
        return patch;
    }
    patch.push(HEATSHRINK_HEADER);
    patch.extend(compress(&body));
    patch
}

/// A detools varint: the first byte carries a continuation bit, the sign and 6 bits of
/// the magnitude; each next byte a continuation bit and 7 more bits.
fn varint(out: &mut Vec<u8>, value: i64) {
    let mut magnitude = value.unsigned_abs();
    let sign = if value < 0 { 0x40 } else { 0 };
    let mut byte = sign | (magnitude & 0x3f) as u8;
    magnitude >>= 6;
    while magnitude != 0 {
        out.push(byte | 0x80);
        byte = (magnitude & 0x7f) as u8;
        magnitude >>= 7;
    }
    out.push(byte);
}

const WINDOW: usize = 1 << WINDOW_BITS;
const LOOKAHEAD: usize = 1 << LOOKAHEAD_BITS;
/// A back-reference takes 1 + 8 + 7 bits, a literal 9: shorter matches go as literals.
const MIN_MATCH: usize = 2;

/// Heatshrink-compresses `data` with a 256-byte window and a 128-byte lookahead: at each
/// position the longest match in the window, else a literal.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut bits = BitWriter::default();
    let mut at = 0;
    while at < data.len() {
        let (distance, length) = longest_match(data, at);
        if length >= MIN_MATCH {
            bits.put(0, 1);
            bits.put((distance - 1) as u32, WINDOW_BITS);
            bits.put((length - 1) as u32, LOOKAHEAD_BITS);
            at += length;
        } else {
            bits.put(1, 1);
            bits.put(u32::from(data[at]), 8);
            at += 1;
        }
    }
    bits.finish()
}

/// The longest match for `data[at..]` starting in the window before `at`, as (distance
/// back, length); a match may run into the bytes it copies, as the decoder allows.
fn longest_match(data: &[u8], at: usize) -> (usize, usize) {
    let limit = LOOKAHEAD.min(data.len() - at);
    let mut best = (0, 0);
    for distance in 1..=WINDOW.min(at) {
        let from = at - distance;
        let length = (0..limit)
            .take_while(|&i| data[from + i] == data[at + i])
            .count();
        if length > best.1 {
            best = (distance, length);
            if length == limit {
                break;
            }
        }
    }
    best
}

/// Bits, most significant first, into bytes; the last byte padded with zeros.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    byte: u8,
    used: u8,
}

impl BitWriter {
    fn put(&mut self, value: u32, count: u8) {
        for bit in (0..count).rev() {
            self.byte = (self.byte << 1) | ((value >> bit) & 1) as u8;
            self.used += 1;
            if self.used == 8 {
                self.out.push(self.byte);
                self.byte = 0;
                self.used = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.used > 0 {
            self.out.push(self.byte << (8 - self.used));
        }
        self.out
    }
}
