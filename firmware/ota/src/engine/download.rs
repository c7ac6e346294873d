//! One file fetched across both sources: failover, Range resume at the exact byte, and a
//! start over when the sources turn out to serve different bytes. Where the bytes go is
//! the [`Sink`]'s: the image straight into the inactive slot, or a patch through the
//! applier ([`super::patching`]).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::ports::{Http, Slots};
use super::{Attempt, CHUNK, Config, Control, Failure, Progress, Source, UpdateError};
use crate::image::ImageReader;
use crate::manifest::Trusted;

/// Where a download's bytes go, and what "whole and right" means for them.
pub(super) trait Sink {
    /// Starts (or starts over) the inactive slot and forgets every byte taken so far.
    fn begin(&mut self, slots: &mut dyn Slots) -> Result<(), UpdateError>;
    /// The file's next bytes, in order. `Err(UpdateError::Verify)` blames the source.
    fn take(&mut self, slots: &mut dyn Slots, chunk: &[u8]) -> Result<(), UpdateError>;
    /// The whole file has arrived; `Err(UpdateError::Verify)` says why the slot does not
    /// hold the promised image (the source's fault), any other error is not the source's.
    fn verify(&mut self, slots: &mut dyn Slots) -> Result<(), UpdateError>;
}

/// One file, across sources.
pub(super) struct Download<'a, S: Sink> {
    config: &'a Config,
    /// What the attempts call this file: `image` or `patch`.
    what: &'static str,
    file: &'a str,
    size: u64,
    first: Source,
    pub(super) sink: S,
    offset: u64,
    /// Every source the bytes came from, in order.
    pub(super) used: Vec<Source>,
    pub(super) attempts: Vec<Attempt>,
}

/// How a single request's stream ended.
enum Stream {
    Complete,
    /// It broke at the current offset: another request may resume.
    Broken(Failure),
}

impl<'a, S: Sink> Download<'a, S> {
    pub(super) fn new(
        config: &'a Config,
        what: &'static str,
        file: &'a str,
        size: u64,
        first: Source,
        sink: S,
    ) -> Download<'a, S> {
        Download {
            config,
            what,
            file,
            size,
            first,
            sink,
            offset: 0,
            used: Vec::new(),
            attempts: Vec::new(),
        }
    }

    /// Fetches the file into the sink. If the source dies mid-way the download goes on
    /// from the other source at the same offset (a 206 with a matching Content-Range),
    /// or starts over from 0. A file that fails any check is fetched again, whole, from
    /// the other source; it fails only when both sources served bad bytes (with both
    /// reasons) or neither delivered.
    pub(super) fn run(
        &mut self,
        http: &mut dyn Http,
        slots: &mut dyn Slots,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<(), UpdateError> {
        self.sink.begin(slots)?;
        // Bounded: a source gets two tries whose connection fails, and none more once
        // bytes it served did not verify.
        let mut broken = [0u8; 2];
        let mut bad: [Option<String>; 2] = [None, None];
        let index = |source: Source| source as usize;
        let mut started_over = false;
        let mut source = self.first;
        loop {
            let refused = match self.fetch(http, slots, source, control, progress) {
                Ok(Stream::Broken(failure)) => {
                    self.attempt(source, Some(failure));
                    broken[index(source)] += 1;
                    None
                }
                Ok(Stream::Complete) => match self.sink.verify(slots) {
                    Ok(()) => return Ok(()),
                    Err(UpdateError::Verify(why)) => Some(why),
                    Err(other) => return Err(other),
                },
                Err(UpdateError::Verify(why)) => Some(why),
                Err(other) => return Err(other),
            };
            let start_over = refused.is_some();
            if let Some(why) = refused {
                let failure = if self.used.len() > 1 && !started_over {
                    // Resumed across sources that do not serve the same bytes (a CDN
                    // still on another build): neither is to blame yet; start over once.
                    started_over = true;
                    Failure::Mixed(why)
                } else {
                    bad[index(source)] = Some(why.clone());
                    Failure::BadImage(why)
                };
                self.attempt(source, Some(failure));
            }
            let usable = |s: Source| bad[index(s)].is_none() && broken[index(s)] < 2;
            source = match (usable(source.other()), usable(source)) {
                (true, _) => source.other(),
                (false, true) => source,
                (false, false) => break,
            };
            // Erased again only when another attempt follows: an erase costs seconds.
            if start_over {
                self.restart(slots)?;
            }
        }
        if let [Some(github), Some(r2)] = &bad {
            return Err(UpdateError::Verify(format!(
                "{}: {github}; {}: {r2}",
                Source::Github.name(),
                Source::R2.name()
            )));
        }
        Err(UpdateError::Download {
            attempts: self.attempts.clone(),
        })
    }

    fn attempt(&mut self, source: Source, failure: Option<Failure>) {
        self.attempts.push(Attempt {
            source,
            what: self.what,
            failure,
        });
    }

    /// One request to `source`, from the current offset.
    fn fetch(
        &mut self,
        http: &mut dyn Http,
        slots: &mut dyn Slots,
        source: Source,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<Stream, UpdateError> {
        let url = format!("{}{}", self.config.sources.base(source), self.file);
        let from = (self.offset > 0).then_some(self.offset);
        let mut response = match http.get(&url, from, self.config.timeouts) {
            Ok(response) => response,
            Err(e) => return Ok(Stream::Broken(e.into())),
        };
        match (response.status(), from) {
            (200, _) => {
                if self.offset > 0 {
                    // The source ignored the Range: start over, as it sends from byte 0.
                    self.restart(slots)?;
                }
            }
            (206, Some(offset)) => {
                let range = response.content_range();
                let matches = range
                    .is_some_and(|r| r.start == offset && r.total.is_none_or(|t| t == self.size));
                if !matches {
                    return Ok(Stream::Broken(Failure::BadRange(format!(
                        "Content-Range {range:?} does not continue at {offset}"
                    ))));
                }
            }
            (status, _) => return Ok(Stream::Broken(Failure::Status(status))),
        }
        if !self.used.contains(&source) {
            self.used.push(source);
        }
        let mut buf = [0u8; CHUNK];
        loop {
            if control.cancel.load(Ordering::SeqCst) {
                return Err(UpdateError::Cancelled);
            }
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                // A connection that breaks after the last byte delivered everything.
                Err(_) if self.offset == self.size => break,
                Err(e) => return Ok(Stream::Broken(e.into())),
            };
            if self.offset + n as u64 > self.size {
                return Err(UpdateError::Verify(format!(
                    "the {} is longer than the manifest's {} bytes",
                    self.what, self.size
                )));
            }
            self.sink.take(slots, &buf[..n])?;
            self.offset += n as u64;
            progress.bytes(self.offset, self.size);
        }
        if self.offset == self.size {
            Ok(Stream::Complete)
        } else {
            Ok(Stream::Broken(Failure::Io(format!(
                "the body ended at {} of {} bytes",
                self.offset, self.size
            ))))
        }
    }

    /// Starts the file over from byte 0: no byte written so far counts, nor who sent it.
    fn restart(&mut self, slots: &mut dyn Slots) -> Result<(), UpdateError> {
        slots.abort();
        self.sink.begin(slots)?;
        self.offset = 0;
        self.used.clear();
        Ok(())
    }
}

