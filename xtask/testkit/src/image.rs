//! App images taken apart and put back together, to make an image that breaks exactly one
//! rule: move a segment, change a header field, then rebuild with a correct checksum and
//! appended SHA-256, so that nothing but the chosen rule is wrong.
//!
//! Written apart from ota-core on purpose: the tests judge ota-core's reader by images
//! this module makes, so it must not share the reader's code.

use sha2::{Digest as _, Sha256};

/// The 24-byte image header.
const HEADER_LEN: usize = 24;

/// One segment: its load address and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSegment {
    pub load_addr: u32,
    pub data: Vec<u8>,
}

/// An app image as its header bytes and its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawImage {
    pub header: [u8; HEADER_LEN],
    pub segments: Vec<RawSegment>,
}

impl RawImage {
    /// Takes a well-formed image apart. Panics on anything else: it is for fixtures.
    pub fn parse(bytes: &[u8]) -> RawImage {
        let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("a header");
        let mut at = HEADER_LEN;
        let segments = (0..header[1])
            .map(|_| {
                let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4"));
                let (load_addr, len) = (word(at), word(at + 4) as usize);
                let data = bytes[at + 8..at + 8 + len].to_vec();
                at += 8 + len;
                RawSegment { load_addr, data }
            })
            .collect();
        RawImage { header, segments }
    }

    /// The image's bytes: header (with the segment count), segments, zero padding, the
    /// checksum byte ending a 16-byte block, and the SHA-256 if the header asks for it.
    pub fn build(&self) -> Vec<u8> {
        let mut out = self.header.to_vec();
        out[1] = u8::try_from(self.segments.len()).expect("at most 255 segments");
        let mut checksum = 0xEFu8;
        for segment in &self.segments {
            out.extend_from_slice(&segment.load_addr.to_le_bytes());
            let len = u32::try_from(segment.data.len()).expect("a segment under 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&segment.data);
            checksum = segment.data.iter().fold(checksum, |acc, b| acc ^ b);
        }
        while out.len() % 16 != 15 {
            out.push(0);
        }
        out.push(checksum);
        if self.header[23] == 1 {
            let digest = Sha256::digest(&out);
            out.extend_from_slice(&digest);
        }
        out
    }

    /// The file offset of segment `index`'s data in the built image.
    pub fn data_offset(&self, index: usize) -> usize {
        HEADER_LEN
            + self.segments[..index]
                .iter()
                .map(|s| 8 + s.data.len())
                .sum::<usize>()
            + 8
    }

    /// The index of the first segment whose load address is in `range`.
    pub fn find(&self, range: std::ops::Range<u32>) -> usize {
        self.segments
            .iter()
            .position(|s| range.contains(&s.load_addr))
            .expect("a segment in the range")
    }

    /// Sets a little-endian u16 header field (e.g. 15: min_chip_rev_full).
    pub fn set_header_u16(&mut self, at: usize, value: u16) {
        self.header[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image espflash made, committed with ota-core's tests.
    const IMAGE: &[u8] = include_bytes!("../../../firmware/ota/tests/data/wordclock-2.9.0.bin");

    #[test]
    fn an_image_taken_apart_builds_back_to_the_same_bytes() {
        let raw = RawImage::parse(IMAGE);
        assert_eq!(raw.segments.len(), 5);
        assert_eq!(raw.build(), IMAGE);
        assert_eq!(raw.data_offset(0), 0x20);
    }
}
