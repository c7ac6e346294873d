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
#[derive(Debug, Clone, Default)]
pub struct Applier {
    /// Kept apart from the records' state, which its output drives.
    decoder: Decoder,
    records: Records,
    error: Option<PatchError>,
}

/// Everything but the decoder: where the patch is, and the new image's bytes on their way.
#[derive(Debug, Clone)]
struct Records {
    state: State,
    /// Patch bytes fed so far.
    at: u64,
    new_size: u64,
    written: u64,
    /// Where the next diff byte reads the old image (an adjustment may point anywhere;
    /// it is checked when read).
    from: i128,
    /// Decoded bytes of the current run not yet written: diff bytes (to add to the old
    /// image's) or extra bytes.
    pending: [u8; CHUNK],
    pending_len: usize,
}

impl Default for Records {
    fn default() -> Records {
        Records {
            state: State::Header,
            at: 0,
            new_size: 0,
            written: 0,
            from: 0,
            pending: [0; CHUNK],
            pending_len: 0,
        }
    }
}

/// Where the new image's bytes go.
type Out<'o> = dyn FnMut(&[u8]) -> Result<(), alloc::string::String> + 'o;

impl Applier {
    pub fn new() -> Applier {
        Applier::default()
    }

    /// The new image's size, once the patch has said it.
    pub fn new_size(&self) -> Option<u64> {
        match self.records.state {
            State::Header | State::NewSize { .. } => None,
            _ => Some(self.records.new_size),
        }
    }

    /// Bytes of the new image written so far.
    pub fn written(&self) -> u64 {
        self.records.written
    }

    /// Feeds the next patch bytes: reads `base` where they point, writes the new
    /// image's next bytes to `out`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        base: &mut dyn Base,
        out: &mut Out<'_>,
    ) -> Result<(), PatchError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.feed_all(chunk, base, out);
        if let Err(error) = &result {
            self.records.state = State::Failed;
            self.error = Some(error.clone());
        }
        result
    }

    fn feed_all(
        &mut self,
        chunk: &[u8],
        base: &mut dyn Base,
        out: &mut Out<'_>,
    ) -> Result<(), PatchError> {
        let Applier {
            decoder, records, ..
        } = self;
        for &byte in chunk {
            match records.state {
                State::Header => {
                    if byte != HEADER {
                        return Err(PatchError::Header(byte));
                    }
                    records.state = State::NewSize { value: 0, shift: 0 };
                }
                State::NewSize { value, shift } => {
                    // A size is never negative.
                    if shift == 0 && byte & SIGN != 0 {
                        return Err(PatchError::Size { at: records.at });
                    }
                    match varint_step(value, shift, byte) {
                        Some(Step::More(value, shift)) => {
                            records.state = State::NewSize { value, shift }
                        }
                        Some(Step::Done(value)) => {
                            records.new_size = value;
                            // An empty image's patch ends here: detools writes no stream.
                            records.state = if value == 0 {
                                State::Done
                            } else {
                                State::Heatshrink
                            };
                        }
                        None => return Err(PatchError::Size { at: records.at }),
                    }
                }
                State::Heatshrink => {
                    if byte != HEATSHRINK_HEADER {
                        return Err(PatchError::Heatshrink {
                            at: records.at,
                            window: (byte >> 4) + 4,
                            lookahead: (byte & 0x0f) + 3,
                        });
                    }
                    records.state = State::varint(Field::DataFormat);
                }
                State::Done if records.new_size == 0 => {
                    return Err(PatchError::Trailing { at: records.at });
                }
                _ => {
                    // The compressed stream: everything after the three bytes above.
                    let mut failed = None;
                    decoder.feed(
                        &[byte],
                        &mut |decoded| match records.decoded(decoded, base, out) {
                            Ok(()) => true,
                            Err(e) => {
                                failed = Some(e);
                                false
                            }
                        },
                    );
                    if let Some(error) = failed {
                        return Err(error);
                    }
                }
            }
            records.at += 1;
        }
        // A run waits for a full chunk; the end of the fed bytes is a boundary too.
        records.flush(base, out)
    }

    /// The patch has ended: the new image must be complete.
    pub fn finish(mut self, base: &mut dyn Base, out: &mut Out<'_>) -> Result<u64, PatchError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let records = &mut self.records;
        records.flush(base, out)?;
        // Complete: the last record read to its step, and nothing after but padding.
        match records.state {
            State::Done if records.new_size == 0 || self.decoder.at_end() => Ok(records.new_size),
            State::Done => Err(PatchError::Trailing { at: records.at }),
            _ => Err(PatchError::Truncated {
                at: records.at,
                missing: records.new_size.saturating_sub(records.written),
            }),
        }
    }
}

