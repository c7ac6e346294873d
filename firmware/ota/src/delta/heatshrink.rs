//! Heatshrink decompression (LZSS with a 2^8-byte window and 2^7-byte lookahead), the only
//! parameters ESP-IDF's `esp_delta_ota` decodes: a push decoder with fixed state, fed
//! compressed bytes as they arrive, handing decompressed bytes on as it makes them.
//!
//! The bit stream, most significant bit first: a tag bit; `1` is a literal byte (8 bits);
//! `0` is a back-reference: the distance back minus one (8 bits), then the length minus
//! one (7 bits), copied byte by byte from the window (so it may overlap what it writes).

/// The window's size as a power of two: 256 bytes.
pub const WINDOW_BITS: u8 = 8;
/// The longest back-reference as a power of two: 128 bytes.
pub const LOOKAHEAD_BITS: u8 = 7;
const WINDOW: usize = 1 << WINDOW_BITS;

/// Where the decoder is in the bit stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Tag,
    Literal,
    Distance,
    Length { distance: u16 },
}

/// A heatshrink decoder: 256 bytes of window and a few words of state, whatever the
/// stream's length.
#[derive(Debug, Clone)]
pub struct Decoder {
    window: [u8; WINDOW],
    /// Bytes decoded so far (the window's write position, wrapping).
    head: usize,
    step: Step,
    /// Bits read and not used yet, and how many.
    bits: u32,
    count: u8,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder {
            window: [0; WINDOW],
            head: 0,
            step: Step::Tag,
            bits: 0,
            count: 0,
        }
    }
}

impl Decoder {
    /// Decodes `input`, handing each decoded byte to `out`; `out` returning `false`
    /// stops the decoding (the caller has found an error and will not feed again).
    pub fn feed(&mut self, input: &[u8], out: &mut dyn FnMut(u8) -> bool) {
        for &byte in input {
            self.bits = (self.bits << 8) | u32::from(byte);
            self.count += 8;
            while let Some(ready) = self.next(out) {
                if !ready {
                    return;
                }
            }
        }
    }

    /// Takes the next token's bits if they are all there: `None` when more input is
    /// needed, `Some(false)` when `out` asked to stop.
    fn next(&mut self, out: &mut dyn FnMut(u8) -> bool) -> Option<bool> {
        match self.step {
            Step::Tag => {
                let tag = self.take(1)?;
                self.step = if tag == 1 {
                    Step::Literal
                } else {
                    Step::Distance
                };
                Some(true)
            }
            Step::Literal => {
                let byte = self.take(8)? as u8;
                self.step = Step::Tag;
                Some(self.emit(byte, out))
            }
            Step::Distance => {
                let distance = self.take(WINDOW_BITS)? as u16 + 1;
                self.step = Step::Length { distance };
                Some(true)
            }
            Step::Length { distance } => {
                let length = self.take(LOOKAHEAD_BITS)? + 1;
                self.step = Step::Tag;
                for _ in 0..length {
                    let at = self.head.wrapping_sub(usize::from(distance)) % WINDOW;
                    if !self.emit(self.window[at], out) {
                        return Some(false);
                    }
                }
                Some(true)
            }
        }
    }

    /// The next `n` bits, when there are that many.
    fn take(&mut self, n: u8) -> Option<u32> {
        if self.count < n {
            return None;
        }
        self.count -= n;
        let value = (self.bits >> self.count) & ((1 << n) - 1);
        self.bits &= (1 << self.count) - 1;
        Some(value)
    }

    fn emit(&mut self, byte: u8, out: &mut dyn FnMut(u8) -> bool) -> bool {
        self.window[self.head % WINDOW] = byte;
        self.head = self.head.wrapping_add(1);
        out(byte)
    }

    /// Whether the stream may end here: what is left is the last byte's zero padding,
    /// fewer bits than any token needs, and no token is half read.
    pub fn at_end(&self) -> bool {
        let padding_only = self.bits == 0 && self.count < 8;
        match self.step {
            Step::Tag => padding_only,
            // A zero tag and then padding: the encoder's flush leaves no such token, but
            // a distance cannot fit in what is left, so nothing is lost.
            Step::Distance => padding_only && self.count < WINDOW_BITS,
            Step::Literal | Step::Length { .. } => false,
        }
    }
}
