//! The engine's view of the world: small traits that the firmware (ESP-IDF), the host
//! simulator and the tests' in-memory fakes each implement.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

/// How long a request may take to connect, to deliver each next chunk, and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    /// The whole request, body included: a source that trickles bytes just inside the
    /// read timeout must not hold the one update a device runs for hours.
    pub request: Duration,
    /// How long the preferred source has to deliver the manifest before the other one
    /// is asked: a silent source costs this, not the read timeout. One cut off by it is
    /// asked again with the full timeouts when the other offers no update, so a slow
    /// source never hides a newer release. Too short, and a device whose TLS handshake
    /// takes longer (about a second on the chip) asks its second source first every time.
    pub first_answer: Duration,
}

/// Where a device keeps its own first-answer deadline: milliseconds, as text.
pub const FIRST_ANSWER_KEY: &str = "ota_first_ms";
/// The shortest first-answer deadline a device takes: below it even a healthy source
/// on a good link rarely answers, and every check would go to the other source.
pub const MIN_FIRST_ANSWER: Duration = Duration::from_millis(200);

/// Why the stored first-answer deadline is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirstAnswerError {
    #[error("{FIRST_ANSWER_KEY} is not a whole number of milliseconds")]
    NotANumber,
    #[error(
        "{FIRST_ANSWER_KEY} is {0} ms: give {min} to {max} ms (the read timeout)",
        min = MIN_FIRST_ANSWER.as_millis(),
        max = Timeouts::default().read.as_millis()
    )]
    OutOfRange(u64),
}

impl Timeouts {
    /// The defaults, with the first-answer deadline the store sets under
    /// [`FIRST_ANSWER_KEY`] (from [`MIN_FIRST_ANSWER`] to the read timeout): a device
    /// whose TLS handshake to its preferred source takes longer than the default needs
    /// more, or it asks the other source first on every check. An unusable value keeps
    /// the default and says why.
    pub fn configured(store: &dyn Store) -> (Timeouts, Option<FirstAnswerError>) {
        let defaults = Timeouts::default();
        let Some(bytes) = store.get(FIRST_ANSWER_KEY) else {
            return (defaults, None);
        };
        let millis = core::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or(FirstAnswerError::NotANumber);
        let deadline = millis.and_then(|ms| {
            let deadline = Duration::from_millis(ms);
            (MIN_FIRST_ANSWER..=defaults.read)
                .contains(&deadline)
                .then_some(deadline)
                .ok_or(FirstAnswerError::OutOfRange(ms))
        });
        match deadline {
            Ok(first_answer) => (
                Timeouts {
                    first_answer,
                    ..defaults
                },
                None,
            ),
            Err(why) => (defaults, Some(why)),
        }
    }

    /// These timeouts, the whole request cut to `deadline`.
    pub fn within(self, deadline: Duration) -> Timeouts {
        Timeouts {
            connect: self.connect.min(deadline),
            read: self.read.min(deadline),
            request: self.request.min(deadline),
            ..self
        }
    }
}

impl Default for Timeouts {
    /// Short: a dead source must cost seconds, not the fleet's old 10 s plus retry.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(5),
            // A 3 MiB image at a poor 20 KiB/s still arrives within this.
            request: Duration::from_secs(300),
            first_answer: Duration::from_millis(1200),
        }
    }
}

/// The `Content-Range: bytes start-end/total` of a 206 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parses `bytes 100-199/1000` (or `/*`).
    pub fn parse(header: &str) -> Option<ContentRange> {
        let spec = header.trim().strip_prefix("bytes ")?;
        let (range, total) = spec.split_once('/')?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
        let total = match total.trim() {
            "*" => None,
            n => Some(n.parse().ok()?),
        };
        (start <= end).then_some(ContentRange { start, end, total })
    }
}

/// Why a request failed before it produced a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The connection could not be made (refused, unreachable, DNS).
    Connect(String),
    /// No answer, or no next chunk, in time.
    Timeout,
    /// The connection broke while reading.
    Io(String),
}

/// An answer whose body is read chunk by chunk.
pub trait Response {
    fn status(&self) -> u16;
    fn content_length(&self) -> Option<u64>;
    fn content_range(&self) -> Option<ContentRange>;
    /// Fills `buf` from the body; `Ok(0)` at its end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError>;
}

/// HTTP GET, optionally from a byte offset (`Range: bytes=N-`).
pub trait Http {
    fn get(
        &mut self,
        url: &str,
        from: Option<u64>,
        timeouts: Timeouts,
    ) -> Result<alloc::boxed::Box<dyn Response + '_>, HttpError>;
}

/// Why the flash refused an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotError(pub String);

/// The image the device runs, as a patch's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningImage {
    /// Its appended digest (`esp_partition_get_sha256()` of the running slot): which
    /// patch applies to it.
    pub digest: crate::Sha256,
    /// Its length in bytes: where a patch may read.
    pub len: u64,
}

impl RunningImage {
    /// The image `info` describes, as a patch's base: it must append its digest, which
    /// is what names it.
    pub fn of(info: &crate::image::ImageInfo) -> Result<RunningImage, SlotError> {
        let digest = info
            .appended_sha256
            .ok_or_else(|| SlotError("the running image has no appended digest".into()))?;
        Ok(RunningImage {
            digest,
            len: info.len,
        })
    }
}

/// The OTA slots of the flash.
pub trait Slots {
    /// Starts writing the inactive slot for an image of `size` bytes (erasing it).
    fn begin(&mut self, size: u64) -> Result<(), SlotError>;
    /// Writes the next bytes of the image at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SlotError>;
    /// Ends a write that will not be used: the running slot stays as it is.
    fn abort(&mut self);
    /// Makes the written slot the one the bootloader starts next, on probation.
    fn set_boot(&mut self) -> Result<(), SlotError>;
    /// The running image's digest and length (`esp_ota_get_running_partition`,
    /// `esp_partition_get_sha256`, `esp_image_get_metadata`).
    fn running_image(&mut self) -> Result<RunningImage, SlotError>;
    /// Reads the running image from `offset` (`esp_partition_read`): a patch's base.
    /// The running slot is only ever read, so a power cut mid-patch leaves it whole.
    fn read_running(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SlotError>;
}

/// A small persistent key-value store (NVS on the chip).
pub trait Store {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&mut self, key: &str, value: &[u8]);
}
