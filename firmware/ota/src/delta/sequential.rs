//! A detools *sequential* patch applied as it arrives: the new image written in order
//! from the patch and the running image, read where the patch points. No I/O: the old
//! image comes through [`Base`], the new one goes out through a closure.
//!
//! The patch, after its first byte and the new size: heatshrink-compressed (see
//! [`super::heatshrink`]), a size of "data format" patch (0: none, the only kind we
//! take), then, until the new image is whole, records of three fields: `diff` bytes to
//! add, byte by byte, to as many from the old image; `extra` bytes to copy as they are;
//! a signed step that moves the read position in the old image. Sizes are detools'
//! varints: the first byte has a continuation bit (0x80), a sign bit (0x40) and 6 bits
//! of value, each next byte a continuation bit and 7 more bits.

use super::heatshrink::{self, Decoder};

/// The first byte: patch type 0 (sequential) in bits 4 to 6, compression 4 (heatshrink)
/// in bits 0 to 3.
pub const HEADER: u8 = 0x04;
/// The heatshrink stream's own first byte: window 8 (as 8 - 4) and lookahead 7 (as 7 - 3).
pub const HEATSHRINK_HEADER: u8 =
    ((heatshrink::WINDOW_BITS - 4) << 4) | (heatshrink::LOOKAHEAD_BITS - 3);
/// Old-image bytes read at a time for a diff; with the decoder's window, the applier's
/// whole state stays under a kilobyte.
const CHUNK: usize = 128;

/// The running image, read at any offset.
pub trait Base {
    /// The running image's size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; `Err` says why it could not.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), alloc::string::String>;
}

/// Why a patch could not be applied; `at` is the patch byte where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("byte 0: not a detools sequential patch with heatshrink (header 0x{0:02x})")]
    Header(u8),
    #[error("byte {at}: the patch's size field is not a valid varint")]
    Size { at: u64 },
    #[error(
        "byte {at}: heatshrink with window {window} and lookahead {lookahead}; only 8 and 7 are decoded"
    )]
    Heatshrink { at: u64, window: u8, lookahead: u8 },
    #[error("byte {at}: the patch carries a data-format transform, which is not supported")]
    DataFormat { at: u64 },
    #[error("byte {at}: a record's size runs past the new image's {size} bytes")]
    TooLong { at: u64, size: u64 },
    #[error("byte {at}: the patch reads the old image at {offset}, outside its {len} bytes")]
    OutsideBase { at: u64, offset: i128, len: u64 },
    #[error("byte {at}: reading the old image failed: {why}")]
    Base { at: u64, why: alloc::string::String },
    #[error("byte {at}: writing the new image failed: {why}")]
    Out { at: u64, why: alloc::string::String },
    #[error("byte {at}: the patch goes on after the new image is complete")]
    Trailing { at: u64 },
    #[error("the patch ends at byte {at}, {missing} bytes short of the new image")]
    Truncated { at: u64, missing: u64 },
}

/// Which varint is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    DataFormat,
    Diff,
    Extra,
    Adjust,
}

/// Where the applier is in the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first, uncompressed byte.
    Header,
    /// The new image's size, uncompressed.
    NewSize {
        value: u64,
        shift: u32,
    },
    /// The heatshrink stream's first byte.
    Heatshrink,
    Varint {
        field: Field,
        value: u64,
        shift: u32,
        negative: bool,
    },
    Diff {
        left: u64,
    },
    Extra {
        left: u64,
    },
    /// The new image is complete; only the decoder's padding may follow.
    Done,
    Failed,
}

/// A sequential patch being applied: a push parser with fixed state, fed the patch in
/// chunks of any size. Errors are sticky and name the patch byte.
#[derive(Debug, Clone)]
pub struct Applier {
    state: State,
    decoder: Decoder,
    /// Patch bytes fed so far.
    at: u64,
    new_size: u64,
    written: u64,
    /// Where the next diff byte reads the old image (an adjustment may point anywhere;
    /// it is checked when read).
    from: i128,
    /// Diff bytes decoded and not yet added to the old image's.
    diff: [u8; CHUNK],
    diff_len: usize,
    error: Option<PatchError>,
}

impl Default for Applier {
    fn default() -> Applier {
        Applier {
            state: State::Header,
            decoder: Decoder::default(),
            at: 0,
            new_size: 0,
            written: 0,
            from: 0,
            diff: [0; CHUNK],
            diff_len: 0,
            error: None,
        }
    }
}