impl State {
    fn varint(field: Field) -> State {
        State::Varint {
            field,
            value: 0,
            shift: 0,
            negative: false,
        }
    }
}

impl Records {
    /// One decompressed byte.
    fn decoded(
        &mut self,
        byte: u8,
        base: &mut dyn Base,
        out: &mut Out<'_>,
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
            State::Diff { left } | State::Extra { left } => {
                self.pending[self.pending_len] = byte;
                self.pending_len += 1;
                let run_ends = left == 1;
                if self.pending_len == CHUNK || run_ends {
                    self.flush(base, out)?;
                }
                self.state = match (self.state, run_ends) {
                    (State::Diff { .. }, true) => State::varint(Field::Extra),
                    (State::Extra { .. }, true) => State::varint(Field::Adjust),
                    (State::Diff { .. }, false) => State::Diff { left: left - 1 },
                    _ => State::Extra { left: left - 1 },
                };
                Ok(())
            }
            State::Done => Err(PatchError::Trailing { at: self.at }),
            State::Header | State::NewSize { .. } | State::Heatshrink | State::Failed => Ok(()),
        }
    }

    fn field_read(&mut self, field: Field, value: u64, negative: bool) -> Result<(), PatchError> {
        let room = self.new_size - self.written - self.pending_len as u64;
        self.state = match field {
            Field::DataFormat if value != 0 => return Err(PatchError::DataFormat { at: self.at }),
            Field::DataFormat => self.record_start(),
            Field::Diff | Field::Extra if negative || value > room => {
                return Err(PatchError::TooLong {
                    at: self.at,
                    size: self.new_size,
                });
            }
            Field::Diff if value == 0 => State::varint(Field::Extra),
            Field::Diff => State::Diff { left: value },
            Field::Extra if value == 0 => State::varint(Field::Adjust),
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
        if self.written + self.pending_len as u64 >= self.new_size {
            State::Done
        } else {
            State::varint(Field::Diff)
        }
    }

    /// Writes the pending bytes of the current run: diff bytes added to as many of the
    /// old image's, extra bytes as they are.
    fn flush(&mut self, base: &mut dyn Base, out: &mut Out<'_>) -> Result<(), PatchError> {
        let n = self.pending_len;
        if n == 0 {
            return Ok(());
        }
        if matches!(self.state, State::Diff { .. }) {
            let len = base.size();
            let end = self.from + n as i128;
            if self.from < 0 || end > i128::from(len) {
                let offset = if self.from < 0 { self.from } else { end };
                return Err(PatchError::OutsideBase {
                    at: self.at,
                    offset,
                    len,
                });
            }
            let mut old = [0u8; CHUNK];
            base.read_at(self.from as u64, &mut old[..n])
                .map_err(|why| PatchError::Base { at: self.at, why })?;
            for (new, old) in self.pending[..n].iter_mut().zip(&old[..n]) {
                *new = new.wrapping_add(*old);
            }
            self.from = end;
        }
        self.pending_len = 0;
        out(&self.pending[..n]).map_err(|why| PatchError::Out { at: self.at, why })?;
        self.written += n as u64;
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