/// The new image, written into the inactive slot in order and checked as it arrives.
pub(super) struct IntoSlot<'a> {
    config: &'a Config,
    manifest: &'a Trusted,
    reader: ImageReader,
    written: u64,
}

impl<'a> IntoSlot<'a> {
    pub(super) fn new(config: &'a Config, manifest: &'a Trusted) -> IntoSlot<'a> {
        IntoSlot {
            config,
            manifest,
            reader: ImageReader::new(),
            written: 0,
        }
    }
}

impl Sink for IntoSlot<'_> {
    fn begin(&mut self, slots: &mut dyn Slots) -> Result<(), UpdateError> {
        slots
            .begin(self.manifest.firmware_size)
            .map_err(UpdateError::Flash)?;
        let reader = ImageReader::new()
            .expect_chip(self.config.running.chip)
            .expect_len(self.manifest.firmware_size);
        self.reader = match self.config.running.chip_revision {
            Some(revision) => reader.expect_chip_revision(revision),
            None => reader,
        };
        self.written = 0;
        Ok(())
    }

    fn take(&mut self, slots: &mut dyn Slots, chunk: &[u8]) -> Result<(), UpdateError> {
        self.reader
            .feed(chunk)
            .map_err(|e| UpdateError::Verify(e.to_string()))?;
        // A wrong version is refused as soon as the app descriptor has arrived.
        if let Some(descriptor) = self.reader.descriptor() {
            self.manifest
                .check_descriptor(descriptor)
                .map_err(|e| UpdateError::Verify(e.to_string()))?;
        }
        slots
            .write(self.written, chunk)
            .map_err(UpdateError::Flash)?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Everything the boot slot may change on: size, SHA-256 of the file, chip, version.
    fn verify(&mut self, _: &mut dyn Slots) -> Result<(), UpdateError> {
        let reader = core::mem::take(&mut self.reader);
        let verify = |why: String| UpdateError::Verify(why);
        let info = reader.finish().map_err(|e| verify(e.to_string()))?;
        self.manifest
            .check_image(&info)
            .map_err(|e| verify(e.to_string()))
    }
}