impl Applier {
    pub fn new() -> Applier {
        Applier::default()
    }

    /// The new image's size, once the patch has said it.
    pub fn new_size(&self) -> Option<u64> {
        match self.state {
            State::Header | State::NewSize { .. } => None,
            _ => Some(self.new_size),
        }
    }

    /// Bytes of the new image written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Feeds the next patch bytes: reads `base` where they point, writes the new
    /// image's next bytes to `out`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        base: &mut dyn Base,
        out: &mut dyn FnMut(&[u8]) -> Result<(), alloc::string::String>,
    ) -> Result<(), PatchError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let mut rest = chunk;
        while let Some((&byte, tail)) = rest.split_first() {
            match self.state {
                State::Header => {
                    if byte != HEADER {
                        return self.fail(PatchError::Header(byte));
                    }
                    self.state = State::NewSize { value: 0, shift: 0 };
                }
                State::NewSize { value, shift } => {
                    // A size is never negative.
                    if shift == 0 && byte & SIGN != 0 {
                        return self.fail(PatchError::Size { at: self.at });
                    }
                    match varint_step(value, shift, byte) {
                        Some(Step::More(value, shift)) => {
                            self.state = State::NewSize { value, shift }
                        }
                        Some(Step::Done(value)) => {
                            self.new_size = value;
                            self.state = State::Heatshrink;
                        }
                        None => return self.fail(PatchError::Size { at: self.at }),
                    }
                }
                State::Heatshrink => {
                    if byte != HEATSHRINK_HEADER {
                        return self.fail(PatchError::Heatshrink {
                            at: self.at,
                            window: (byte >> 4) + 4,
                            lookahead: (byte & 0x0f) + 3,
                        });
                    }
                    self.state = State::Varint {
                        field: Field::DataFormat,
                        value: 0,
                        shift: 0,
                        negative: false,
                    };
                }
                State::Done
                | State::Failed
                | State::Varint { .. }
                | State::Diff { .. }
                | State::Extra { .. } => {
                    // The compressed stream: everything after the three bytes above.
                    let mut decoder = core::mem::take(&mut self.decoder);
                    let mut failed = None;
                    decoder.feed(
                        &[byte],
                        &mut |decoded| match self.decoded(decoded, base, out) {
                            Ok(()) => true,
                            Err(e) => {
                                failed = Some(e);
                                false
                            }
                        },
                    );
                    self.decoder = decoder;
                    if let Some(error) = failed {
                        return self.fail(error);
                    }
                }
            }
            self.at += 1;
            rest = tail;
        }
        // A diff run waits for a full chunk; the end of the fed bytes is a boundary too.
        self.flush_diff(base, out).or_else(|e| self.fail(e))
    }

    /// The patch has ended: the new image must be complete.
    pub fn finish(
        mut self,
        base: &mut dyn Base,
        out: &mut dyn FnMut(&[u8]) -> Result<(), alloc::string::String>,
    ) -> Result<u64, PatchError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.flush_diff(base, out)?;
        // Complete: the last record read to its step, and nothing after but padding.
        if self.state == State::Done && self.decoder.at_end() {
            Ok(self.new_size)
        } else {
            Err(PatchError::Truncated {
                at: self.at,
                missing: self.new_size.saturating_sub(self.written),
            })
        }
    }

    fn fail<T>(&mut self, error: PatchError) -> Result<T, PatchError> {
        self.state = State::Failed;
        self.error = Some(error.clone());
        Err(error)
    }

    /// One decompressed byte.
    fn decoded(
        &mut self,
        byte: u8,
        base: &mut dyn Base,
        out: &mut dyn FnMut(&[u8]) -> Result<(), alloc::string::String>,
    ) -> Result<(), PatchError> {
        match self.state {
            State::Varint {
                field,
                value,
                shift,
                negative,
            } => {
                // The sign is the first byte's.
                let negative = if shift == 0 {
                    byte & SIGN != 0
                } else {
                    negative
                };
                match varint_step(value, shift, byte).ok_or(PatchError::Size { at: self.at })? {
                    Step::More(value, shift) => {
                        self.state = State::Varint {
                            field,
                            value,
                            shift,
                            negative,
                        };
                        Ok(())
                    }
                    Step::Done(value) => self.field_read(field, value, negative),
                }
            }
            State::Diff { left } => {
                self.diff[self.diff_len] = byte;
                self.diff_len += 1;
                self.state = if left == 1 {
                    self.after_run(Field::Extra)
                } else {
                    State::Diff { left: left - 1 }
                };
                if self.diff_len == CHUNK || left == 1 {
                    self.flush_diff(base, out)?;
                }
                Ok(())
            }
            State::Extra { left } => {
                self.write(&[byte], out)?;
                self.state = if left == 1 {
                    self.after_run(Field::Adjust)
                } else {
                    State::Extra { left: left - 1 }
                };
                Ok(())
            }
            State::Done => Err(PatchError::Trailing { at: self.at }),
            State::Header | State::NewSize { .. } | State::Heatshrink | State::Failed => Ok(()),
        }
    }

    /// The state after a diff or extra run: the next field.
    fn after_run(&self, next: Field) -> State {
        State::Varint {
            field: next,
            value: 0,
            shift: 0,
            negative: false,
        }
    }

    fn field_read(&mut self, field: Field, value: u64, negative: bool) -> Result<(), PatchError> {
        let room = self.new_size - self.written - self.diff_len as u64;
        self.state = match field {
            Field::DataFormat if value != 0 => return Err(PatchError::DataFormat { at: self.at }),
            Field::DataFormat => self.record_start(),
            Field::Diff | Field::Extra if negative || value > room => {
                return Err(PatchError::TooLong {
                    at: self.at,
                    size: self.new_size,
                });
            }
            Field::Diff if value == 0 => self.after_run(Field::Extra),
            Field::Diff => State::Diff { left: value },
            Field::Extra if value == 0 => self.after_run(Field::Adjust),
            Field::Extra => State::Extra { left: value },
            Field::Adjust => {
                let step = i128::from(value);
                self.from += if negative { -step } else { step };
                self.record_start()
            }
        };
        Ok(())
    }

    /// A new record, or the end when the new image is complete.
    fn record_start(&self) -> State {
        if self.written + self.diff_len as u64 >= self.new_size {
            State::Done
        } else {
            State::Varint {
                field: Field::Diff,
                value: 0,
                shift: 0,
                negative: false,
            }
        }
    }

    /// Adds the pending diff bytes to the old image's and writes them.
    fn flush_diff(
        &mut self,
        base: &mut dyn Base,
        out: &mut dyn FnMut(&[u8]) -> Result<(), alloc::string::String>,
    ) -> Result<(), PatchError> {
        let n = self.diff_len;
        if n == 0 {
            return Ok(());
        }
        let len = base.size();
        let end = self.from + n as i128;
        if self.from < 0 || end > i128::from(len) {
            return Err(PatchError::OutsideBase {
                at: self.at,
                offset: self.from.max(end),
                len,
            });
        }
        let mut old = [0u8; CHUNK];
        base.read_at(self.from as u64, &mut old[..n])
            .map_err(|why| PatchError::Base { at: self.at, why })?;
        for (new, old) in self.diff[..n].iter_mut().zip(&old[..n]) {
            *new = new.wrapping_add(*old);
        }
        self.from = end;
        self.diff_len = 0;
        let diff = self.diff;
        self.write(&diff[..n], out)
    }

    fn write(
        &mut self,
        bytes: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), alloc::string::String>,
    ) -> Result<(), PatchError> {
        out(bytes).map_err(|why| PatchError::Out { at: self.at, why })?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// A varint byte's continuation bit, and the first byte's sign bit.
const MORE: u8 = 0x80;
const SIGN: u8 = 0x40;

/// One byte of a varint.
enum Step {
    /// More bytes follow: the value so far and the next shift.
    More(u64, u32),
    Done(u64),
}

/// Reads one varint byte (the first when `shift` is 0: 6 bits of value after its sign
/// bit); `None` when the value would not fit 63 bits.
fn varint_step(value: u64, shift: u32, byte: u8) -> Option<Step> {
    let (bits, width) = if shift == 0 {
        (u64::from(byte & 0x3f), 6)
    } else {
        (u64::from(byte & 0x7f), 7)
    };
    if shift >= 63 || (bits << shift) >> shift != bits {
        return None;
    }
    let value = value | (bits << shift);
    if byte & MORE != 0 {
        Some(Step::More(value, shift + width))
    } else {
        Some(Step::Done(value))
    }
}
